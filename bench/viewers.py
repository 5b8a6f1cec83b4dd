#!/usr/bin/env python3
"""Live log viewers: what N open `GET /api/v1/queues/{id}/log/stream` cost the database.

    bench/viewers.py --bin target/debug/testarena [--viewers 100] [--seconds 10] [--json FILE]

Runs `testarena serve` and `testarena worker` as two processes on one scratch data directory
(so the server's database work is its own), submits one queue whose build prints a line every
50 ms (no emulator needed: the queue stays `running` in its build and its log grows), then
counts the SQL statements the *server* runs per second, first with no viewer and then with N
SSE viewers reading that queue's log. Statements are counted from sqlx's own statement log
(`TESTARENA_LOG=warn,sqlx::query=debug`, one `sqlx::query` line per statement), which every
version of the binary writes, so the figure of an older binary is measured the same way; when
the binary exports `testarena_store_operations` on /metrics, that rate is reported too.

Python standard library only. Prints one JSON object (and writes it to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

TOML = """\
# Written by bench/viewers.py: a build that prints a line every 50 ms for a few minutes, so the
# queue stays running with a growing log.
[build]
command = "i=0; while [ $i -lt 6000 ]; do echo build line $i; i=$((i+1)); sleep 0.05; done"
timeout = "10m"
"""


def sh(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "testarena.toml").write_text(TOML)
    (repo / "smoke.xml").write_text("<scenario name='never reached'/>\n")
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", ".", cwd=repo)
    sh("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
       "commit", "-q", "-m", "bench", cwd=repo)
    return repo


def spawn(argv: list, log: Path, env: dict) -> subprocess.Popen:
    with open(log, "ab") as err:
        return subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=err,
                                env=env, start_new_session=True)


def listening(proc: subprocess.Popen, log: Path) -> str:
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if line.startswith("testarena listening on "):
            threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
            return line.removeprefix("testarena listening on ").strip()
        if not line and proc.poll() is not None:
            break
    raise SystemExit(f"serve did not start; its log ends:\n{log.read_text()[-2000:]}")


def api(base: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
    return json.loads(text) if text.strip().startswith(b"{") else text.decode()


def statements(log: Path) -> int:
    """SQL statements the server ran so far: sqlx logs one `sqlx::query` event per statement."""
    with open(log, "rb") as f:
        return sum(1 for line in f if b"sqlx::query" in line)


def operations(base: str) -> int | None:
    text = api(base, "GET", "/metrics")
    m = re.search(r"^testarena_store_operations (\d+)", text, re.M)
    return int(m.group(1)) if m else None


class Viewer(threading.Thread):
    """One SSE client reading a log stream until told to stop."""

    def __init__(self, host: str, port: int, path: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.host, self.port, self.path, self.stop = host, port, path, stop
        self.bytes = 0
        self.connected = threading.Event()

    def run(self) -> None:
        s = socket.create_connection((self.host, self.port))
        s.settimeout(0.5)
        s.sendall(f"GET {self.path} HTTP/1.1\r\nhost: {self.host}\r\n"
                  f"accept: text/event-stream\r\n\r\n".encode())
        while not self.stop.is_set():
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            self.bytes += len(chunk)
            self.connected.set()
        s.close()


def window(base: str, log: Path, seconds: float) -> dict:
    s0, o0, t0 = statements(log), operations(base), time.time()
    time.sleep(seconds)
    s1, o1, t1 = statements(log), operations(base), time.time()
    out = {"statements_per_s": round((s1 - s0) / (t1 - t0), 1)}
    if o0 is not None and o1 is not None:
        # Less the /metrics requests' own operations (two per request: counts and workers).
        out["store_operations_per_s"] = round((o1 - o0 - 2) / (t1 - t0), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, type=Path)
    ap.add_argument("--viewers", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    scratch_parent = Path(os.environ.get("BENCH_TMPDIR", Path(__file__).parent / "out"))
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="viewers.", dir=scratch_parent))
    procs: list[subprocess.Popen] = []
    try:
        repo = make_repo(scratch)
        data = scratch / "data"
        data.mkdir()
        config = scratch / "config.toml"
        config.write_text("# empty: built-in defaults only\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESTARENA_")}
        common = ["--config", config, "--data-dir", data]
        repos = ["--allow-local-repos", scratch.resolve()]
        serve_log = scratch / "serve.log"
        serve = spawn([args.bin, *common, "serve", *repos, "--listen", "127.0.0.1:0"], serve_log,
                      {**env, "TESTARENA_LOG": "warn,sqlx::query=debug"})
        procs.append(serve)
        base = listening(serve, serve_log)
        procs.append(spawn([args.bin, *common, "worker", *repos], scratch / "worker.log", env))
        queue = api(base, "POST", "/api/v1/queues",
                    {"repo": str(repo.resolve()), "branch": "main", "scenarios": ["smoke.xml"]})
        qid = queue["id"]
        deadline = time.time() + 60
        while True:
            q = api(base, "GET", f"/api/v1/queues/{qid}")
            log = api(base, "GET", f"/api/v1/queues/{qid}/log")
            if q["status"] == "running" and "build line" in log:
                break
            if time.time() > deadline or q["status"] not in ("waiting", "running"):
                raise SystemExit(f"the queue did not start building: {q}")
            time.sleep(0.2)
        idle = window(base, serve_log, args.seconds)
        host, port = base.removeprefix("http://").rsplit(":", 1)
        stop = threading.Event()
        viewers = [Viewer(host, int(port), f"/api/v1/queues/{qid}/log/stream", stop)
                   for _ in range(args.viewers)]
        for v in viewers:
            v.start()
        for v in viewers:
            if not v.connected.wait(30):
                raise SystemExit("a viewer got nothing within 30 s")
        time.sleep(1.0)
        watched = window(base, serve_log, args.seconds)
        stop.set()
        status = api(base, "GET", f"/api/v1/queues/{qid}")["status"]
        api(base, "POST", f"/api/v1/queues/{qid}/abort", {})
        result = {
            "binary": str(args.bin),
            "viewers": args.viewers,
            "window_s": args.seconds,
            "queue_status_during": status,
            "idle": idle,
            "with_viewers": watched,
            "per_viewer_statements_per_s": round(
                (watched["statements_per_s"] - idle["statements_per_s"]) / args.viewers, 2),
            "bytes_per_viewer": sum(v.bytes for v in viewers) // max(1, len(viewers)),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if args.keep:
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
