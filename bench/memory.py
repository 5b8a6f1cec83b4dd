"""Benchmark 11: the server's memory with 100 live consoles open (issue 14, goal 7).

`testarena serve` on PostgreSQL with separate `testarena worker` processes (so the server's RSS
is its own); 100 queues run at once, each with a console that prints 10 lines every 200 ms
(the "emulator" is `cat`, and the scenario sends it the lines and sleeps: no process is forked
per line); then 100 SSE clients, one per running queue, follow
`GET /api/v1/queues/{id}/log/stream`. The server's RSS is sampled every 100 ms before the
queues, with the queues running and no viewer, and with the 100 viewers.

Imported by bench.py, whose helpers it uses (handed over by bench.py: see `use`). Standard library only.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import threading
import time

from types import ModuleType

# bench.py's module, whose helpers this one uses: bench.py hands itself over (`use`) before it
# calls in, so that the two do not import each other.
b: ModuleType


def use(helpers: ModuleType) -> None:
    """Takes bench.py's module as the helpers to use."""
    global b
    b = helpers

LIVE_TOML = """\
# Written by bench/memory.py: the console is `cat`; the scenario sends it the lines it echoes.
[build]
command = "true"
[emulator]
command = "cat"
console = "stdio"
"""

SIZES = {
    # queues (one viewer each), seconds with queues but no viewer, seconds with the viewers,
    # workers and the concurrency of each (queues = workers * concurrency)
    "full": {"queues": 100, "quiet_s": 10.0, "watch_s": 30.0, "workers": 2, "concurrency": 50,
             "scenario_s": 150},
    "tiny": {"queues": 3, "quiet_s": 1.0, "watch_s": 2.0, "workers": 1, "concurrency": 3,
             "scenario_s": 60},
}

LINES_PER_TICK = 10
TICK_MS = 200


def live_xml(seconds: int) -> str:
    """One case that makes the console print LINES_PER_TICK lines of ~80 bytes every TICK_MS ms
    for `seconds`, then passes."""
    ticks = seconds * 1000 // TICK_MS
    steps = []
    for t in range(ticks):
        payload = "&#10;".join(f"tick {t:05d} line {i} " + "x" * 60
                               for i in range(LINES_PER_TICK))
        # Expect the tick's last line, so the worker's unread console stays small.
        steps.append(f'    <send>{payload}</send>\n'
                     f'    <expect timeout="30">^tick {t:05d} line {LINES_PER_TICK - 1} x</expect>\n'
                     f'    <sleep ms="{TICK_MS}"/>\n')
    return (f'<scenario name="live consoles" timeout="{seconds + 120}">\n'
            f'  <testcase id="TC_LIVE" timeout="{seconds + 60}">\n' + "".join(steps)
            + "  </testcase>\n</scenario>\n")


class Viewer(threading.Thread):
    """One SSE client following a queue's log until told to stop; counts what it gets."""

    def __init__(self, host: str, port: int, qid: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.host, self.port, self.qid, self.stop = host, port, qid, stop
        self.bytes = 0
        self.ticks = 0
        self.error = ""
        self.head = b""  # the start of the answer, to tell what a viewer without ticks got
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            s = socket.create_connection((self.host, self.port), timeout=30)
        except OSError as e:
            self.error = str(e)
            self.connected.set()
            return
        s.settimeout(0.5)
        s.sendall(f"GET /api/v1/queues/{self.qid}/log/stream HTTP/1.1\r\nhost: {self.host}\r\n"
                  f"accept: text/event-stream\r\n\r\n".encode())
        while not self.stop.is_set():
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                self.error = str(e)
                break
            if not chunk:
                break
            if not self.head:
                self.head = chunk[:160]
            self.bytes += len(chunk)
            self.ticks += chunk.count(b" line 0 x")
            self.connected.set()
        s.close()


def metric(api, name: str) -> float | None:
    text = api.request("GET", "/metrics").decode(errors="replace")
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


class Sampler(threading.Thread):
    """VmRSS of a process every 100 ms, tagged with the current phase."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "idle"
        self.samples: list[tuple[float, str, int]] = []
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            v = b.proc_status(self.pid).get("VmRSS")
            if v:
                self.samples.append((time.monotonic() - self.t0, self.phase, v))
            self.stop_ev.wait(0.1)

    def of(self, phase: str) -> list[int]:
        return [v for _, p, v in self.samples if p == phase]


def bench_live_consoles(ctx) -> dict:
    sz = SIZES["tiny" if ctx.tiny else "full"]
    n = sz["queues"]
    if not ctx.git_port:
        b.start_git_daemon(ctx)
    repo = b.make_farm_repo(ctx, "live", LIVE_TOML)
    # make_farm_repo committed bench/farm.xml; add the live scenario to the served copy.
    src = ctx.work / "src" / "live"
    (src / "bench" / "live.xml").write_text(live_xml(sz["scenario_s"]))
    b.git(src, "add", "-A")
    b.git(src, "commit", "-qm", "live consoles")
    b.git(ctx.work / "served" / "live.git", "fetch", "-q", str(src), "+main:main")
    db = b.PgDatabase(ctx, "live")
    d = ctx.work / "data-live"
    ta, procs, viewers = None, [], []
    stop = threading.Event()
    try:
        ta = b.TestArena(ctx, "serve", d, extra=["--database", db.url])
        sampler = Sampler(ta.proc.pid)
        sampler.start()
        time.sleep(1.0)
        idle_hwm = ta.vm().get("VmHWM", 0)
        b.say(f"11: live consoles: {n} queues on {sz['workers']} worker(s) × concurrency "
              f"{sz['concurrency']}")
        conf = d / "bench-config.toml"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESTARENA_")}
        for i in range(sz["workers"]):
            wd = d / f"worker-{i}"
            wd.mkdir(parents=True, exist_ok=True)
            with open(wd / f"worker-{i}.log", "ab") as log:
                procs.append(ctx.procs.spawn(
                    [ctx.bin, "worker", "--config", conf, "--data-dir", wd, "--database", db.url,
                     "--concurrency", str(sz["concurrency"])],
                    stdout=subprocess.DEVNULL, stderr=log, env=env))
        ids = b.submit_many(ta.base, {"repo": repo, "branch": "main",
                                      "scenarios": ["bench/live.xml"]}, n)
        sampler.phase = "starting"
        deadline = time.monotonic() + 300
        while True:
            running = ta.api.get("/api/v1/queues?status=running&limit=500")["queues"]
            ready = [q for q in running if q.get("phase") == "testing"]
            if len(ready) >= n:
                break
            done = [q for q in ta.api.get("/api/v1/queues?limit=500")["queues"]
                    if q["status"] not in ("waiting", "running")]
            if done:
                raise b.BenchError(f"queue {done[0]['id']} ended {done[0]['status']} before "
                                   f"the viewers: {done[0].get('error')}")
            if time.monotonic() > deadline:
                raise b.BenchError(f"only {len(ready)} of {n} queues were testing after 300 s")
            time.sleep(0.5)
        sampler.phase = "running, no viewer"
        time.sleep(sz["quiet_s"])
        host, port = ta.base.removeprefix("http://").rsplit(":", 1)
        viewers = [Viewer(host, int(port), qid, stop) for qid in ids]
        sampler.phase = "connecting"
        for v in viewers:
            v.start()
        for v in viewers:
            if not v.connected.wait(60) or v.error:
                raise b.BenchError(f"viewer of queue {v.qid}: nothing within 60 s {v.error}")
        sampler.phase = "viewers"
        t_watch = time.monotonic()
        b0 = sum(v.bytes for v in viewers)
        time.sleep(sz["watch_s"] / 2)
        live_logs = metric(ta.api, "testarena_live_logs")
        live_viewers = metric(ta.api, "testarena_live_log_viewers")
        time.sleep(sz["watch_s"] / 2)
        watch_s = time.monotonic() - t_watch
        b1 = sum(v.bytes for v in viewers)
        still = ta.api.get("/api/v1/queues?status=running&limit=500")["queues"]
        still_running = len({q["id"] for q in still} & set(ids))
        hwm_viewers = ta.vm().get("VmHWM", 0)
        stop.set()
        for v in viewers:
            v.join(5)
        sampler.phase = "viewers closed"
        time.sleep(2.0)
        after = ta.vm().get("VmRSS", 0)
        for qid in ids:
            try:
                ta.api.post(f"/api/v1/queues/{qid}/abort", {})
            except b.BenchError:
                pass
        sampler.stop_ev.set()
        sampler.join()
        cpu_server = b.cpu_ms(ta.proc.pid)
    finally:
        stop.set()
        for p in procs:
            b.Procs.stop(p, grace=20)
        if ta:
            ta.stop()
        db.drop()
    phases = ["idle", "starting", "running, no viewer", "connecting", "viewers",
              "viewers closed"]
    rows = []
    for ph in phases:
        xs = sampler.of(ph)
        if xs:
            rows.append((ph, min(xs), statistics.median(xs), max(xs), len(xs)))
    peak_quiet = max(sampler.of("running, no viewer") or [0])
    peak_view = max((sampler.of("connecting") or [0]) + (sampler.of("viewers") or [0]))
    rate = (b1 - b0) / watch_s / max(1, len(viewers))
    got = [v.ticks for v in viewers]
    details = [
        f"`testarena serve` on PostgreSQL (a fresh database) and {sz['workers']} separate "
        f"`testarena worker --concurrency {sz['concurrency']}` processes run {n} queues at "
        f"once; each queue's console (`cat`, sent {LINES_PER_TICK} lines of ~80 bytes every "
        f"{TICK_MS} ms by its scenario: ~{LINES_PER_TICK * 85 * 1000 // TICK_MS // 1000} KB/s per "
        f"console, ~{n * LINES_PER_TICK * 85 * 1000 // TICK_MS // 1000} KB/s in all) is shipped "
        "into the database by its worker. Once every queue is testing, the server runs "
        f"{sz['quiet_s']:.0f} s with no viewer, then {n} SSE clients (one per queue, raw "
        "sockets, reading from offset 0) follow `GET /api/v1/queues/{id}/log/stream` for "
        f"{sz['watch_s']:.0f} s. VmRSS of the server process sampled every 100 ms "
        "(/proc/PID/status); VmHWM is its peak since it started.",
        "",
        "| phase | RSS min | median | **max** | samples |",
        "|---|---:|---:|---:|---:|",
    ]
    for ph, lo, med, hi, k in rows:
        details.append(f"| {ph} | {lo / 1024:.1f} MiB | {med / 1024:.1f} MiB | "
                       f"**{hi / 1024:.1f} MiB** | {k} |")
    details += [
        "",
        f"- VmHWM: {idle_hwm / 1024:.1f} MiB idle, **{hwm_viewers / 1024:.1f} MiB** after the "
        f"{n} viewers; RSS {after / 1024:.1f} MiB 2 s after they closed.",
        f"- With the viewers open, `/metrics` said `testarena_live_logs` {live_logs:.0f}, "
        f"`testarena_live_log_viewers` {live_viewers:.0f}; "
        f"{still_running} of {n} queues were still running at the end of the window.",
        f"- Each viewer received {rate / 1000:.1f} KB/s on average during the window "
        f"({(b1 - b0) / 1e6:.1f} MB in all); ticks seen per viewer: min {min(got)}, max "
        f"{max(got)} (each tick is {LINES_PER_TICK} lines).",
        f"- The server's CPU over the whole benchmark: {cpu_server / 1000:.1f} s.",
        f"- Growth from no viewer to {n} viewers: "
        f"{(peak_view - peak_quiet) / 1024:+.1f} MiB (peak RSS).",
    ]
    for v in viewers:
        if v.ticks == 0:
            details.append(f"- The viewer of queue {v.qid} saw no tick: {v.bytes} bytes, error "
                           f"{v.error or 'none'}, its answer began {v.head!r}.")
    peak = max(hwm_viewers, peak_view) / 1024
    met = peak < 100 and still_running == n and min(got) > 0
    return b.result(11, f"{peak:.1f} MiB peak server RSS with {n} live consoles followed "
                        f"({peak_quiet / 1024:.1f} MiB with the {n} queues running and no "
                        f"viewer)", "—", b.ratio(peak_view, peak_quiet),
                    "< 100 MiB", met, details,
                    {"samples": sampler.samples[::max(1, len(sampler.samples) // 400)],
                     "idle_hwm_kib": idle_hwm, "hwm_kib": hwm_viewers, "after_kib": after,
                     "live_logs": live_logs, "live_viewers": live_viewers,
                     "bytes": b1 - b0, "watch_s": watch_s, "ticks": got})
