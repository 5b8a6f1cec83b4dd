#!/usr/bin/env python3
"""TestArena benchmarks. Run through `bench/run` (which builds the binaries and cleans up).

    python3 bench/bench.py --bin target/release/testarena --fw FW_ELF --work DIR [--tiny]
                           [--out FILE] [--only N,N] [--skip N,N]

Each benchmark measures TestArena and, in the same run on the same machine, a plain baseline
(bench/baseline_*.{sh,py}, git, nginx) driving the same firmware in the same QEMU. Figures are
medians with min/max; the ratio to the baseline is what counts on a noisy machine. Writes the
report (markdown) to --out and the raw figures to --json. Exits 1 if a benchmark crashed, never
because a goal was missed.

Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # bench.py imports baseline_perboot; keep bench/ clean

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
FIRMWARE_SRC = ROOT / "examples" / "demo-firmware"

# The same QEMU command line as examples/demo-firmware/testarena.toml and the baseline scripts.
QEMU = "qemu-system-xtensa -M sim -cpu lx106 -semihosting -nographic -monitor none"
BENCH_TOML = f"""\
# Written by bench/bench.py. The firmware is prebuilt and committed, so the build step is a
# trivial check: the dispatch benchmark measures TestArena's own overhead, not the compiler.
[build]
command = "test -s build/fw.elf"
timeout = "1m"
[emulator]
command = "{QEMU} -kernel build/fw.elf"
console = "stdio"
ready = "^ready$"
boot_timeout = "30s"
firmware = "build/fw.elf"
[scenarios]
default = ["bench/dispatch.xml"]
"""

SIZES = {
    "full": {
        "spam_lines": 200_000,  # ~11 MB of console output per case
        "spam_cases": 2,
        "tp_rounds": 5,
        "raw_runs": 4,  # per round
        "pp_cases": 100,
        "pp_rounds": 10,
        "pp_base_runs": 2,  # per round
        "pb_cases": 100,
        "pb_rounds": 5,
        "pb_base_runs": 1,  # per round
        "py_runs": 10,
        "bare_steps_boots": 20,
        "dispatch_queues": 20,
        "clone_runs": 10,
        # A "vendored SDK": 600 generated files of ~12 KiB in 30 commits (~7 MiB of history).
        "ballast": (600, 12, 30),
        "api_queues": 100_000,  # benchmark 5, on SQLite and on PostgreSQL
        "api_posted": 3_000,  # of which made through the API (the rest inserted directly)
        "wrk_secs": 10,
        "wrk_conns": 50,
        "mem_lines": [200_000, 2_000_000, 18_000_000],  # ~11 MB, ~113 MB, ~1 GB of console
        "mem_log_cap": 4 << 30,  # --log-cap for benchmark 6: every byte of it is stored
        "dash_queues": 1_000,
        "dash_runs": 10,
        "dash_live_secs": 20,  # benchmark 7, live: seconds traced
        "dash_live_rate": 50,  # queues changing state per second through the API
        "dash_farm_rate": 2,  # queues per second the worker runs for real, on top
        "farm_queues": 400,  # benchmark 8: queues drained by 1, 2, 4 workers
        "farm_workers": [1, 2, 4],
        "slow_queues": 60,  # benchmark 8: queues of the 1-second emulator per row
        "wake_queues": 30,  # benchmark 8: queues submitted one at a time to idle workers
        "pg_tp_rounds": 5,  # benchmark 9
    },
    "tiny": {
        "spam_lines": 2_000,
        "spam_cases": 2,
        "tp_rounds": 1,
        "raw_runs": 2,
        "pp_cases": 5,
        "pp_rounds": 1,
        "pp_base_runs": 2,
        "pb_cases": 5,
        "pb_rounds": 1,
        "pb_base_runs": 1,
        "py_runs": 2,
        "bare_steps_boots": 2,
        "dispatch_queues": 2,
        "clone_runs": 2,
        "ballast": (10, 2, 2),
        "api_queues": 100,
        "api_posted": 40,
        "wrk_secs": 2,
        "wrk_conns": 10,
        "mem_lines": [2_000, 20_000],  # ~0.1 MB and ~1 MB
        "mem_log_cap": None,  # the default
        "dash_queues": 20,
        "dash_runs": 1,
        "dash_live_secs": 3,
        "dash_live_rate": 50,
        "dash_farm_rate": 1,
        "farm_queues": 10,
        "farm_workers": [1, 2],
        "slow_queues": 4,
        "wake_queues": 2,
        "pg_tp_rounds": 1,
    },
}

BENCHMARKS = {
    1: "Console throughput",
    2: "Ping/pong cases, one boot",
    3: "Ping/pong cases, boot per case",
    4: "Dispatch",
    5: "API under load",
    6: "Worker memory",
    7: "Dashboard: load and live updates",
    8: "Farm: claims and wake-up",
    9: "Console throughput on PostgreSQL",
    10: "Farm simulation",
    11: "Server memory, 100 live consoles",
}


class BenchError(Exception):
    """A benchmark could not run (not: it was slow)."""


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Small statistics and formatting helpers
# ---------------------------------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def stats(xs: list[float]) -> dict:
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "p95": pct(xs, 95),
        "values": xs,
    }


def fmt(s: dict, unit: str = "ms", digits: int = 0) -> str:
    m, lo, hi = (f"{s[k]:.{digits}f}" for k in ("median", "min", "max"))
    return f"{m} {unit} (min {lo}, max {hi}, n={s['n']})"


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def ms_between(a: str, b: str) -> float:
    return (parse_time(b) - parse_time(a)).total_seconds() * 1000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, **kw) -> str:
    """Runs a command, returns stdout; raises BenchError with stderr on failure."""
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(map(str, argv))} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def first_line(argv) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        out = (r.stdout or r.stderr).strip().splitlines()
        return out[0].strip() if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


# ---------------------------------------------------------------------------------------------
# Processes: everything started here gets its own process group, recorded in a pid file that
# bench/run reads to kill leftovers if this script dies.
# ---------------------------------------------------------------------------------------------


class Procs:
    def __init__(self, pidfile: Path):
        self.pidfile = pidfile
        self.items: list[subprocess.Popen] = []

    def spawn(self, argv, **kw) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen([str(a) for a in argv], **kw)
        self.items.append(p)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    @staticmethod
    def stop(p: subprocess.Popen, grace: float = 15.0, group_first: bool = False) -> None:
        """TERM (the process, or its group), wait `grace`, then KILL the group."""
        if p.poll() is None:
            try:
                if group_first:
                    os.killpg(p.pid, signal.SIGTERM)
                else:
                    p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for p in reversed(self.items):
            self.stop(p, grace=5)


def processes_under(d: Path) -> list[tuple[int, str]]:
    """Live processes whose working directory is inside `d` (e.g. a QEMU in a checkout)."""
    d = d.resolve()
    found = []
    for e in Path("/proc").iterdir():
        if not e.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(e / "cwd"))
            cmd = (e / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.strip() and (cwd == d or d in cwd.parents):
            found.append((int(e.name), cmd.strip()))
    return found


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) used so far by `pid` and its live child processes, in ms."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(p: str) -> tuple[int, float]:
        f = Path(f"/proc/{p}/stat").read_text()
        rest = f[f.rindex(")") + 2:].split()
        return int(rest[1]), (int(rest[11]) + int(rest[12])) * 1000.0 / tick

    total = 0.0
    for e in Path("/proc").iterdir():
        if not e.name.isdigit():
            continue
        try:
            ppid, ms = one(e.name)
        except (OSError, ValueError, IndexError):
            continue
        if int(e.name) == pid or ppid == pid:
            total += ms
    return total


# ---------------------------------------------------------------------------------------------
# The TestArena process and its API
# ---------------------------------------------------------------------------------------------

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Api:
    def __init__(self, base: str):
        self.base = base

    def request(self, method: str, path: str, body=None, timeout: float = 60):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with _no_proxy.open(req, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise BenchError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None

    def get(self, path: str):
        return json.loads(self.request("GET", path))

    def post(self, path: str, body):
        return json.loads(self.request("POST", path, body))


class TestArena:
    """`testarena up|serve` on a free loopback port with its own data directory."""

    def __init__(self, ctx: "Ctx", mode: str, data_dir: Path, extra=()):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        config = data_dir / "bench-config.toml"
        # Built-in defaults (/etc/testarena/config.toml is not read), but no build cache: every
        # queue builds, so the figures measure the same work as before the cache existed.
        config.write_text("build_cache_size = 0\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESTARENA_")}
        self.log_path = data_dir / "server.log"
        with open(self.log_path, "ab") as log:
            self.proc = ctx.procs.spawn(
                [ctx.bin, mode, "--config", config, "--data-dir", data_dir,
                 "--listen", "127.0.0.1:0", *extra],
                stdout=subprocess.PIPE, stderr=log, env=env)
        self.base = self._wait_listening()
        self.api = Api(self.base)
        self.ctx = ctx

    def _wait_listening(self) -> str:
        found: list[str] = []
        ready = threading.Event()

        def drain():
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").strip()
                if not found and line.startswith("testarena listening on "):
                    found.append(line.removeprefix("testarena listening on ").strip())
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or not found:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"testarena did not start listening; its log ends:\n{tail}")
        return found[0]

    def stop(self) -> None:
        Procs.stop(self.proc, grace=20)

    def vm(self) -> dict[str, int]:
        return proc_status(self.proc.pid)

    def submit(self, repo: str, scenarios=None, **extra) -> dict:
        body = {"repo": repo, "branch": "main", **extra}
        if scenarios:
            body["scenarios"] = scenarios
        return self.api.post("/api/v1/queues", body)

    def wait(self, qid: int, timeout: float = 1800, every: float = 0.1, on_poll=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            q = self.api.get(f"/api/v1/queues/{qid}")
            if q["status"] not in ("waiting", "running"):
                return q
            if time.monotonic() > deadline:
                raise BenchError(f"queue {qid} did not finish within {timeout:.0f}s: {q['status']}")
            if on_poll:
                on_poll()
            time.sleep(every)

    def run_queue(self, repo: str, scenarios=None, timeout: float = 1800, on_poll=None) -> dict:
        q = self.submit(repo, scenarios)
        q = self.wait(q["id"], timeout=timeout, on_poll=on_poll)
        if q["status"] != "passed":
            msgs = [f"{c['id']}: {c['status']}: {(c.get('message') or '')[:300]}"
                    for t in q["tasks"] for c in t["cases"] if c["status"] != "passed"]
            raise BenchError(f"queue {q['id']} ended {q['status']}: {q.get('error')}\n"
                             + "\n".join(msgs[:5]) + "\n" + self.log_tail(q["id"]))
        return q

    def queue_dir(self, qid: int) -> Path:
        """A local copy of the queue's files: its archive from the API, unpacked (the files
        live in the database, not in the data directory)."""
        dest = self.data_dir.parent / f"fetched-{self.data_dir.name}" / str(qid)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        tgz = dest.parent / f"{qid}.tar.gz"
        with _no_proxy.open(self.base + f"/api/v1/queues/{qid}/archive", timeout=600) as r, \
                open(tgz, "wb") as f:
            shutil.copyfileobj(r, f)
        subprocess.run(["tar", "-xzf", str(tgz), "-C", str(dest)], check=True)
        tgz.unlink()
        return dest / f"queue-{qid}"

    def log_tail(self, qid: int, n: int = 2000) -> str:
        try:
            return (self.queue_dir(qid) / "queue.log").read_text(errors="replace")[-n:]
        except (OSError, urllib.error.URLError, subprocess.CalledProcessError):
            return ""


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) ([#|]) ?(.*)$")


def read_log(path: Path) -> list[tuple[dt.datetime, str, str]]:
    """(time, '#' or '|', text) for each line of a queue.log."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            m = LOG_LINE.match(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            if m:
                out.append((parse_time(m.group(1)), m.group(2), m.group(3)))
    return out


def event_profile(lines, start: dt.datetime, end: dt.datetime) -> list[tuple[str, float, int]]:
    """Where the time went between `start` and `end`: each gap between two consecutive log lines
    is charged to the later line's kind ("console output", or the event text without numbers).
    Returns (kind, total ms, count), largest first."""
    acc: dict[str, list[float]] = {}
    prev = start
    booting = False
    for t, kind, text in lines:
        if t < start or t > end:
            continue
        if kind == "|" and booting:
            key = "first console line after `starting emulator` (QEMU boot)"
            booting = False
        elif kind == "|":
            key = "console output line (the firmware answering)"
        else:
            key = re.sub(r"\d+", "N", text.split(":")[0])[:50]
            booting = text.startswith("starting emulator")
        a = acc.setdefault(key, [0.0, 0])
        a[0] += (t - prev).total_seconds() * 1000
        a[1] += 1
        prev = t
    a = acc.setdefault("(after the last log line, until finished_at)", [0.0, 0])
    a[0] += (end - prev).total_seconds() * 1000
    a[1] += 1
    return sorted(((k, v[0], v[1]) for k, v in acc.items()), key=lambda x: -x[1])


# ---------------------------------------------------------------------------------------------
# Timing whole commands (hyperfine; a plain loop if it is missing) and HTTP load (wrk)
# ---------------------------------------------------------------------------------------------


def time_command(ctx: "Ctx", name: str, cmd: str, runs: int, prepare: str | None = None,
                 warmup: int = 1) -> dict:
    """Times a shell command `runs` times; returns stats in ms."""
    if shutil.which("hyperfine"):
        out = ctx.work / f"hyperfine-{name}.json"
        argv = ["hyperfine", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                "--export-json", str(out)]
        if prepare:
            argv += ["--prepare", prepare]
        run(argv + [cmd], cwd=ctx.work)
        times = json.loads(out.read_text())["results"][0]["times"]
        ctx.tools_used.add("hyperfine")
        return stats([t * 1000 for t in times])
    ctx.tools_used.add("python timer (hyperfine missing)")
    times = []
    for i in range(warmup + runs):
        if prepare:
            subprocess.run(prepare, shell=True, cwd=ctx.work, check=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, cwd=ctx.work, check=True, stdout=subprocess.DEVNULL)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return stats(times)


def wrk(ctx: "Ctx", url: str) -> dict:
    """Loads `url` with wrk; returns req/s, latency percentiles (ms) and error counts."""
    sz = ctx.size
    out = run(["wrk", "-t2", f"-c{sz['wrk_conns']}", f"-d{sz['wrk_secs']}s", "--timeout", "5s",
               "--latency", url], timeout=sz["wrk_secs"] + 60)

    def to_ms(v: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", v)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]

    res = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for p in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        res[f"p{p}"] = to_ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(map(int, m.groups())) if m else 0
    if res["requests"] == 0:
        raise BenchError(f"wrk made no request:\n{out}")
    return res


# ---------------------------------------------------------------------------------------------
# The bench repository (served by git daemon)
# ---------------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                "-c", "init.defaultBranch=main", *args], cwd=cwd)


def spam_xml(name: str, lines: int, cases: int) -> str:
    body = "".join(
        f'  <testcase id="TC_SPAM_{i + 1}" timeout="3000">\n'
        f"    <send>spam {lines}</send>\n"
        f'    <expect timeout="3000">^spam done$</expect>\n'
        f"  </testcase>\n" for i in range(cases))
    return f'<scenario name="{name}" timeout="7200">\n{body}</scenario>\n'


def pingpong_xml(name: str, cases: int, boot: str) -> str:
    body = "".join(
        f'  <testcase id="TC_PING_{i + 1:03d}" timeout="30">\n'
        f"    <send>ping</send>\n"
        f'    <expect timeout="10">^pong$</expect>\n'
        f"  </testcase>\n" for i in range(cases))
    return f'<scenario name="{name}" timeout="3600" boot="{boot}">\n{body}</scenario>\n'


def write_ballast(work: Path, files: int, kib: int, commits: int) -> None:
    """Generated C tables under vendor/, added over `commits` commits (later commits also rewrite
    some earlier files, so the history is larger than the checkout)."""
    rnd = random.Random(42)
    vendor = work / "vendor"
    vendor.mkdir(exist_ok=True)
    per_commit = max(1, files // commits)
    for c in range(commits):
        idx = list(range(c * per_commit, min(files, (c + 1) * per_commit)))
        if c:
            idx += rnd.sample(range(c * per_commit), min(per_commit // 4, c * per_commit))
        for i in idx:
            words = []
            while len(words) * 12 < kib * 1024:
                words.append(f"0x{rnd.getrandbits(32):08x},")
            rows = [" ".join(words[j:j + 8]) for j in range(0, len(words), 8)]
            (vendor / f"table_{i:04d}.c").write_text(
                f"/* generated table {i}, revision {c} */\n"
                f"const unsigned int table_{i}[] = {{\n    " + "\n    ".join(rows) + "\n};\n")
        git(work, "add", "-A")
        git(work, "commit", "-qm", f"vendor: tables, revision {c}")


def make_repo(ctx: "Ctx", name: str, ballast=None) -> str:
    """A copy of the demo firmware with the prebuilt fw.elf, BENCH_TOML and the benchmark
    scenarios, committed and served by the git daemon; returns its git:// URL."""
    sz = ctx.size
    work = ctx.work / "src" / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(FIRMWARE_SRC / "src", work / "src")
    for f in ("Makefile", "README.md"):
        if (FIRMWARE_SRC / f).exists():
            shutil.copy(FIRMWARE_SRC / f, work / f)
    (work / "build").mkdir()
    shutil.copy(ctx.fw, work / "build" / "fw.elf")
    (work / "testarena.toml").write_text(BENCH_TOML)
    sc = work / "bench"
    sc.mkdir()
    (sc / "throughput.xml").write_text(spam_xml("throughput", sz["spam_lines"], sz["spam_cases"]))
    (sc / "pingpong.xml").write_text(pingpong_xml("pingpong", sz["pp_cases"], "once"))
    (sc / "perboot.xml").write_text(pingpong_xml("perboot", sz["pb_cases"], "per-case"))
    (sc / "dispatch.xml").write_text(pingpong_xml("dispatch", 1, "once"))
    for n in sz["mem_lines"]:
        (sc / f"mem_{n}.xml").write_text(spam_xml(f"memory {n}", n, 1))
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A", "-f")
    git(work, "commit", "-qm", "bench firmware")
    if ballast:
        write_ballast(work, *ballast)
    served = ctx.work / "served"
    served.mkdir(exist_ok=True)
    if (served / f"{name}.git").exists():
        shutil.rmtree(served / f"{name}.git")
    git(served, "clone", "-q", "--bare", str(work), f"{name}.git")
    return f"git://127.0.0.1:{ctx.git_port}/{name}.git"


def start_git_daemon(ctx: "Ctx") -> None:
    served = ctx.work / "served"
    served.mkdir(exist_ok=True)
    ctx.git_port = free_port()
    p = ctx.procs.spawn(["git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                         f"--port={ctx.git_port}", f"--base-path={served}", served],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", ctx.git_port), timeout=1).close()
            return
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                raise BenchError("git daemon did not start") from None
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The benchmarks
# ---------------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, args):
        self.tiny = args.tiny
        self.size = SIZES["tiny" if args.tiny else "full"]
        self.bin = Path(args.bin).resolve()
        self.fw = Path(args.fw).resolve()
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs = Procs(self.work / "pids")
        self.tools_used: set[str] = set()
        self.git_port = 0
        self.main: TestArena | None = None
        self.repo = ""
        self.big_repo = ""
        self.python_start: dict | None = None

    def main_server(self) -> TestArena:
        """The `testarena up` shared by benchmarks 1 to 4 (bench repos created on first use)."""
        if self.main is None:
            if not self.git_port:
                start_git_daemon(self)
            self.repo = make_repo(self, "bench")
            self.main = TestArena(self, "up", self.work / "data-main")
        return self.main


def result(num, figure, baseline, ratio_, goal, met, details, raw) -> dict:
    return {"num": num, "name": BENCHMARKS[num], "figure": figure, "baseline": baseline,
            "ratio": ratio_, "goal": goal, "met": met, "details": details, "raw": raw}


def profile_table(title: str, prof, total: float, top: int = 8) -> list[str]:
    out = [f"{title}", "", "| time before this log line | total ms | share | count |",
           "|---|---:|---:|---:|"]
    for k, ms, n in prof[:top]:
        share = f"{100 * ms / total:.0f}%" if total else "-"
        out.append(f"| {k} | {ms:.0f} | {share} | {n} |")
    return out + [""]


SEGMENTS = [
    ("boot", "QEMU boot: `# starting emulator` → first console line"),
    ("ready", "first console line → `# emulator ready`"),
    ("first_case", "`# emulator ready` → `# case … started`"),
    ("between", "previous `# case … passed` → `# case … started` (same boot)"),
    ("run", "case: `# case … started` → `# case … passed` (send, expect)"),
    ("stop", "stop: `# case … passed` → `# emulator stopped`"),
    ("restart", "`# emulator stopped` → next `# starting emulator`"),
]


def case_segments(lines) -> dict[str, list[float]]:
    """Durations (ms) of the steps around each case, from queue.log event lines."""
    segs: dict[str, list[float]] = {k: [] for k, _ in SEGMENTS}
    last_kind, last_t, t_start, t_first, t_case = None, None, None, None, None
    ms = lambda a, b: (b - a).total_seconds() * 1000  # noqa: E731
    for t, kind, text in lines:
        if kind == "|":
            if t_start is not None and t_first is None:
                t_first = t
                segs["boot"].append(ms(t_start, t))
            continue
        if text.startswith("starting emulator"):
            if last_kind == "stopped":
                segs["restart"].append(ms(last_t, t))
            t_start, t_first, k = t, None, "start"
        elif text.startswith("emulator ready") and t_first is not None:
            segs["ready"].append(ms(t_first, t))
            k = "ready"
        elif re.match(r"case \S+ .*started", text):
            if last_kind == "ready":
                segs["first_case"].append(ms(last_t, t))
            elif last_kind == "passed":
                segs["between"].append(ms(last_t, t))
            t_case, k = t, "case"
        elif re.match(r"case \S+ (passed|failed|error)", text) and t_case is not None:
            segs["run"].append(ms(t_case, t))
            k = "passed"
        elif text.startswith("emulator stopped"):
            if last_kind == "passed":
                segs["stop"].append(ms(last_t, t))
            k = "stopped"
        else:
            continue
        last_kind, last_t = k, t
    return segs


def segment_table(segs: dict[str, list[float]], queues: int) -> list[str]:
    out = ["| step | n | median ms | p95 ms | total per queue ms |", "|---|---:|---:|---:|---:|"]
    for k, label in SEGMENTS:
        xs = segs.get(k) or []
        if xs:
            out.append(f"| {label} | {len(xs)} | {statistics.median(xs):.1f} | "
                       f"{pct(xs, 95):.1f} | {sum(xs) / queues:.0f} |")
    return out + [""]


def bench_throughput(ctx: Ctx) -> dict:
    sz = ctx.size
    ta = ctx.main_server()
    n = sz["spam_lines"]
    fw = shlex.quote(str(ctx.fw))
    script = shlex.quote(str(BENCH_DIR / "baseline_throughput.sh"))
    bytes_spam = int(run([BENCH_DIR / "baseline_throughput.sh", ctx.fw, str(n)]).strip())
    bytes_boot = int(run([BENCH_DIR / "baseline_throughput.sh", ctx.fw, "0"]).strip())
    out_bytes = bytes_spam - bytes_boot
    durs, raw_t, boot_t, cpus, gaps, queues = [], [], [], [], [], []
    rounds = sz["tp_rounds"]
    for i in range(rounds):
        say(f"1: throughput: round {i + 1}/{rounds}: {sz['spam_cases']} cases of 'spam {n}' in "
            "TestArena, then the raw pipe (hyperfine)")
        cpu0 = cpu_ms(ta.proc.pid)
        q = ta.run_queue(ctx.repo, ["bench/throughput.xml"])
        cpus.append(cpu_ms(ta.proc.pid) - cpu0)
        queues.append(q["id"])
        durs += [float(c["duration_ms"]) for t in q["tasks"] for c in t["cases"]]
        gaps += case_segments(read_log(ta.queue_dir(q["id"]) / "queue.log"))["between"]
        w = 1 if i == 0 else 0
        raw_t += time_command(ctx, "raw-spam", f"{script} {fw} {n}", sz["raw_runs"], warmup=w)["values"]
        boot_t += time_command(ctx, "raw-boot", f"{script} {fw} 0", sz["raw_runs"], warmup=w)["values"]
    ta_s, raw, boot = stats(durs), stats(raw_t), stats(boot_t)
    cpu = statistics.median(cpus) / sz["spam_cases"]
    qdir = ta.queue_dir(queues[-1])
    raw_stream = raw["median"] - boot["median"]
    if raw_stream < max(1.0, 0.05 * raw["median"]):
        # Only in --tiny mode: the output is too small to time against the boot's noise.
        raw_stream = float("nan")
    mbps = lambda ms: out_bytes / 1e6 / (ms / 1000) if ms else float("inf")  # noqa: E731
    r = None if math.isnan(raw_stream) else ratio(raw_stream, ta_s["median"])
    files = sorted(str(p.relative_to(qdir)) for p in qdir.rglob("*")
                   if p.is_file() and "work" not in p.relative_to(qdir).parts)
    details = [
        f"Output per case: {out_bytes / 1e6:.1f} MB (`spam {n}`, {n} lines), measured with "
        f"`wc -c`. {rounds} rounds, each: one queue of {sz['spam_cases']} such cases (one boot), "
        f"then {sz['raw_runs']} raw runs and {sz['raw_runs']} boot-only runs, so both sides see "
        "the same moments of the machine's load.",
        f"- TestArena: case `duration_ms` {fmt(ta_s)} → **{mbps(ta_s['median']):.1f} MB/s**.",
        f"- Raw `printf 'spam {n}\\nexit 0\\n' | qemu … | wc -c`: {fmt(raw)}; boot and exit "
        f"alone (`exit 0`): {fmt(boot)}; streaming = difference of medians = {raw_stream:.0f} ms "
        f"→ **{mbps(raw_stream):.1f} MB/s**.",
        "- Ratio = TestArena throughput / raw throughput = raw streaming time / case time.",
        f"- CPU time of the testarena process: {cpu:.0f} ms per case (median over the queues; "
        "streaming and queue.log; QEMU's own CPU not included), "
        f"i.e. {out_bytes / 1e6 / (cpu / 1000) if cpu else float('inf'):.0f} MB/s per core.",
        f"- Between one case's `# case … passed` and the next case's start, outside "
        f"`duration_ms`, the worker spends {fmt(stats(gaps or [0]))}.",
        f"- The queue's archive: {', '.join(files)}; queue.log "
        f"{(qdir / 'queue.log').stat().st_size / 1e6:.1f} MB (the worker writes queue.log, "
        "build.log and junit.xml; a case's log is its range of queue.log and its page is made "
        "from it, by the server, on request).",
    ]
    return result(1, f"{mbps(ta_s['median']):.1f} MB/s ({ta_s['median']:.0f} ms/case)",
                  "n/a (too little output to time)" if r is None
                  else f"{mbps(raw_stream):.1f} MB/s ({raw_stream:.0f} ms)", r, "≥ 0.95×",
                  None if r is None else r >= 0.95, details,
                  {"ta_ms": ta_s, "raw_ms": raw, "boot_ms": boot, "bytes": out_bytes,
                   "ta_cpu_ms_per_case": cpu, "after_case_ms": gaps, "queues": queues})


def task_ms(q: dict) -> float:
    t = q["tasks"][0]
    return ms_between(t["started_at"], t["finished_at"])


def bare_steps(fw: Path, boots: int) -> dict[str, list[float]]:
    """The per-case steps of benchmark 3 in a bare loop, for comparison with TestArena's: QEMU
    spawn → `ready`, one ping/pong, and the exit after closing stdin (what the bare script does)
    or after SIGTERM to its process group (what TestArena does), alternately."""
    from baseline_perboot import QEMU as BARE_QEMU, wait_line
    out: dict[str, list[float]] = {"ready": [], "ping": [], "exit_eof": [], "exit_term": []}
    for i in range(boots):
        t0 = time.perf_counter()
        p = subprocess.Popen(BARE_QEMU + [str(fw)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
                             start_new_session=True)
        try:
            buf = wait_line(p, b"", b"ready")
            t1 = time.perf_counter()
            p.stdin.write(b"ping\n")
            wait_line(p, buf, b"pong")
            t2 = time.perf_counter()
            if i % 2:
                os.killpg(p.pid, signal.SIGTERM)
            else:
                p.stdin.close()
            p.wait(timeout=10)
            t3 = time.perf_counter()
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        out["ready"].append((t1 - t0) * 1000)
        out["ping"].append((t2 - t1) * 1000)
        out["exit_term" if i % 2 else "exit_eof"].append((t3 - t2) * 1000)
    return out


def bench_cases(ctx: Ctx, num: int) -> dict:
    sz = ctx.size
    ta = ctx.main_server()
    once = num == 2
    key = "pp" if once else "pb"
    cases, rounds, base_runs = sz[f"{key}_cases"], sz[f"{key}_rounds"], sz[f"{key}_base_runs"]
    scen = "bench/pingpong.xml" if once else "bench/perboot.xml"
    script = "baseline_pingpong.py" if once else "baseline_perboot.py"
    cmd = (f"{shlex.quote(sys.executable)} {shlex.quote(str(BENCH_DIR / script))} "
           f"{shlex.quote(str(ctx.fw))} {cases}")
    times, queues, cpus, base_t = [], [], [], []
    segs: dict[str, list[float]] = {}
    for i in range(rounds):
        say(f"{num}: round {i + 1}/{rounds}: {cases} ping/pong cases, boot "
            f"{'once' if once else 'per-case'}, in TestArena; then {base_runs}× {script}")
        cpu0 = cpu_ms(ta.proc.pid)
        q = ta.run_queue(ctx.repo, [scen])
        cpus.append(cpu_ms(ta.proc.pid) - cpu0)
        if len(q["tasks"][0]["cases"]) != cases:
            raise BenchError(f"queue {q['id']} has {len(q['tasks'][0]['cases'])} cases")
        queues.append(q)
        times.append(task_ms(q))
        for k, v in case_segments(read_log(ta.queue_dir(q["id"]) / "queue.log")).items():
            segs.setdefault(k, []).extend(v)
        base_t += time_command(ctx, f"bare-{num}", cmd, base_runs,
                               warmup=1 if i == 0 else 0)["values"]
    base = stats(base_t)
    py = python_start(ctx)
    net = max(base["median"] - py["median"], 0.001)
    ta_s = stats(times)
    r = ratio(ta_s["median"], net)
    pg = pg_case_rounds(ctx, scen, cases, rounds) if once else None
    r_pg = ratio(pg["median"], net) if pg else None
    # Where TestArena's time went, for the median queue.
    mid = sorted(queues, key=task_ms)[len(queues) // 2]
    t = mid["tasks"][0]
    lines = read_log(ta.queue_dir(mid["id"]) / "queue.log")
    start, end = parse_time(t["started_at"]), parse_time(t["finished_at"])
    prof = event_profile(lines, start, end)
    per_case = ta_s["median"] / cases
    base_per_case = net / cases
    goal = 1.5 if once else 1.1
    details = [
        f"{rounds} rounds, each: one TestArena queue, then {base_runs} run(s) of the bare script "
        "(timed whole by hyperfine).",
        f"- TestArena: the task's `started_at` → `finished_at` (boot, {cases} cases recorded in "
        f"the database, emulator stopped): {fmt(ta_s)}; "
        f"{per_case:.1f} ms per case.",
        f"- Bare `bench/{script}` ({'one QEMU, ' if once else ''}{cases} "
        f"{'exchanges' if once else 'boots'} over pipes): {fmt(base)}, less the Python "
        f"interpreter's start-up (`python3 -c 'import …'`, {py['median']:.0f} ms) = "
        f"{net:.0f} ms; {base_per_case:.1f} ms per case.",
        "- Ratio = TestArena / bare (net).",
        f"- CPU time of the testarena process per queue: {statistics.median(cpus):.0f} ms "
        f"(median; {statistics.median(cpus) / cases:.1f} ms per case; QEMU not included).",
        "",
        f"Steps around each case, from the queue.log event lines of all {rounds} queues:",
        "",
    ] + segment_table(segs, rounds)
    if not once:
        bare = bare_steps(ctx.fw, 2 * sz["bare_steps_boots"])
        med = {k: statistics.median(v) for k, v in bare.items() if v}
        details += [
            f"The same steps timed in a bare Python loop ({2 * sz['bare_steps_boots']} boots, "
            f"right after): spawn → `ready` {med['ready']:.1f} ms; ping → pong "
            f"{med['ping']:.1f} ms; QEMU's exit after its stdin is closed {med['exit_eof']:.1f} "
            f"ms, after SIGTERM to its process group instead "
            f"{med.get('exit_term', float('nan')):.1f} ms.",
            "",
        ]
    details += profile_table(f"Where the time went in queue {mid['id']} (the median one; from "
                             f"queue.log timestamps, {task_ms(mid):.0f} ms):", prof, task_ms(mid))
    figure = f"{ta_s['median']:.0f} ms"
    met = r is not None and r <= goal
    if pg:
        figure = f"SQLite {figure}; PostgreSQL {pg['median']:.0f} ms ({r_pg:.2f}×)"
        met = met and r_pg is not None and r_pg <= goal
        details[1:1] = [
            f"- The same queue on PostgreSQL (`serve` and one `worker` as two processes on a fresh "
            f"database, {rounds} rounds right after): task `started_at` → `finished_at` "
            f"{fmt(pg)} → {r_pg:.2f}× the bare script (its steps: the second table below)."]
        mid_pg = pg["mid"]
        details += ["", f"The same steps on PostgreSQL, from the queue logs of all {rounds} "
                    "queues (read through the API):", ""] + segment_table(pg["segments"], rounds)
        details += profile_table(f"Where the time went on PostgreSQL in queue {mid_pg['id']} "
                                 f"(the median one, {task_ms(mid_pg):.0f} ms):", pg["profile"],
                                 task_ms(mid_pg))
        pg = {k: v for k, v in pg.items() if k not in ("segments", "profile", "mid")}
    return result(num, figure, f"{net:.0f} ms", r,
                  f"≤ {goal}×" + (" (SQLite and PostgreSQL)" if pg else ""), met, details,
                  {"ta_ms": ta_s, "pg_ms": pg, "bare_ms": base, "python_start_ms": py, "ta_cpu_ms": cpus,
                   "segments_ms": segs, "profile": prof})


def pg_case_rounds(ctx: Ctx, scen: str, cases: int, rounds: int) -> dict:
    """Task times of `rounds` queues of `scen` on PostgreSQL: `serve` and one `worker` as two
    processes on a fresh database, the worker with a data directory of its own."""
    db = PgDatabase(ctx, "cases")
    d = ctx.work / "data-pg-cases"
    ta, w, times, segs, logs = None, None, [], {}, []
    try:
        ta = TestArena(ctx, "serve", d, extra=["--database", db.url])
        w = WorkerProc(ctx, d / "worker", db.url, "worker", config=d / "bench-config.toml")
        wait_workers(ta.api, [w.proc.pid])
        for i in range(rounds):
            say(f"2: PostgreSQL round {i + 1}/{rounds}: {cases} ping/pong cases, boot once")
            q = ta.run_queue(ctx.repo, [scen])
            if len(q["tasks"][0]["cases"]) != cases:
                raise BenchError(f"queue {q['id']} has {len(q['tasks'][0]['cases'])} cases")
            times.append(task_ms(q))
            lines = parse_log(api_log(ta.api, q["id"]))
            logs.append((q, lines))
            for k, v in case_segments(lines).items():
                segs.setdefault(k, []).extend(v)
    finally:
        if w:
            w.stop()
        if ta:
            ta.stop()
        db.drop()
    q, lines = sorted(logs, key=lambda ql: task_ms(ql[0]))[len(logs) // 2]
    t = q["tasks"][0]
    prof = event_profile(lines, parse_time(t["started_at"]), parse_time(t["finished_at"]))
    return {**stats(times), "segments": segs, "profile": prof, "mid": q}


def python_start(ctx: Ctx) -> dict:
    """How long starting the Python interpreter with the baselines' imports takes."""
    if ctx.python_start is None:
        ctx.python_start = time_command(
            ctx, "python-start",
            f'{shlex.quote(sys.executable)} -c "import os, select, subprocess, sys, time"',
            ctx.size["py_runs"])
    return ctx.python_start


DISPATCH_STEPS = [
    ("claim", "submit → claimed (API `created_at` → `started_at`)"),
    ("fetch", "claimed → fetch done (`# testing commit`)"),
    ("fetch_git", "  of which `git fetch` + `rev-parse` (from its logged `$ git … fetch` line)"),
    ("checkout", "fetch done → checkout done (`# phase: building`)"),
    ("clone_shared", "  of which `git clone --shared --no-checkout` of the mirror"),
    ("checkout_git", "  of which `git checkout --detach`"),
    ("profile_tasks", "  of which reading testarena.toml and recording the tasks"),
    ("build", "build (`# phase: building` → `# build passed`)"),
    ("to_emulator", "build passed → `# starting emulator`"),
    ("first_line", "`# starting emulator` → first console line"),
    ("total", "**submit → first console line**"),
    ("clone_phase", "**warm-mirror checkout**: `# phase: cloning` → `# phase: building`"),
]


def dispatch_steps(ta: TestArena, q: dict) -> dict:
    lines = read_log(ta.queue_dir(q["id"]) / "queue.log")

    def find(kind: str, prefix: str, after: dt.datetime | None = None,
             required: bool = True) -> dt.datetime | None:
        for t, k, text in lines:
            if k == kind and text.startswith(prefix) and (after is None or t >= after):
                return t
        if required:
            raise BenchError(f"queue {q['id']}: no '{kind} {prefix}' line in queue.log")
        return None

    created, started = parse_time(q["created_at"]), parse_time(q["started_at"])
    cloning = find("#", "phase: cloning")
    commit = find("#", "testing commit")
    building = find("#", "phase: building")
    built = find("#", "build passed")
    emu = find("#", "starting emulator")
    first = next((t for t, kind, _ in lines if kind == "|" and t >= emu), None)
    if first is None:
        raise BenchError(f"queue {q['id']}: no console line after '# starting emulator'")
    # The git command lines the worker logs (`| $ git …`); optional, they only refine the steps.
    fetch_cmd = find("|", "$ git --git-dir=", cloning, required=False)
    clone_cmd = find("|", "$ git clone --shared", commit, required=False)
    checkout_cmd = find("|", "$ git -C ", commit, required=False)
    profile = find("#", "profile:", commit, required=False)

    def ms(a, b):
        return None if a is None or b is None else (b - a).total_seconds() * 1000

    return {
        "claim": ms(created, started),
        "fetch": ms(started, commit),
        "fetch_git": ms(fetch_cmd, commit),
        "checkout": ms(commit, building),
        "clone_shared": ms(clone_cmd, checkout_cmd),
        "checkout_git": ms(checkout_cmd, profile),
        "profile_tasks": ms(profile, building),
        "build": ms(building, built),
        "to_emulator": ms(built, emu),
        "first_line": ms(emu, first),
        "total": ms(created, first),
        "clone_phase": ms(cloning, building),
    }


def bench_dispatch(ctx: Ctx) -> dict:
    sz = ctx.size
    ta = ctx.main_server()
    if not ctx.big_repo:
        say("4: dispatch: generating the large bench repository (vendored tables)")
        ctx.big_repo = make_repo(ctx, "bench-large", ballast=sz["ballast"])
    repos = [("bench", ctx.repo), ("bench-large", ctx.big_repo)]
    per_repo = {}
    for name, url in repos:
        say(f"4: dispatch: {sz['dispatch_queues']} queues one after another on {name} "
            "(warm mirror)")
        sha = ta.run_queue(url, ["bench/dispatch.xml"])["commit"]  # warms the mirror
        samples = []
        for _ in range(sz["dispatch_queues"]):
            q = ta.run_queue(url, ["bench/dispatch.xml"])
            samples.append(dispatch_steps(ta, q))
        say(f"4: dispatch: fresh `git clone {url}`, and the worker's git commands run alone "
            "(hyperfine)")
        # A new directory for every run (removed afterwards, untimed): deleting the previous
        # checkout between runs makes the next one slower on this disk (online discard).
        scratch = ctx.work / f"clones-{name}"
        scratch.mkdir(exist_ok=True)
        dest = shlex.quote(str(scratch)) + '/"$$"'
        clone = time_command(ctx, f"clone-{name}", f"git clone -q {url} {dest}",
                             sz["clone_runs"])
        mirrors = sorted((ta.data_dir / "git").glob(f"{name}-*.git"))
        alone = {}
        if mirrors:
            m = shlex.quote(str(mirrors[0]))
            alone = {
                "`git ls-remote` (one round trip to the git daemon)":
                    time_command(ctx, f"ls-remote-{name}", f"git ls-remote {url}",
                                 sz["clone_runs"]),
                "the worker's no-op `git fetch` into its mirror":
                    time_command(ctx, f"fetch-{name}",
                                 f"git --git-dir={m} fetch --prune --quiet --no-write-fetch-head "
                                 f"-- {url} '+refs/*:refs/*'", sz["clone_runs"]),
                "`git clone --shared --no-checkout` of the mirror + `git checkout --detach`":
                    time_command(ctx, f"shared-{name}",
                                 f"git clone --shared --no-checkout --quiet -- {m} {dest} && "
                                 f"git -C {dest} checkout --quiet --detach {sha} --",
                                 sz["clone_runs"]),
            }
        shutil.rmtree(scratch, ignore_errors=True)
        size = run(["du", "-sk", str(ctx.work / "served" / f"{name}.git")]).split()[0]
        steps = {k: [s[k] for s in samples if s[k] is not None] for k, _ in DISPATCH_STEPS}
        per_repo[name] = {"steps": steps, "clone_ms": clone, "alone_ms": alone,
                          "repo_kib": int(size)}
    small = per_repo["bench"]
    claim_p50 = pct(small["steps"]["claim"], 50)
    ratios = {n: pct(d["steps"]["clone_phase"], 50) / d["clone_ms"]["median"]
              for n, d in per_repo.items()}
    details = [
        "Queues are submitted one at a time to an idle `testarena up` whose mirror of the "
        "repository is warm. Step times come from the API's `created_at`/`started_at` and the "
        "timestamps (ms) of the `# …` event lines and `| $ git …` command lines of queue.log. "
        "The bench repositories commit a prebuilt `build/fw.elf` and build with "
        "`test -s build/fw.elf`, so the build step is TestArena's own overhead. Both "
        "repositories are served by `git daemon` on loopback.",
        "",
    ]
    for name, d in per_repo.items():
        details += [f"**{name}** repository ({d['repo_kib']} KiB bare; "
                    f"{len(d['steps']['claim'])} queues):", "",
                    "| step | p50 ms | p95 ms | max ms |", "|---|---:|---:|---:|"]
        for k, label in DISPATCH_STEPS:
            xs = d["steps"][k]
            if xs:
                details.append(f"| {label} | {pct(xs, 50):.0f} | {pct(xs, 95):.0f} | "
                               f"{max(xs):.0f} |")
        c = d["clone_ms"]
        details.append(f"| **fresh `git clone`** of the same repository over git:// "
                       f"(hyperfine) | {c['median']:.0f} | {pct(c['values'], 95):.0f} "
                       f"| {c['max']:.0f} |")
        for label, st in d["alone_ms"].items():
            details.append(f"| for comparison, run alone: {label} | {st['median']:.0f} | "
                           f"{pct(st['values'], 95):.0f} | {st['max']:.0f} |")
        details += ["", f"Warm-mirror checkout / fresh clone = **{ratios[name]:.2f}×**.", ""]
    met = claim_p50 <= 50 and ratios["bench-large"] <= 0.2
    details.append(
        "Met/not met is judged on the claim of the small repository and the checkout ratio of "
        "`bench-large`: for a repository of a few hundred KiB, one round trip to the remote "
        "(which a warm mirror still needs, to learn the branch head) already costs about half "
        "a fresh clone, so no mirror can reach 0.2× there.")
    return result(
        4, f"claim p50 {claim_p50:.0f} ms; checkout/clone " + ", ".join(
            f"{r:.2f}× ({n})" for n, r in ratios.items()),
        "fresh clone " + ", ".join(f"{d['clone_ms']['median']:.0f} ms ({n})"
                                   for n, d in per_repo.items()),
        ratios["bench-large"], "claim p50 ≤ 50 ms; checkout ≤ 0.2× clone", met, details,
        per_repo)


def bulk_create(base: str, n: int, start_index: int = 0, threads: int = 8) -> float:
    """POSTs n queues from `threads` keep-alive connections; returns seconds taken."""
    u = urllib.parse.urlparse(base)
    errors: list[str] = []

    def worker(k: int):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for i in range(start_index + k, start_index + n, threads):
            body = json.dumps({
                "repo": f"https://git.example.com/team-{i % 7}/firmware-{i % 13}.git",
                "branch": f"feature/bench-{i}", "name": f"bench queue {i}",
                "priority": i % 10, "scenarios": ["scenarios/smoke.xml", "scenarios/shell.xml"],
            })
            conn.request("POST", "/api/v1/queues", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 201:
                errors.append(f"HTTP {r.status}: {data[:200]!r}")
                return
        conn.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise BenchError(f"creating queues failed: {errors[0]}")
    return time.perf_counter() - t0


def abort_some(api: Api, every: int) -> None:
    """Aborts every `every`-th queue so the board shows more than one status."""
    qs = api.get("/api/v1/queues?limit=500")["queues"]
    for q in qs[::every]:
        api.request("POST", f"/api/v1/queues/{q['id']}/abort")


class StaticServer:
    """nginx (or, if missing, python3 -m http.server) serving files of `root` on loopback."""

    def __init__(self, ctx: Ctx, root: Path):
        self.port = free_port()
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                          else None)
        pre = ctx.work / "nginx"
        if nginx:
            for d in ("tmp", "logs"):
                (pre / d).mkdir(parents=True, exist_ok=True)
            conf = pre / "nginx.conf"
            conf.write_text(f"""\
user root;
worker_processes 2;
daemon off;
pid {pre}/nginx.pid;
error_log {pre}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {pre}/tmp/body;
    proxy_temp_path {pre}/tmp/proxy;
    fastcgi_temp_path {pre}/tmp/fastcgi;
    uwsgi_temp_path {pre}/tmp/uwsgi;
    scgi_temp_path {pre}/tmp/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        default_type application/json;
        location / {{ }}
    }}
}}
""")
            self.kind = "nginx " + first_line([nginx, "-v"]).split("/")[-1]
            self.proc = ctx.procs.spawn([nginx, "-p", pre, "-e", pre / "logs" / "error.log",
                                         "-c", conf], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        else:
            self.kind = "python3 -m http.server (nginx missing)"
            self.proc = ctx.procs.spawn([sys.executable, "-m", "http.server", "--bind",
                                         "127.0.0.1", "--directory", root, str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{self.kind} did not start") from None
                time.sleep(0.05)

    def stop(self):
        Procs.stop(self.proc, grace=5, group_first=True)


def bench_api_and_dashboard(ctx: Ctx, want: set[int]) -> list[dict]:
    sz = ctx.size
    out = []
    runs = []
    ta = TestArena(ctx, "serve", ctx.work / "data-api")
    try:
        n_dash = min(sz["dash_queues"], sz["api_posted"]) if 7 in want else 0
        if n_dash:
            say(f"7: dashboard: creating {n_dash} queues")
            bulk_create(ta.base, n_dash)
            abort_some(ta.api, 4)
            try:
                out.append(bench_dashboard(ctx, ta, n_dash))
            except Exception as e:  # noqa: BLE001
                out.append(crashed(7, e))
        if 5 in want:
            db = ta.data_dir / "testarena.db"
            fill = fill_queues(ta, n_dash, lambda sql: sqlite_exec(db, sql), "SQLite")
            runs.append(bench_api(ctx, ta, "SQLite", fill))
    finally:
        ta.stop()
    if 5 not in want:
        return out
    try:
        pg = PgDatabase(ctx, "api")
        try:
            ta = TestArena(ctx, "serve", ctx.work / "data-api-pg", extra=["--database", pg.url])
            try:
                fill = fill_queues(ta, 0, lambda sql: psql_on(pg.url, sql, ctx.work / "fill.sql"),
                                   "PostgreSQL")
                runs.append(bench_api(ctx, ta, "PostgreSQL", fill))
            finally:
                ta.stop()
        finally:
            pg.drop()
    except Exception as e:  # noqa: BLE001
        out.append(crashed(5, e))
        return out
    out.append(api_result(ctx, runs))
    return out


def sqlite_exec(db: Path, statements: list[str]) -> None:
    """Runs `statements` in one transaction on the SQLite file `db`, next to the server that
    has it open (WAL: it waits for the server's writes)."""
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.executescript("BEGIN IMMEDIATE; " + "; ".join(statements) + "; COMMIT;")
    finally:
        conn.close()


def psql_on(url: str, statements: list[str], script: Path) -> None:
    """Runs `statements` on the PostgreSQL database `url`, each in its own transaction: the
    triggers bump one counter row per queue and task, and thousands of updates of one row in
    one transaction get slower and slower (each walks the row's chain of versions)."""
    script.write_text("".join(f"{st};\n" for st in statements))
    run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-f", script],
        timeout=900, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})


# The rows `bulk_create` makes through the API, for the queues i of a range (SQL).
BULK_NAME = "'bench queue ' || i"
BULK_REPO = "'https://git.example.com/team-' || (i % 7) || '/firmware-' || (i % 13) || '.git'"
BULK_SCENARIOS = "'[\"scenarios/smoke.xml\",\"scenarios/shell.xml\"]'"


def bulk_sql(kind: str, first: int, end: int, now: int) -> list[str]:
    """SQL statements that insert the queues `first`..`end` (exclusive) as `bulk_create` would
    make them through the API: waiting, two pending scenario tasks each."""
    columns = ("INSERT INTO queues (name, repo, branch, scenarios, status, priority, created_at) "
               f"SELECT {BULK_NAME}, {BULK_REPO}, 'feature/bench-' || i, {BULK_SCENARIOS}, "
               f"'waiting', i % 10, {now} FROM ")
    tasks = ("(SELECT 0 AS position, 'scenarios/smoke.xml' AS scenario UNION ALL "
             "SELECT 1, 'scenarios/shell.xml') AS p")
    if kind == "SQLite":
        series = (f"(WITH RECURSIVE s(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM s "
                  f"WHERE i < {end - 1}) SELECT i FROM s) AS s")
        return [columns + series + " ORDER BY i",
                "INSERT INTO tasks (queue_id, position, scenario, status) "
                f"SELECT q.id, p.position, p.scenario, 'pending' FROM queues q, {tasks} "
                "WHERE q.scenarios IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM tasks t WHERE t.queue_id = q.id) ORDER BY q.id, p.position"]
    out = []
    for a in range(first, end, 500):
        b = min(end, a + 500) - 1
        out.append(f"WITH new AS ({columns}generate_series({a}, {b}) AS s(i) ORDER BY i "
                   "RETURNING id) INSERT INTO tasks (queue_id, position, scenario, status) "
                   f"SELECT new.id, p.position, p.scenario, 'pending' FROM new, {tasks} "
                   "ORDER BY new.id, p.position")
    return out


def fill_queues(ta: TestArena, made: int, execute, kind: str) -> dict:
    """Fills the database of `ta` (which has `made` queues) to `api_queues`: all but the last
    `api_posted` inserted directly with SQL (`execute`, see `bulk_sql`), then the last ones
    POSTed. Returns how, with the times taken."""
    sz = ta.ctx.size
    total, posted = sz["api_queues"], max(0, sz["api_posted"] - made)
    direct = max(0, total - made - posted)
    t0 = time.perf_counter()
    if direct:
        say(f"5: api ({kind}): inserting {direct} queues directly with SQL")
        execute(bulk_sql(kind, made, made + direct, int(time.time() * 1000)))
    direct_secs = time.perf_counter() - t0
    say(f"5: api ({kind}): creating {posted} queues through the API "
        f"(8 parallel keep-alive POST loops)")
    post_secs = bulk_create(ta.base, posted, start_index=made + direct) if posted else 0.0
    n = ta.api.get("/api/v1/queues?limit=1")["queues"][0]["id"]
    if n != total:
        raise BenchError(f"{kind}: expected {total} queues, the newest is {n}")
    return {"made": made, "direct": direct, "direct_secs": direct_secs, "posted": posted,
            "post_secs": post_secs}


def bench_api(ctx: Ctx, ta: TestArena, kind: str, fill: dict) -> dict:
    """wrk on one queue and on the list of 50 of `ta`, and nginx on the same bytes."""
    sz = ctx.size
    total = ta.api.get("/api/v1/queues?limit=1")["queues"][0]["id"]
    qid = max(1, total // 2)
    urls = {"one": f"/api/v1/queues/{qid}", "list": "/api/v1/queues?limit=50"}
    static = ctx.work / f"static-{kind}"
    static.mkdir(exist_ok=True)
    sizes = {}
    for k, path in urls.items():
        body = ta.api.request("GET", path)
        (static / f"{k}.json").write_bytes(body)
        sizes[k] = len(body)
    res = {}

    def load(key: str, url: str, pid: int):
        c0 = cpu_ms(pid)
        w = wrk(ctx, url)
        w["cpu_us_per_req"] = (cpu_ms(pid) - c0) * 1000 / w["requests"]
        res[key] = w

    for k, path in urls.items():
        say(f"5: api ({kind}): wrk {sz['wrk_secs']}s on GET {path}")
        load(f"ta_{k}", ta.base + path, ta.proc.pid)
    srv = StaticServer(ctx, static)
    try:
        for k in urls:
            say(f"5: api ({kind}): wrk {sz['wrk_secs']}s on {srv.kind} serving {k}.json")
            load(f"static_{k}", f"http://127.0.0.1:{srv.port}/{k}.json", srv.proc.pid)
    finally:
        srv.stop()
    return {"kind": kind, "urls": urls, "sizes": sizes, "res": res, "fill": fill,
            "rss": ta.vm(), "static_kind": srv.kind}


def api_result(ctx: Ctx, runs: list[dict]) -> dict:
    """Benchmark 5's report from its runs on each database."""
    sz = ctx.size
    rows, met, figures = [], True, []
    for r in runs:
        res, urls, sizes = r["res"], r["urls"], r["sizes"]
        for k, label in (("one", f"`GET {urls['one']}`"), ("list", f"`GET {urls['list']}`")):
            a, b = res[f"ta_{k}"], res[f"static_{k}"]
            rows.append(f"| {r['kind']} | {label} ({sizes[k]} B) | {a['rps']:.0f} | "
                        f"{a['p50']:.2f} | {a['p99']:.2f} | {a['cpu_us_per_req']:.0f} | "
                        f"{a['non2xx'] + a['socket_errors']} | {b['rps']:.0f} | "
                        f"{b['p99']:.2f} | {b['cpu_us_per_req']:.0f} | "
                        f"{ratio(a['rps'], b['rps']):.2f}× |")
        one, lst = res["ta_one"], res["ta_list"]
        met = (met and one["rps"] >= 10_000 and one["p99"] < 10 and lst["rps"] >= 5_000
               and lst["p99"] < 20 and one["non2xx"] + lst["non2xx"] == 0)
        figures.append(f"{r['kind']}: {one['rps']:.0f} req/s, p99 {one['p99']:.2f} ms (one); "
                       f"{lst['rps']:.0f} req/s, p99 {lst['p99']:.2f} ms (list of 50)")
    how = []
    for r in runs:
        f = r["fill"]
        posted = f["posted"] + f["made"]
        how.append(
            f"{r['kind']}: {f['direct'] + posted} queues; {f['direct']} inserted directly with "
            f"SQL ({'one transaction' if r['kind'] == 'SQLite' else '500 queues a transaction'}"
            f", {f['direct_secs']:.1f} s: the rows `POST /api/v1/queues` makes, two pending "
            f"scenario tasks each, waiting), then the newest {posted} through "
            f"`POST /api/v1/queues` from 8 parallel keep-alive connections"
            + (f" ({f['posted'] / f['post_secs']:.0f} queues/s)" if f["post_secs"] else "")
            + (" (the first " + str(f["made"]) + " of them for benchmark 7, every 4th of the "
               "newest 500 of those aborted)" if f["made"] else "")
            + f". RSS after the load: {r['rss'].get('VmRSS', 0) / 1024:.0f} MiB "
            f"(peak {r['rss'].get('VmHWM', 0) / 1024:.0f} MiB).")
    first = runs[0]
    details = [
        "`testarena serve` with no worker (the queues stay waiting), on SQLite and on "
        "PostgreSQL (`serve --database postgres://…`, a fresh database on the local server). "
        f"Load: `wrk -t2 -c{sz['wrk_conns']} -d{sz['wrk_secs']}s --latency` on loopback. "
        f"Baseline: {first['static_kind']} serving a static file with the very bytes of the "
        "same answer (worker_processes 2, access log off).",
        "",
        *[f"- {h}" for h in how],
        "",
        "| database | request | TestArena req/s | p50 ms | p99 ms | CPU µs/req | errors "
        "| static req/s | static p99 ms | static CPU µs/req | ratio (req/s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "CPU µs/req: CPU time (user + system) of the server's processes during the wrk run "
        "divided by the requests served (PostgreSQL's own processes not counted); unlike req/s "
        "it does not depend much on what else the machine is doing.",
    ]
    one = first["res"]["ta_one"]
    r = ratio(one["rps"], first["res"]["static_one"]["rps"])
    return result(5, "; ".join(figures),
                  f"{first['res']['static_one']['rps']:.0f} req/s "
                  f"(static, {first['static_kind'].split(' (')[0]})", r,
                  "one queue ≥ 10,000 req/s, p99 < 10 ms; list of 50 ≥ 5,000 req/s, p99 < 20 ms; "
                  "both databases", met, details,
                  {r["kind"]: {"fill": r["fill"], **{k: {kk: vv for kk, vv in v.items()
                                                          if kk != "raw"}
                                                      for k, v in r["res"].items()}}
                   for r in runs})


def dash_create(base: str, n: int, labels: list[str], threads: int = 8) -> None:
    """POSTs n queues asking for `labels` (so no worker takes them: they stay waiting) from
    `threads` keep-alive connections, named and spread like benchmark 5's."""
    u = urllib.parse.urlparse(base)
    errors: list[str] = []

    def one(k: int):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for i in range(k, n, threads):
            body = json.dumps({
                "repo": f"https://git.example.com/team-{i % 7}/firmware-{i % 13}.git",
                "branch": f"feature/bench-{i}", "name": f"bench queue {i}", "priority": i % 10,
                "scenarios": ["scenarios/smoke.xml", "scenarios/shell.xml"], "labels": labels,
            })
            conn.request("POST", "/api/v1/queues", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            answer = r.read()
            if r.status != 201:
                errors.append(f"HTTP {r.status}: {answer[:200]!r}")
                return
        conn.close()

    ts = [threading.Thread(target=one, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise BenchError(f"creating queues failed: {errors[0]}")


def bench_dashboard(ctx: Ctx, ta: TestArena, n: int) -> dict:
    sz = ctx.size
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise BenchError("chromium is not installed (apt-get install chromium)")
    if not (BENCH_DIR / "node_modules" / "playwright-core").exists():
        raise BenchError("bench/node_modules/playwright-core is missing (npm ci --prefix bench)")
    page = ta.api.request("GET", "/").decode(errors="replace")
    if 'data-testid="view-board"' not in page:
        raise BenchError("GET / of this binary serves no dashboard (no data-testid=\"view-board\")"
                         f"; it starts: {page[:200]!r}")
    out = ctx.work / "dashboard.json"
    say(f"7: dashboard: {sz['dash_runs']} loads of {ta.base}/ in headless Chromium")
    run(["node", BENCH_DIR / "dashboard.mjs", "--url", ta.base + "/", "--runs",
         str(sz["dash_runs"]), "--chromium", chromium, "--profiles", ctx.work / "chromium",
         "--out", out], timeout=600)
    runs = json.loads(out.read_text())["runs"]

    # Live: a board of n queues on `testarena up` (its worker runs the farm queues) while
    # dashboard.mjs changes dash_live_rate queues per second through the API.
    if not ctx.git_port:
        start_git_daemon(ctx)
    farm_repo = make_farm_repo(ctx, "dash-farm", FARM_TOML)
    secs, rate, farm_rate = sz["dash_live_secs"], sz["dash_live_rate"], sz["dash_farm_rate"]
    up = TestArena(ctx, "up", ctx.work / "data-dash")
    try:
        say(f"7: dashboard live: creating {n} waiting queues on `testarena up`")
        dash_create(up.base, n, ["bench-no-worker"])
        say(f"7: dashboard live: every queue on the board, {rate} queues change state per "
            f"second for {secs} s (+{farm_rate}/s run by the worker), Chromium traced")
        live_out = ctx.work / "dashboard-live.json"
        c0, p0, w0 = cpu_times(), cpu_ms(up.proc.pid), time.monotonic()
        run(["node", BENCH_DIR / "dashboard.mjs", "--url", up.base + "/", "--runs", "0",
             "--chromium", chromium, "--profiles", ctx.work / "chromium", "--out", live_out,
             "--live-url", up.base + "/", "--live-secs", str(secs), "--live-rate", str(rate),
             "--farm-repo", farm_repo, "--farm-rate", str(farm_rate)], timeout=600)
        c1, p1, wall = cpu_times(), cpu_ms(up.proc.pid), time.monotonic() - w0
    finally:
        up.stop()
    lv = json.loads(live_out.read_text())["live"]
    tr = lv["trace"]
    if "error" in tr:
        raise BenchError(f"the Chromium trace of the live board: {tr['error']}")
    if lv["mismatch_count"]:
        raise BenchError(f"the board lost states: {lv['mismatch_count']} of the newest "
                         f"{lv['checked']} queues show another status than the API: "
                         f"{lv['mismatches']}")
    load = lv["load"]
    busy = 1 - (c1[1] - c0[1]) / max(1, c1[0] - c0[0])
    paint = stats([r["painted"] for r in runs])
    dom = stats([r["rendered"] for r in runs])
    api_ms = stats([r["list_api_ms"] for r in runs if r.get("list_api_ms") is not None] or [0])
    list_end = stats([r["list_end"] for r in runs if r.get("list_end") is not None] or [0])
    dcl = stats([r["dom_content_loaded"] for r in runs])
    fcp = stats([r["first_contentful_paint"] for r in runs
                 if r.get("first_contentful_paint") is not None] or [0])
    last = runs[-1]
    selfs = ", ".join(f"{x['name']} {x['ms']:.0f}" for x in tr["self_time"][:8])
    in_long = ", ".join(f"{x['name']} {x['ms']:.0f}" for x in tr["self_time_in_long_tasks"][:6])
    details = [
        "**Load.** "
        f"{n} queues in the database (created through the API as in benchmark 5; every 4th of "
        "the newest aborted, the rest waiting, each with two scenario tasks). Each run launches "
        "Chromium headless with a fresh user-data-dir (cold cache), waits 1 s (a browser that "
        "just started loads its own pages: Chromium 156 builds its omnibox popup, ~200 module "
        "requests in another renderer, which competed for the two cores) and loads `/`. "
        "Measured from "
        "navigation start (`performance.timeOrigin`) until the first page of queue rows "
        "(`[data-testid^=\"queue-row-\"]`) is in the DOM and `[data-testid=\"queue-count\"]` "
        "shows the count (a MutationObserver notes the time), then one more animation frame "
        "so that it has been painted. The board asks for one page of queues "
        f"(`limit` = its page size): {last['rows']} rows; the count reads “{last['count_text']}”.",
        "",
        f"- rendered in the DOM: {fmt(dom)}",
        f"- painted (figure): {fmt(paint)}",
        f"- DOMContentLoaded: {fmt(dcl)}; first contentful paint: {fmt(fcp)}",
        f"- the list request `{last.get('list_url', '?')}` (resource timing, "
        f"{last.get('list_bytes', 0)} B): {fmt(api_ms)}, answered at {fmt(list_end)} "
        "after navigation start",
        "",
        "**Live.** "
        f"`testarena up` (SQLite) with {n} waiting queues that ask for a label no worker has. "
        "A fresh headless Chromium opens the board and loads every queue (“Load more” until "
        f"there is no more: {lv['rows_before']} rows in {lv['load_all_ms']} ms), scrolls back to "
        "the top, where new queues appear, with the pointer over the rows; then its "
        f"performance timeline is recorded (CDP tracing) for {secs} s while `bench/dashboard.mjs` "
        f"changes the state of {rate} queues per second through the API: every {1000 / rate:.0f} "
        "ms it submits a queue (→ waiting, a new row on top) or aborts one of the waiting ones "
        "picked at random (→ aborted, a row anywhere), alternately. Meanwhile it submits "
        f"{farm_rate} queues per second of a repository whose build is `true` and whose emulator "
        "is `cat` (benchmark 8's), which the server's worker runs for real (waiting → running "
        "through its phases → passed). A task is a top-level `RunTask` slice of the page's main "
        "thread (`CrRendererMain`); long = over 50 ms, as the Long Tasks API and DevTools count "
        "them. At the end each of the newest "
        f"{lv['checked']} queues shows on the board the status the API gives (checked).",
        "",
        f"- changes made: {load['submitted']} submitted + {load['aborted']} aborted in "
        f"{load['secs']:.1f} s = **{load['changes_per_s']:.1f} queues/s** (p99 lateness of a "
        f"change {load['late_p99_ms']:.0f} ms, {load['errors']} errors); "
        f"{load['farm_submitted']} farm queues submitted, {lv['farm_passed']} passed; "
        f"`queue` events received by the page: {lv['events_received']} "
        f"({lv['events_received'] / load['secs']:.0f}/s); rows at the end: {lv['rows_after']}",
        f"- tasks on the main thread: {tr['tasks']} in {tr['window_ms'] / 1000:.1f} s, busy "
        f"{tr['busy_ms']:.0f} ms ({100 * tr['busy_ms'] / tr['window_ms']:.0f}%); p50 "
        f"{tr['p50_ms']:.2f} ms, p99 {tr['p99_ms']:.1f} ms, over 16.7 ms: {tr['over_16ms']}",
        f"- **longest task {tr['longest_ms']:.1f} ms; tasks over 50 ms: {tr['long_tasks']}** "
        f"(Long Tasks API in the page: {lv['longtask_api']['count']}, longest "
        f"{lv['longtask_api']['longest_ms']:.0f} ms)",
        "- the same by the main thread's own CPU time in each task (the trace's thread time: "
        "leaves out the time it waited for a core while other processes ran): longest "
        f"{tr['cpu_longest_ms']:.1f} ms, over 50 ms: {tr['cpu_long_tasks']}, p99 "
        f"{tr['cpu_p99_ms']:.1f} ms, busy {tr['cpu_busy_ms']:.0f} ms in all",
        f"- the main thread's CPU time by trace event (self time, ms): {selfs}"
        + (f"; inside the long tasks: {in_long}" if in_long else ""),
        f"- CPU: the whole machine {100 * busy * (os.cpu_count() or 1):.0f}% busy (of "
        f"{100 * (os.cpu_count() or 1)}%) and the server (with its worker) "
        f"{(p1 - p0) / 10 / wall:.0f}% of a core, from Chromium's start to its end; while "
        f"traced, Chromium (all its processes) {lv['cpu_share']['chromium']:.0f}% of a core and "
        f"`dashboard.mjs` (the API load, the trace's collection) "
        f"{lv['cpu_share']['harness']:.0f}%; the rest was other work on the machine",
    ]
    live_ok = tr["long_tasks"] == 0
    return result(7, f"{paint['median']:.0f} ms to first page painted; live at "
                  f"{load['changes_per_s']:.0f} changes/s: longest task {tr['longest_ms']:.0f} ms, "
                  f"{tr['long_tasks']} over 50 ms", "—", None,
                  "painted < 300 ms; no task > 50 ms at 50 changes/s",
                  paint["median"] < 300 and live_ok, details, {"runs": runs, "live": lv})


def log_size(api: Api, qid: int) -> int:
    """The size of a queue's log, through `GET /api/v1/queues/{id}/log` (an offset past the end
    answers an empty body): a bisection, so a 1.5 GB log is not downloaded."""
    def has(off: int) -> bool:
        body, _ = api_raw(api, f"/api/v1/queues/{qid}/log?offset={off}")
        return bool(body)

    lo, hi = 0, 1 << 20
    while has(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # has(lo) or lo == 0; not has(hi)
        mid = (lo + hi) // 2
        if has(mid):
            lo = mid
        else:
            hi = mid
    return hi if has(lo) else lo


def bench_memory(ctx: Ctx) -> dict:
    sz = ctx.size
    if not ctx.git_port:
        start_git_daemon(ctx)
    if not ctx.repo:
        ctx.repo = make_repo(ctx, "bench")
    cap = sz["mem_log_cap"]
    extra = ["--log-cap", str(cap)] if cap else []
    rows, raw = [], []
    for n in sz["mem_lines"]:
        say(f"6: memory: one case of 'spam {n}' on a fresh `testarena up`")
        ta = TestArena(ctx, "up", ctx.work / f"data-mem-{n}", extra=extra)
        try:
            idle = ta.vm()
            samples: list[tuple[float, int]] = []
            t0 = time.monotonic()
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    v = ta.vm().get("VmRSS")
                    if v:
                        samples.append((time.monotonic() - t0, v))
                    stop.wait(0.05)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            try:
                q = ta.run_queue(ctx.repo, [f"bench/mem_{n}.xml"], timeout=3600)
            finally:
                stop.set()
                th.join()
            end = ta.vm()
            qlog = log_size(ta.api, q["id"])
            case = q["tasks"][0]["cases"][0]
            peak_at = max(samples, key=lambda s: s[1]) if samples else (0, 0)
            # RSS over the run in tenths of it: flat means flat all along, not only at the end.
            span = samples[-1][0] if samples else 0
            tenths = [max((v for t, v in samples if k * span / 10 <= t <= (k + 1) * span / 10),
                          default=0) for k in range(10)]
            raw.append({"lines": n, "idle_kib": idle, "end_kib": end, "queue_log": qlog,
                        "case_ms": case["duration_ms"], "peak_sample": peak_at,
                        "tenths_kib": tenths,
                        "samples": samples[::max(1, len(samples) // 200)]})
            rows.append((n, idle.get("VmHWM", 0), end.get("VmHWM", 0), end.get("VmRSS", 0),
                         qlog, case["duration_ms"], peak_at, tenths))
        finally:
            ta.stop()
    small, large = rows[0], rows[-1]
    growth = (large[2] - small[2]) / 1024
    peak = max(r[2] for r in rows) / 1024
    out_mb = {n: n * 58 / 1e6 for n, *_ in rows}  # "line N the quick ... dog\n": ~58 bytes
    details = [
        "VmHWM (peak resident set) of the `testarena up` process (server and worker; QEMU is a "
        "separate process and not counted), read from /proc/PID/status. A fresh process per "
        "size, " + (f"`--log-cap {cap}` ({cap >> 30} GiB), so that every byte of the output "
                    "is stored (`queue.log` and the case's log, in the SQLite database)"
                    if cap else "default `--log-cap` (256 MiB)")
        + ". RSS was also sampled every 50 ms while the queue ran, to see when the peak "
        "happens and whether it creeps up with the output. `queue.log`: its size through "
        "`GET /api/v1/queues/{id}/log` (timestamps make it ~1.5× the console output).",
        "",
        "| console output | idle peak | **peak after the queue** | RSS after | queue.log | "
        "case time | largest sample (at s) | largest sample in each tenth of the run, MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, idle, hwm, rss, qlog, case_ms, (at, v), tenths in rows:
        details.append(f"| `spam {n}` (~{out_mb[n]:,.0f} MB) | {idle / 1024:.1f} MiB | "
                       f"**{hwm / 1024:.1f} MiB** | {rss / 1024:.1f} MiB | {qlog / 1e6:,.1f} MB | "
                       f"{case_ms} ms | {v / 1024:.1f} MiB ({at:.1f}) | "
                       f"{' '.join(f'{t / 1024:.0f}' for t in tenths)} |")
    details += ["", f"Growth from the smallest to the largest output "
                f"({large[4] / max(1, small[4]):.0f}× the log): {growth:+.1f} MiB "
                f"(flat = less than 10 MiB)."]
    met = peak < 50 and growth < 10
    return result(6, f"{peak:.1f} MiB peak at {large[4] / 1e6:,.0f} MB of log "
                  f"({small[2] / 1024:.1f} MiB at {small[4] / 1e6:.1f} MB)",
                  "—", ratio(large[2], small[2]), "< 50 MiB and flat", met, details, raw)


# ---------------------------------------------------------------------------------------------
# PostgreSQL farm (benchmarks 8 and 9): `testarena serve` and separate `testarena worker`
# processes on a fresh PostgreSQL database each, sharing one data directory
# ---------------------------------------------------------------------------------------------

FARM_TOML = """\
# Written by bench/bench.py: `cat` as the emulator, so a queue costs TestArena's own work only.
[build]
command = "true"
[emulator]
command = "cat"
console = "stdio"
"""

FARM_SLOW_TOML = FARM_TOML.replace('command = "cat"', "command = \"sh -c 'sleep 1; exec cat'\"")

FARM_XML = """\
<scenario name="farm" timeout="120">
  <testcase id="TC_HELLO" timeout="30">
    <send>hello</send>
    <expect timeout="10">^hello$</expect>
  </testcase>
</scenario>
"""


def pg_admin_url() -> str:
    """The maintenance database the benchmark creates its databases from."""
    return (os.environ.get("BENCH_POSTGRES") or os.environ.get("TESTARENA_TEST_POSTGRES")
            or "postgres://postgres@127.0.0.1:5432/postgres")


def psql(sql: str) -> str:
    return run(["psql", pg_admin_url(), "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
               timeout=120, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})


class PgDatabase:
    """A fresh PostgreSQL database; its name is recorded in <work>/pgdbs, so that bench/run
    drops it if this script dies before `drop`."""

    def __init__(self, ctx: "Ctx", tag: str):
        self.name = f"testarena_bench_{os.getpid()}_{tag}"
        with open(ctx.work / "pgdbs", "a") as f:
            f.write(self.name + "\n")
        psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        psql(f"CREATE DATABASE {self.name}")
        admin = pg_admin_url()
        base, _, query = admin.partition("?")
        self.url = base.rsplit("/", 1)[0] + "/" + self.name + (f"?{query}" if query else "")

    def drop(self) -> None:
        try:
            psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except BenchError as e:
            say(f"could not drop the database {self.name}: {e}")


class WorkerProc:
    """A `testarena worker` process (concurrency 1) on `database` with `data_dir` (the server's,
    or one of its own) and `config` (default: the server's empty config file in `data_dir`);
    its own log in <data_dir>/<name>.log."""

    def __init__(self, ctx: "Ctx", data_dir: Path, database: str, name: str,
                 config: Path | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESTARENA_")}
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = ctx.procs.spawn(
                [ctx.bin, "worker", "--config", config or data_dir / "bench-config.toml",
                 "--data-dir", data_dir, "--database", database, "--concurrency", "1"],
                stdout=subprocess.DEVNULL, stderr=log, env=env)

    def stop(self) -> None:
        Procs.stop(self.proc, grace=20)


def wait_workers(api: Api, pids: list[int], timeout: float = 60) -> None:
    """Until every one of `pids` is registered (`GET /api/v1/workers`)."""
    deadline = time.monotonic() + timeout
    while True:
        have = {w.get("pid") for w in api.get("/api/v1/workers")["workers"]}
        if set(pids) <= have:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"workers {sorted(set(pids) - have)} did not register in "
                             f"{timeout:.0f}s")
        time.sleep(0.1)


def api_raw(api: Api, path: str, timeout: float = 60) -> tuple[bytes, dict]:
    req = urllib.request.Request(api.base + path)
    try:
        with _no_proxy.open(req, timeout=timeout) as r:
            return r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        raise BenchError(f"GET {path}: HTTP {e.code}: {e.read()[:500]!r}") from None


def api_log(api: Api, qid: int) -> bytes:
    """A queue's whole log through `GET /api/v1/queues/{id}/log` (1 MiB pages)."""
    off, chunks = 0, []
    while True:
        body, hdr = api_raw(api, f"/api/v1/queues/{qid}/log?offset={off}")
        if not body:
            return b"".join(chunks)
        chunks.append(body)
        off = int(hdr["x-next-offset"])


def parse_log(data: bytes) -> list[tuple[dt.datetime, str, str]]:
    out = []
    for raw in data.split(b"\n"):
        m = LOG_LINE.match(raw.decode("utf-8", errors="replace").rstrip("\r"))
        if m:
            out.append((parse_time(m.group(1)), m.group(2), m.group(3)))
    return out


def all_queues(api: Api) -> list[dict]:
    out, before = [], None
    while True:
        page = api.get("/api/v1/queues?limit=500" + (f"&before={before}" if before else ""))
        out += page["queues"]
        before = page.get("next")
        if not before:
            return out


def submit_many(base: str, body: dict, n: int, threads: int = 8) -> list[int]:
    """POSTs the same queue n times from `threads` keep-alive connections; returns the ids."""
    u = urllib.parse.urlparse(base)
    ids: list[int] = []
    errors: list[str] = []
    data = json.dumps(body)

    def one(k: int):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for _ in range(k, n, threads):
            conn.request("POST", "/api/v1/queues", data, {"Content-Type": "application/json"})
            r = conn.getresponse()
            answer = r.read()
            if r.status != 201:
                errors.append(f"HTTP {r.status}: {answer[:200]!r}")
                return
            ids.append(json.loads(answer)["id"])
        conn.close()

    ts = [threading.Thread(target=one, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise BenchError(f"submitting queues failed: {errors[0]}")
    return ids


def cpu_times() -> tuple[int, int]:
    """(total, idle + iowait) jiffies of the whole machine, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(v), v[3] + v[4]


def failed_summary(api: Api, qs: list[dict]) -> str:
    bad = [q for q in qs if q["status"] != "passed"]
    if not bad:
        return ""
    q = bad[0]
    tail = api_log(api, q["id"])[-1500:].decode(errors="replace")
    return (f"{len(bad)} queue(s) did not pass, e.g. {q['id']}: {q['status']}: "
            f"{q.get('error')}\n{tail}")


def farm_drain(api: Api, ids: list[int], start, timeout: float = 1800) -> dict:
    """Calls `start()` (which starts the workers) with `ids` waiting, then waits until every
    queue is finished. Rates come from the queues' own `started_at`/`finished_at`."""
    c0 = cpu_times()
    start()
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.5)
        if not any(api.get(f"/api/v1/queues?status={s}&limit=1")["queues"]
                   for s in ("waiting", "running")):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the farm did not drain {len(ids)} queues in {timeout:.0f}s")
    c1 = cpu_times()
    want = set(ids)
    qs = [q for q in all_queues(api) if q["id"] in want]
    if len(qs) != len(ids) or any(q["status"] != "passed" for q in qs):
        raise BenchError(f"{len(qs)} of {len(ids)} queues found; " + failed_summary(api, qs))
    starts = sorted(parse_time(q["started_at"]) for q in qs)
    ends = sorted(parse_time(q["finished_at"]) for q in qs)
    span = (ends[-1] - starts[0]).total_seconds()
    n = len(qs)
    lo, hi = n // 10, n - 1 - n // 10
    steady = (ends[hi] - ends[lo]).total_seconds()
    per_worker: dict[str, int] = {}
    for q in qs:
        per_worker[q.get("worker") or "?"] = per_worker.get(q.get("worker") or "?", 0) + 1
    busy = 1 - (c1[1] - c0[1]) / max(1, c1[0] - c0[0])
    # The fetch of each queue, from its log read through the API (empty when the server cannot
    # see the worker's log): `# phase: cloning` → `# testing commit` includes the wait for the
    # mirror's lock, `| $ git … fetch` → `# testing commit` is the fetch alone.
    fetch_wait, fetch = [], []
    for q in qs:
        t_clone = t_cmd = t_commit = None
        for t, kind, text in parse_log(api_log(api, q["id"])):
            if kind == "#" and text.startswith("phase: cloning"):
                t_clone = t
            elif kind == "|" and text.startswith("$ git ") and " fetch " in text:
                t_cmd = t
            elif kind == "#" and text.startswith("testing commit"):
                t_commit = t
                break
        if t_clone and t_cmd and t_commit:
            fetch_wait.append((t_commit - t_clone).total_seconds() * 1000)
            fetch.append((t_commit - t_cmd).total_seconds() * 1000)
    return {
        "fetch_wait_ms": fetch_wait, "fetch_ms": fetch,
        "mirror_busy": sum(fetch) / 1000 / span if fetch and span else None,
        "n": n, "span_s": span, "rate": n / span if span else float("inf"),
        "steady_rate": (hi - lo) / steady if steady else float("inf"),
        "service_ms": [ms_between(q["started_at"], q["finished_at"]) for q in qs],
        "per_worker": sorted(per_worker.values(), reverse=True),
        "cpu_busy": busy,
    }


WAKE_STEPS = [
    ("claim", "submit → claimed (`created_at` → `started_at`)"),
    ("resp_claim", "POST answered (client clock) → claimed (`started_at`)"),
    ("fetch_checkout", "claimed → `# phase: building` (fetch, checkout)"),
    ("build", "`# phase: building` → `# build passed` (`true`)"),
    ("to_emulator", "`# build passed` → `# starting emulator`"),
    ("emulator", "**submit → `# starting emulator`**"),
]


def farm_wakeup(ta: TestArena, repo: str, m: int) -> dict[str, list[float]]:
    """Submits m queues one at a time to idle workers; step times from the API's timestamps and
    the event lines of the queue log read through the API."""
    out: dict[str, list[float]] = {k: [] for k, _ in WAKE_STEPS}
    for _ in range(m):
        time.sleep(0.3)  # every worker is back to waiting for work
        q = ta.submit(repo, ["bench/farm.xml"])
        answered = dt.datetime.now(dt.timezone.utc)
        q = ta.wait(q["id"], every=0.1)
        if q["status"] != "passed":
            raise BenchError(failed_summary(ta.api, [q]))
        lines = parse_log(api_log(ta.api, q["id"]))

        def find(prefix: str) -> dt.datetime:
            for t, kind, text in lines:
                if kind == "#" and text.startswith(prefix):
                    return t
            raise BenchError(f"queue {q['id']}: no '# {prefix}' line in its log")

        created, started = parse_time(q["created_at"]), parse_time(q["started_at"])
        building, built, emu = find("phase: building"), find("build passed"), \
            find("starting emulator")
        ms = lambda a, b: (b - a).total_seconds() * 1000  # noqa: E731
        for k, v in (("claim", ms(created, started)), ("resp_claim", ms(answered, started)),
                     ("fetch_checkout", ms(started, building)), ("build", ms(building, built)),
                     ("to_emulator", ms(built, emu)), ("emulator", ms(created, emu))):
            out[k].append(v)
    return out


def make_farm_repo(ctx: "Ctx", name: str, toml: str) -> str:
    work = ctx.work / "src" / name
    if work.exists():
        shutil.rmtree(work)
    (work / "bench").mkdir(parents=True)
    (work / "testarena.toml").write_text(toml)
    (work / "bench" / "farm.xml").write_text(FARM_XML)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", name)
    served = ctx.work / "served"
    served.mkdir(exist_ok=True)
    if (served / f"{name}.git").exists():
        shutil.rmtree(served / f"{name}.git")
    git(served, "clone", "-q", "--bare", str(work), f"{name}.git")
    return f"git://127.0.0.1:{ctx.git_port}/{name}.git"


# The two workloads of benchmark 8: TestArena's own work only (`cat`), and an emulator that
# takes a second of wall time (as a real one waits for its firmware), little CPU.
FARM_LOADS = [("own work", "farm", FARM_TOML, "farm_queues"),
              ("emulator 1 s", "farm-slow", FARM_SLOW_TOML, "slow_queues")]


def farm_pg_row(ctx: "Ctx", k: int, repo: str, n: int, m: int, tag: str) -> dict:
    """k workers, each with a data directory of its own (as on separate hosts: nothing shared
    but the database), drain n waiting queues of `repo`; then, when m > 0, m queues are
    submitted one at a time to the idle workers (wake-up)."""
    body = {"repo": repo, "branch": "main", "scenarios": ["bench/farm.xml"]}
    db = PgDatabase(ctx, f"farm{k}{tag}")
    d = ctx.work / f"data-farm-pg{k}{tag}"
    ta, workers = None, []
    try:
        ta = TestArena(ctx, "serve", d, extra=["--database", db.url])
        ids = submit_many(ta.base, body, n)

        def start():
            workers.extend(
                WorkerProc(ctx, d / f"worker-{i}", db.url, f"worker-{i}",
                           config=d / "bench-config.toml") for i in range(k))

        drain = farm_drain(ta.api, ids, start)
        wait_workers(ta.api, [w.proc.pid for w in workers])
        return {"workers": k, "drain": drain, "wake": farm_wakeup(ta, repo, m) if m else None}
    finally:
        for w in workers:
            w.stop()
        if ta:
            ta.stop()
        db.drop()


def bench_farm(ctx: "Ctx") -> dict:
    sz = ctx.size
    if not ctx.git_port:
        start_git_daemon(ctx)
    repos = {load: make_farm_repo(ctx, name, toml) for load, name, toml, _ in FARM_LOADS}
    m = sz["wake_queues"]
    rows: dict[tuple[str, str], dict] = {}
    kmax = max(sz["farm_workers"])
    for load, name, _, size_key in FARM_LOADS:
        n = sz[size_key]
        for k in sz["farm_workers"]:
            label = f"PostgreSQL, {k} worker{'s' if k > 1 else ''}"
            wake = m if load == "own work" else 0
            say(f"8: farm ({load}): {label}, a data directory each: {n} queues waiting, then "
                f"the workers start" + (f"; then {wake} queues one at a time" if wake else ""))
            rows[(label, load)] = farm_pg_row(ctx, k, repos[load], n, wake,
                                              "" if load == "own work" else "slow")
    label = "SQLite, `testarena up`"
    n = sz["farm_queues"]
    say(f"8: farm (own work): {label}: {n} queues submitted to `serve`, then `up` on the same "
        f"data directory; then {m} queues one at a time")
    body = {"repo": repos["own work"], "branch": "main", "scenarios": ["bench/farm.xml"]}
    d = ctx.work / "data-farm-sqlite"
    ta = TestArena(ctx, "serve", d)
    try:
        ids = submit_many(ta.base, body, n)
    finally:
        ta.stop()
    up: list[TestArena] = []
    try:
        # `up` serves the API itself: start it, then follow the drain through it.
        c0 = cpu_times()
        up.append(TestArena(ctx, "up", d))
        drain = farm_drain(up[0].api, ids, lambda: None)
        c1 = cpu_times()
        drain["cpu_busy"] = 1 - (c1[1] - c0[1]) / max(1, c1[0] - c0[0])
        rows[(label, "own work")] = {"workers": 1, "drain": drain,
                                     "wake": farm_wakeup(up[0], repos["own work"], m)}
    finally:
        for t in up:
            t.stop()
    sq_label = label

    def steady(k: int, load: str) -> float:
        return rows[(f"PostgreSQL, {k} worker{'s' if k > 1 else ''}", load)]["drain"][
            "steady_rate"]

    scaling = {load: ratio(steady(kmax, load), steady(1, load)) for load, *_ in FARM_LOADS}
    cores = os.cpu_count() or 1
    details = [
        "Two repositories whose build is `true`, served by `git daemon` on loopback, with one "
        "case each (send `hello`, expect `^hello$`): **own work**, whose \"emulator\" is `cat`, "
        "so a queue costs TestArena's own work only (claim, fetch into the mirror, checkout, "
        "build, start the emulator in the sandbox, one case, reports, logs shipped to the "
        "database) and is bound by the CPU; and **emulator 1 s**, whose emulator is "
        "`sh -c 'sleep 1; exec cat'`: a queue then spends most of its time waiting for its "
        "emulator, as on a real farm where each worker host runs its own emulators, so the "
        "rate shows whether claiming (the database) limits the farm. PostgreSQL: a fresh "
        "database per row, one `testarena serve` and separate `testarena worker --concurrency "
        "1` processes, each with a data directory of its own (as on separate hosts: nothing "
        "shared but the database; the server reads the logs from the database). SQLite: "
        "`testarena up` (server and worker in one process).",
        "",
        "**Claim throughput.** The queues are submitted (8 parallel POST loops) while no worker "
        "runs, then the workers start and drain them. From the API's timestamps: overall = "
        "queues / (first `started_at` → last `finished_at`); steady = the middle 80% of the "
        "queues by `finished_at` over the time they took (leaves out the workers' start and "
        "the first fetch, which fills the mirror, and the tail). CPU busy: the whole "
        f"machine's, from /proc/stat, during the drain ({cores} cores = {cores * 100}%). "
        "Fetch: from each queue's log (through the API): `# phase: cloning` → `# testing "
        "commit` (waiting for the mirror's lock, then `git fetch`).",
        "",
        "| workload | setup | queues | overall queues/s | **steady queues/s** | × 1 worker | "
        "one queue on its worker p50 ms | fetch p50 ms | CPU busy | queues per worker |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (label, load), r in rows.items():
        dd = r["drain"]
        fw = f"{pct(dd['fetch_wait_ms'], 50):.0f}" if dd["fetch_wait_ms"] else "—"
        one = steady(1, load)
        details.append(
            f"| {load} | {label} | {dd['n']} | {dd['rate']:.1f} | **{dd['steady_rate']:.2f}** "
            f"| {ratio(dd['steady_rate'], one):.2f}× | {pct(dd['service_ms'], 50):.0f} | {fw} "
            f"| {dd['cpu_busy'] * cores * 100:.0f}% | "
            f"{', '.join(map(str, dd['per_worker']))} |")
    details += [
        "",
        f"**Wake-up.** Then, with the same workers idle (registered, waiting for work), {m} "
        "queues (own work) are submitted one at a time (0.3 s apart, each waited for). Steps "
        "from the API's `created_at`/`started_at` and the `# …` event lines of the queue log "
        "read through `GET /api/v1/queues/{id}/log` (ms; the timestamps have ms resolution). "
        "\"POST answered\" is the client's clock when the answer arrived (same machine): "
        "negative means the queue was claimed before the answer reached the client.",
        "",
        "| setup | step | p50 ms | p95 ms | max ms |",
        "|---|---|---:|---:|---:|",
    ]
    for (label, _), r in rows.items():
        if not r["wake"]:
            continue
        for key, step in WAKE_STEPS:
            xs = r["wake"][key]
            details.append(f"| {label} | {step} | {pct(xs, 50):.0f} | {pct(xs, 95):.0f} | "
                           f"{max(xs):.0f} |")
    claims = {label: pct(r["wake"]["claim"], 50) for (label, _), r in rows.items()
              if r["wake"]}
    pg_claim = max(v for lbl, v in claims.items() if lbl.startswith("PostgreSQL"))
    s_emu, s_own = scaling["emulator 1 s"], scaling["own work"]
    details += [
        "",
        f"Scaling {kmax} workers / 1 worker (steady queues/s): **{s_emu:.2f}×** with the "
        f"1-second emulator, **{s_own:.2f}×** with TestArena's own work only. Goals: "
        f"near-linear (≥ {0.8 * kmax:.1f}×, i.e. 80% of {kmax}×), judged on the 1-second "
        "emulator, where each worker's queue time is mostly its emulator's, as on separate "
        "hosts; and wake-up (submit → claimed) p50 ≤ 20 ms on PostgreSQL with every number of "
        f"workers (the worst p50 counts). The own-work figure is bounded by the {cores} cores "
        "the workers share here (see CPU busy), not by the claim.",
    ]
    fig = ", ".join(f"{k}w {steady(k, 'emulator 1 s'):.2f}/s" for k in sz["farm_workers"])
    own = ", ".join(f"{k}w {steady(k, 'own work'):.1f}/s" for k in sz["farm_workers"])
    sq = rows[(sq_label, "own work")]["drain"]["steady_rate"]
    met = s_emu is not None and s_emu >= 0.8 * kmax and pg_claim <= 20
    return result(8, f"PostgreSQL, 1-s emulator: {fig} ({kmax}w/1w {s_emu:.2f}×); own work "
                  f"only: {own} ({s_own:.2f}×, {cores} cores); SQLite {sq:.1f}/s; wake-up p50 "
                  f"{pg_claim:.0f} ms (PostgreSQL, worst), {claims[sq_label]:.0f} ms (SQLite)",
                  "1 worker on PostgreSQL", s_emu,
                  f"{kmax}w ≥ {0.8 * kmax:.1f}× 1w; wake-up p50 ≤ 20 ms", met, details,
                  {f"{lbl} ({load})": r for (lbl, load), r in rows.items()})


def case_marks(data: bytes) -> tuple[list[bytes], int]:
    """In whole log lines `data`: the timestamps of the `# case … started (timeout …` lines, in
    order, and how many `| spam done` lines there are. Found with `bytes.find` rather than a
    regular expression over every byte: that cost the following client ~110 ms of CPU per
    case of `spam 200000` (16 MB of log), taken from the two cores QEMU and TestArena share."""
    starts, i = [], data.find(b"#")  # one byte: memchr
    while i >= 0:
        begin = data.rfind(b"\n", 0, i) + 1
        end = data.find(b"\n", i)
        end = len(data) if end < 0 else end
        stamp = data[begin:i - 1]
        if data[i - 1:i + 7] == b" # case " and stamp and b" " not in stamp \
                and b" started (timeout" in data[i:end]:
            starts.append(stamp)
        i = data.find(b"#", end)
    dones, i = 0, data.find(b"spam done")
    while i >= 0:
        begin = data.rfind(b"\n", 0, i) + 1
        tail = data[i + len(b"spam done"):i + len(b"spam done") + 2]
        line_end = tail[:1] in (b"\n", b"") or tail == b"\r\n" or tail == b"\r"
        if data[i - 3:i] == b" | " and b" " not in data[begin:i - 3] and line_end:
            dones += 1
        i = data.find(b"spam done", i + 1)
    return starts, dones


class LogFollower(threading.Thread):
    """Follows a queue's log through `GET /api/v1/queues/{id}/log` as a client would (the next
    offset at once while there is more, 20 ms apart when there is not), and notes when each
    case's `spam done` line arrived (client clock) and each case's start (its `# case …
    started` line's timestamp)."""

    def __init__(self, api: Api, qid: int):
        super().__init__(daemon=True)
        self.api, self.qid = api, qid
        self.starts: list[dt.datetime] = []
        self.dones: list[dt.datetime] = []
        self.done_at: dt.datetime | None = None
        self.error: BaseException | None = None
        self.bytes = 0

    def run(self):
        try:
            off, rest = 0, b""
            while True:
                body, hdr = api_raw(self.api, f"/api/v1/queues/{self.qid}/log?offset={off}")
                now = dt.datetime.now(dt.timezone.utc)
                if body:
                    off = int(hdr["x-next-offset"])
                    self.bytes += len(body)
                    data = rest + body
                    cut = data.rfind(b"\n") + 1
                    data, rest = data[:cut], data[cut:]
                    starts, dones = case_marks(data)
                    self.starts += [parse_time(t.decode()) for t in starts]
                    self.dones += [now] * dones
                elif hdr.get("x-queue-status") not in ("waiting", "running"):
                    self.done_at = now
                    return
                else:
                    time.sleep(0.02)
        except BaseException as e:  # noqa: BLE001
            self.error = e


def bench_pg_throughput(ctx: "Ctx") -> dict:
    sz = ctx.size
    if not ctx.git_port:
        start_git_daemon(ctx)
    if not ctx.repo:
        ctx.repo = make_repo(ctx, "bench")
    n = sz["spam_lines"]
    fw = shlex.quote(str(ctx.fw))
    script = shlex.quote(str(BENCH_DIR / "baseline_throughput.sh"))
    out_bytes = int(run([BENCH_DIR / "baseline_throughput.sh", ctx.fw, str(n)]).strip()) - \
        int(run([BENCH_DIR / "baseline_throughput.sh", ctx.fw, "0"]).strip())
    db = PgDatabase(ctx, "console")
    d = ctx.work / "data-pg-console"
    ta, w = None, None
    durs, api_t, lags, raw_t, boot_t, log_bytes = [], [], [], [], [], []
    cpu_srv, cpu_wrk = [], []
    try:
        ta = TestArena(ctx, "serve", d, extra=["--database", db.url])
        w = WorkerProc(ctx, d / "worker", db.url, "worker", config=d / "bench-config.toml")
        wait_workers(ta.api, [w.proc.pid])
        rounds = sz["pg_tp_rounds"]
        for i in range(rounds):
            say(f"9: throughput on PostgreSQL: round {i + 1}/{rounds}: {sz['spam_cases']} cases "
                f"of 'spam {n}' (serve + worker), the log followed through the API; then the "
                "raw pipe (hyperfine)")
            c_srv, c_wrk = cpu_ms(ta.proc.pid), cpu_ms(w.proc.pid)
            q = ta.submit(ctx.repo, ["bench/throughput.xml"])
            f = LogFollower(ta.api, q["id"])
            f.start()
            q = ta.wait(q["id"])
            f.join(600)
            cpu_srv.append((cpu_ms(ta.proc.pid) - c_srv) / sz["spam_cases"])
            cpu_wrk.append((cpu_ms(w.proc.pid) - c_wrk) / sz["spam_cases"])
            if f.is_alive() or f.error or f.done_at is None:
                raise BenchError(f"following queue {q['id']}'s log failed: {f.error}")
            if q["status"] != "passed":
                raise BenchError(failed_summary(ta.api, [q]))
            cases = [c for t in q["tasks"] for c in t["cases"]]
            if len(f.starts) != len(cases) or len(f.dones) != len(cases):
                raise BenchError(f"queue {q['id']}: the log shows {len(f.starts)} case starts "
                                 f"and {len(f.dones)} `spam done` for {len(cases)} cases")
            durs += [float(c["duration_ms"]) for c in cases]
            api_t += [(b - a).total_seconds() * 1000 for a, b in zip(f.starts, f.dones)]
            lags.append((f.done_at - parse_time(q["finished_at"])).total_seconds() * 1000)
            log_bytes.append(f.bytes)
            wu = 1 if i == 0 else 0
            raw_t += time_command(ctx, "raw-spam-pg", f"{script} {fw} {n}", sz["raw_runs"],
                                  warmup=wu)["values"]
            boot_t += time_command(ctx, "raw-boot-pg", f"{script} {fw} 0", sz["raw_runs"],
                                   warmup=wu)["values"]
    finally:
        if w:
            w.stop()
        if ta:
            ta.stop()
        db.drop()
    ta_s, api_s, raw, boot = stats(durs), stats(api_t), stats(raw_t), stats(boot_t)
    raw_stream = raw["median"] - boot["median"]
    if raw_stream < max(1.0, 0.05 * raw["median"]):
        raw_stream = float("nan")  # only in --tiny mode: too little output to time
    mbps = lambda ms: out_bytes / 1e6 / (ms / 1000) if ms else float("inf")  # noqa: E731
    r_api = None if math.isnan(raw_stream) else ratio(raw_stream, api_s["median"])
    r_case = None if math.isnan(raw_stream) else ratio(raw_stream, ta_s["median"])
    details = [
        f"As benchmark 1, but `testarena serve` and one `testarena worker` as two processes on a "
        f"fresh PostgreSQL database, the worker with a data directory of its own (the console "
        f"reaches the server through the database only). Output per case: "
        f"{out_bytes / 1e6:.1f} MB (`spam {n}`). {sz['pg_tp_rounds']} rounds, each: one queue "
        f"of {sz['spam_cases']} such cases, then {sz['raw_runs']} raw runs and "
        f"{sz['raw_runs']} boot-only runs. While each queue runs, a client follows its log "
        "through `GET /api/v1/queues/{id}/log` (next page at once while there is more; 20 ms "
        "apart when there is not), as `testarena logs -f` and the dashboard do.",
        f"- **End to end** (figure): from the case's `# case … started` line (its timestamp) "
        f"until the client has read the case's `spam done` line through the API: {fmt(api_s)} "
        f"→ **{mbps(api_s['median']):.1f} MB/s**.",
        f"- The worker's own view: case `duration_ms` {fmt(ta_s)} → "
        f"{mbps(ta_s['median']):.1f} MB/s"
        + ("" if r_case is None else f" ({r_case:.2f}× raw)") + ".",
        f"- Raw pipe: {fmt(raw)}; boot and exit alone: {fmt(boot)}; streaming = difference "
        f"of medians = {raw_stream:.0f} ms → **{mbps(raw_stream):.1f} MB/s**.",
        "- Ratio = end-to-end throughput / raw throughput.",
        f"- The queue's `finished_at` → the client has read the whole log: {fmt(stats(lags))}; "
        f"log read per queue: {statistics.median(log_bytes) / 1e6:.1f} MB.",
        f"- CPU time per case (median over the queues; QEMU not included): the worker process "
        f"{statistics.median(cpu_wrk):.0f} ms, the server process {statistics.median(cpu_srv):.0f}"
        " ms (serving the log to the client, and the status polls). Benchmark 1 runs server "
        "and worker in one `testarena up` on SQLite with no client following the log.",
    ]
    return result(9, f"{mbps(api_s['median']):.1f} MB/s end to end through the API "
                  f"({api_s['median']:.0f} ms/case; `duration_ms` {ta_s['median']:.0f} ms)",
                  "n/a (too little output to time)" if r_api is None
                  else f"{mbps(raw_stream):.1f} MB/s ({raw_stream:.0f} ms)", r_api, "≥ 0.95×",
                  None if r_api is None else r_api >= 0.95, details,
                  {"api_ms": api_s, "case_ms": ta_s, "raw_ms": raw, "boot_ms": boot,
                   "bytes": out_bytes, "lag_ms": lags, "log_bytes": log_bytes,
                   "cpu_server_ms": cpu_srv, "cpu_worker_ms": cpu_wrk})


def crashed(num: int, e: BaseException) -> dict:
    tb = traceback.format_exc()
    say(f"{num}: CRASHED: {e}")
    return {"num": num, "name": BENCHMARKS[num], "crashed": f"{e}", "traceback": tb}


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def file_create_us(d: Path, n: int = 500) -> float:
    """Mean µs to create, write and close a small file in a new directory under `d`."""
    sub = d / "create-test"
    sub.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        with open(sub / f"f{i}.log", "w") as f:
            f.write("x" * 100)
    us = (time.perf_counter() - t0) / n * 1e6
    shutil.rmtree(sub, ignore_errors=True)
    return us


def machine_info(ctx: Ctx) -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    os_name = "?"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": f"{int(mem) / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "file_create_us": file_create_us(ctx.work),
        "versions": {
            "testarena": first_line([ctx.bin, "--version"]),
            "qemu": first_line(["qemu-system-xtensa", "--version"]),
            "git": first_line(["git", "--version"]),
            "hyperfine": first_line(["hyperfine", "--version"]),
            "wrk": first_line(["wrk", "-v"]),
            "chromium": first_line(["chromium", "--version"]),
            "python": platform.python_version(),
            "node": first_line(["node", "--version"]),
        },
    }


def previous_report(path: Path, skip: set[int]) -> dict:
    """From an earlier full report: the table row and the section of each benchmark not in
    `skip`, and that run's date and commit; so that a full run of some benchmarks (--only,
    --skip) rewrites those and keeps the others as they were measured."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    if "mode: full" not in text:
        return {}
    rows, sections, cur = {}, {}, None
    for line in text.splitlines():
        m = re.match(r"^\| (\d+) \| ", line)
        # The summary table only: the sections' tables have rows such as "| 10 | 400 |" too.
        if m and int(m.group(1)) in BENCHMARKS and not sections:
            rows[int(m.group(1))] = line
        m = re.match(r"^## (\d+)\. ", line)
        if m:
            cur = int(m.group(1))
            sections[cur] = []
        elif line.startswith("## ") or line.startswith("# "):
            cur = None
        if cur is not None:
            sections[cur].append(line)
    date = re.search(r"^- Date: ([^;]+);", text, re.M)
    commit = re.search(r"^- Commit: (.*)$", text, re.M)
    own = f"{date.group(1) if date else '?'}, commit {commit.group(1) if commit else '?'}"
    # Benchmarks that report itself kept from an earlier run keep saying so.
    origin = {}
    for m in re.finditer(r"; ([\d, ]+) (?:is|are) kept from the run of (.*?) \(its machine",
                         text):
        for n in m.group(1).split(","):
            origin[int(n)] = m.group(2)
    return {"kept": {n: {"row": rows[n], "section": sections.get(n, []),
                         "from": origin.get(n, own)}
                     for n in rows if n not in skip}}


def render(ctx: Ctx, info: dict, results: list[dict], load_end: str, elapsed: float,
           previous: dict | None = None) -> str:
    mode = "tiny (harness check: sizes far too small for the figures to mean anything)" \
        if ctx.tiny else "full"
    v = info["versions"]
    out = [
        "# TestArena benchmarks",
        "",
        "Written by `bench/run` (`make bench`); do not edit by hand. Each figure is measured "
        "together with its baseline in the same run on the same machine; the machines are "
        "noisy, so the ratio is what counts.",
        "",
        f"- Date: {info['date']}; mode: {mode}; run took {elapsed / 60:.1f} min",
        f"- Commit: {info['commit']}",
        f"- Machine: {info['cores']} cores, {info['cpu']}, {info['memory']} RAM; {info['os']}",
        f"- Load average (1, 5, 15 min) at start: {info['load']}; at end: {load_end}",
        f"- Creating a small file in the scratch directory (which holds the data directory): "
        f"{info['file_create_us']:.0f} µs",
        f"- Versions: {v['testarena']}; {v['qemu']}; {v['git']}; {v['hyperfine']}; "
        f"{v['wrk'].split(' [')[0]}; {v['chromium']}; Python {v['python']}; node {v['node']}",
        f"- Timing of whole commands: {', '.join(sorted(ctx.tools_used)) or '-'}",
    ]
    kept = (previous or {}).get("kept", {})
    if kept:
        groups: dict[str, list[int]] = {}
        for n in sorted(kept):
            groups.setdefault(kept[n]["from"], []).append(n)
        out.append(f"- This run measured benchmark(s) "
                   f"{', '.join(str(r['num']) for r in sorted(results, key=lambda r: r['num']))}"
                   " only" + "".join(
                       f"; {', '.join(map(str, ns))} {'is' if len(ns) == 1 else 'are'} kept "
                       f"from the run of {frm} (its machine and versions may differ)"
                       for frm, ns in groups.items()))
    out += [
        "",
        "| # | Benchmark | TestArena | Baseline | Ratio | Goal | Met |",
        "|---|---|---|---|---:|---|---|",
    ]
    for r in sorted(results + [{"num": n, "kept": k} for n, k in kept.items()],
                    key=lambda r: r["num"]):
        if r.get("kept"):
            out.append(r["kept"]["row"])
            continue
        if r.get("crashed"):
            out.append(f"| {r['num']} | {r['name']} | **crashed** | | | | |")
            continue
        rt = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        # Tiny sizes say nothing about the goals.
        met = "—" if r["met"] is None or ctx.tiny else "yes" if r["met"] else "**no**"
        out.append(f"| {r['num']} | {r['name']} | {r['figure']} | {r['baseline']} | {rt} | "
                   f"{r['goal']} | {met} |")
    out += ["", "Ratios: 1 = TestArena's throughput relative to the raw pipe (higher is better); "
            "2, 3 = TestArena's time relative to the bare script (lower is better); 4 = warm "
            "checkout time relative to a fresh clone (lower is better); 5 = TestArena's req/s "
            "relative to a static file server; 6 = peak RSS at the largest output relative to the "
            "smallest (1 = flat); 8 = queues/s of the most workers relative to one worker "
            "on PostgreSQL, with the 1-second emulator; 9 = end-to-end throughput on PostgreSQL relative to the raw pipe; "
            "10 = claims/s of the most workers (50) relative to one (each queue's emulator takes 0.5 s); "
            "11 = the server's peak RSS with the viewers relative to the same queues without them.",
            ""]
    for r in sorted(results + [{"num": n, "kept": k} for n, k in kept.items()],
                    key=lambda r: r["num"]):
        if r.get("kept"):
            out += r["kept"]["section"]
            continue
        out.append(f"## {r['num']}. {r['name']}")
        out.append("")
        if r.get("crashed"):
            out += ["Crashed:", "", "```", r["traceback"].rstrip(), "```", ""]
            continue
        out += r["details"] + [""]
    notes = BENCH_DIR / "NOTES.md"
    if notes.exists() and not ctx.tiny:
        out += [notes.read_text().rstrip(), ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the testarena binary")
    ap.add_argument("--fw", required=True, help="the prebuilt demo firmware (build/fw.elf)")
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--out", help="where to write the markdown report")
    ap.add_argument("--json", help="where to write the raw figures")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: checks the harness runs")
    ap.add_argument("--quiet", action="store_true", help="do not print the report (only write it)")
    ap.add_argument("--only", default="", help="comma-separated benchmark numbers to run")
    ap.add_argument("--skip", default="", help="comma-separated benchmark numbers to skip")
    args = ap.parse_args()
    ctx = Ctx(args)
    ctx.out_path = Path(args.out).resolve() if args.out else None  # benchmark 10's plot goes beside it
    # Benchmarks 10 and 11 live in modules of their own that use this one's helpers.
    import farm_sim  # noqa: E402
    import memory  # noqa: E402
    farm_sim.use(sys.modules[__name__])
    memory.use(sys.modules[__name__])
    want = set(BENCHMARKS)
    if args.only:
        want = {int(x) for x in args.only.split(",") if x.strip()}
    want -= {int(x) for x in args.skip.split(",") if x.strip()}
    info = machine_info(ctx)
    t_start = time.monotonic()
    results: list[dict] = []
    try:
        for num, fn in ((1, bench_throughput), (2, lambda c: bench_cases(c, 2)),
                        (3, lambda c: bench_cases(c, 3)), (4, bench_dispatch)):
            if num in want:
                try:
                    results.append(fn(ctx))
                except Exception as e:  # noqa: BLE001
                    results.append(crashed(num, e))
        if ctx.main is not None:
            ctx.main.stop()
            ctx.main = None
        if want & {5, 7}:
            try:
                results += bench_api_and_dashboard(ctx, want)
            except Exception as e:  # noqa: BLE001
                results.append(crashed(5 if 5 in want else 7, e))
        if 6 in want:
            try:
                results.append(bench_memory(ctx))
            except Exception as e:  # noqa: BLE001
                results.append(crashed(6, e))
        for num, fn in ((8, bench_farm), (9, bench_pg_throughput),
                        (10, farm_sim.bench_farm_sim), (11, memory.bench_live_consoles)):
            if num in want:
                try:
                    results.append(fn(ctx))
                except Exception as e:  # noqa: BLE001
                    results.append(crashed(num, e))
    finally:
        ctx.procs.stop_all()
    left = processes_under(ctx.work)
    for pid, cmd in left:
        say(f"left running after the benchmarks (killing): {pid} {cmd}")
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    previous = {}
    if not ctx.tiny and args.out and (args.only or args.skip):
        previous = previous_report(Path(args.out), {r["num"] for r in results})
    report = render(ctx, info, results, load_end, time.monotonic() - t_start, previous)
    if left:
        report += "\n**Processes were left running under the work directory: " + \
            "; ".join(c for _, c in left) + "**\n"
    if not args.quiet:
        print()
        print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")
        say(f"wrote {args.out}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"info": info, "results": results}, indent=1, default=str) + "\n")
    bad = [r for r in results if r.get("crashed")]
    if bad or left:
        say(f"{len(bad)} benchmark(s) crashed" + (", processes were left running" if left else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
