"""Benchmark 10: a farm simulation on PostgreSQL (issue 14, goal 6).

1, 5, 10, 25 and 50 `testarena worker` processes (concurrency 1 each, a data directory each, as
on separate hosts) drain a backlog of waiting queues from one PostgreSQL database, on a
PostgreSQL server the benchmark starts itself (50 workers hold more connections than a stock
server allows; it also loads pg_stat_statements). Each queue's
"emulator" is a shell command that takes a fixed time (`sh -c 'sleep 0.5; exec cat'`, no QEMU),
so that the scaling with the number of workers is visible. Per worker count:

- **drain**: n queues are submitted while no worker runs, then the workers start; claims/s from
  the queues' own `started_at` (steady = the middle 80% of the claims), completions/s from
  `finished_at`, the machine's CPU split between the workers (with their children: git, the
  sandbox, the emulator), the server, the PostgreSQL backends of this database and the git daemon;
- **integrity**: every submitted queue is found through the API, `passed`, with `attempts` = 1,
  and its id appears in exactly one "claimed" line of exactly one worker's own log (no lost
  queue, no duplicate run);
- **latency**: then queues are submitted one by one at half the measured drain rate for a fixed
  time, and submit → finished (`created_at` → `finished_at`) is the end-to-end latency of a
  farm that keeps up with its load (in the drain it is mostly the wait in the backlog).

Writes a plot (SVG, by hand, standard library only) of claims/s and latency against the number
of workers beside the report. Imported by bench.py, whose helpers it uses (handed over by bench.py: see `use`).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import signal
import threading
import time
import urllib.parse
from pathlib import Path

from types import ModuleType

# bench.py's module, whose helpers this one uses: bench.py hands itself over (`use`) before it
# calls in, so that the two do not import each other.
b: ModuleType


def use(helpers: ModuleType) -> None:
    """Takes bench.py's module as the helpers to use."""
    global b
    b = helpers

SIM_TOML = """\
# Written by bench/farm_sim.py: no QEMU; the "emulator" takes a fixed 0.5 s (as a real one
# waits for its firmware) and then echoes the console, with little CPU.
[build]
command = "true"
[emulator]
command = "sh -c 'sleep 0.5; exec cat'"
console = "stdio"
"""

EMULATOR_S = 0.5

SIZES = {
    # Queues drained per worker count. The goal is 10,000 at 50 workers, but on 2 cores the
    # farm drains ~11 queues/s, so 10,000 alone take ~16 min: the default stays near 10 min in
    # all, and BENCH_SIM_QUEUES="1=40,5=200,10=400,25=1000,50=10000" runs the goal's size.
    "full": {"workers": [1, 5, 10, 25, 50],
             "queues": {1: 40, 5: 200, 10: 400, 25: 1000, 50: 3000},
             "paced_s": 10.0},
    "tiny": {"workers": [1, 2], "queues": {1: 3, 2: 4}, "paced_s": 2.0},
}


# ---------------------------------------------------------------------------------------------
# CPU of the parts of the farm, from /proc
# ---------------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU ms, CPU ms of reaped children) of a live process."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = f[f.rindex(")") + 2:].split()
    ms = 1000.0 / TICK
    return int(rest[1]), (int(rest[11]) + int(rest[12])) * ms, (int(rest[13]) + int(rest[14])) * ms


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def farm_cpu(workers: list[int], server: int, db: str, git_daemon: list[int]) -> dict:
    """CPU ms used so far by each part: the worker processes with the children they reaped (git,
    bwrap, the emulator), the server, the PostgreSQL backends serving database `db` (their
    process title names it; a backend that exited is no longer counted), and the git daemon with
    the upload-packs it reaped."""
    out = {"workers": 0.0, "server": 0.0, "postgres": 0.0, "git daemon": 0.0}
    for pid in workers:
        s = _stat(pid)
        if s:
            out["workers"] += s[1] + s[2]
    s = _stat(server)
    if s:
        out["server"] += s[1] + s[2]
    for pid in git_daemon:
        s = _stat(pid)
        if s:
            out["git daemon"] += s[1] + s[2]
    needle = f" {db} "
    for e in Path("/proc").iterdir():
        if not e.name.isdigit():
            continue
        cmd = _cmdline(int(e.name))
        if cmd.startswith("postgres: ") and needle in cmd:
            s = _stat(int(e.name))
            if s:
                out["postgres"] += s[1]
    return out


def find_git_daemon(ctx) -> list[int]:
    """The `git` process bench.py started and the `git-daemon` it runs (which reaps the
    upload-packs)."""
    base = f"--base-path={ctx.work / 'served'}"
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and base in _cmdline(int(e.name))]


# ---------------------------------------------------------------------------------------------
# A PostgreSQL cluster of the benchmark's own
# ---------------------------------------------------------------------------------------------

# Why not the machine's server (benchmarks 8 and 9 use it): each worker process holds up to 9
# connections (a pool of up to 8, and its LISTEN connection), so 50 workers need ~400, and a
# stock server allows 100: there, 50 workers saw "sorry, too many clients already", queues ended
# `error` ("timed out waiting for a free connection"), and every other user of that server was
# refused too. A cluster of its own sized for the farm also lets the benchmark read
# pg_stat_statements (which needs shared_preload_libraries, i.e. a restart).
PG_SETTINGS = {
    "max_connections": "600",
    "shared_preload_libraries": "pg_stat_statements",
    "listen_addresses": "127.0.0.1",
}


def pg_bindir() -> Path:
    """The newest PostgreSQL server installed (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin")
                    if (p / "initdb").exists() and (p / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise b.BenchError("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); "
                           "Debian: apt-get install postgresql")
    return found[-1]


class PgCluster:
    """`initdb` into <work>/pg-sim and `postgres` on a free loopback port, with PG_SETTINGS
    (as the `postgres` user when run as root: the server refuses root). Its own process group,
    recorded in <work>/pids, so bench/run stops it if this script dies."""

    def __init__(self, ctx):
        bindir = pg_bindir()
        self.dir = ctx.work / "pg-sim"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        data = self.dir / "data"
        pre: list[str] = []
        if os.geteuid() == 0:
            pre = ["runuser", "-u", "postgres", "--"]
            os.chmod(ctx.work, 0o711)  # mktemp made it 0700: the server must reach its data
            shutil.chown(self.dir, "postgres", "postgres")
        b.run(pre + [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
                     "-E", "UTF8", "--locale=C", "--no-sync"], timeout=120)
        self.port = b.free_port()
        args = [f"-c{k}={v}" for k, v in PG_SETTINGS.items()]
        with open(self.dir / "postgres.log", "ab") as log:
            self.proc = ctx.procs.spawn(
                pre + [bindir / "postgres", "-D", data, "-p", str(self.port), "-k", self.dir,
                       *args], stdout=log, stderr=log)
        self.admin = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.psql("SELECT 1")
                break
            except b.BenchError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.dir / "postgres.log").read_text(errors="replace")[-1500:]
                    raise b.BenchError(f"the benchmark's PostgreSQL did not start:\n{tail}")
                time.sleep(0.2)
        self.version = self.psql("SHOW server_version").strip()

    def psql(self, sql: str, db: str = "postgres") -> str:
        url = self.admin.rsplit("/", 1)[0] + "/" + db
        return b.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], timeout=120,
                     env={**os.environ, "PGCONNECT_TIMEOUT": "10"})

    def create(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name}")
        self.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db=name)
        return self.admin.rsplit("/", 1)[0] + "/" + name

    def waits(self, db: str) -> dict[str, int]:
        """Active backends of `db` now, by what they wait for (CPU: running, or runnable)."""
        try:
            out = self.psql("SELECT coalesce(wait_event_type || ': ' || wait_event, 'CPU'), "
                            "count(*) FROM pg_stat_activity WHERE datname = "
                            f"'{db}' AND state = 'active' AND pid <> pg_backend_pid() "
                            "GROUP BY 1")
        except b.BenchError:
            return {}
        return {k: int(v) for k, v in (line.rsplit("|", 1) for line in out.splitlines()
                                         if "|" in line)}

    def connections(self, db: str) -> int:
        try:
            return int(self.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'")
                       .strip() or 0)
        except b.BenchError:
            return -1

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster's group), then what is left is killed."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        b.Procs.stop(self.proc, grace=30)


# The worker's claim (crates/store/src/postgres/work.rs), for EXPLAIN ANALYZE with the backlog
# waiting and no worker running.
CLAIM_SQL = ("SELECT id FROM queues WHERE status IN ('waiting') AND NOT EXISTS (SELECT 1 FROM "
             "json_array_elements_text(queues.labels::json) AS wanted (label) WHERE wanted.label "
             "<> ALL (ARRAY['qemu-system-xtensa', 'sim'])) ORDER BY priority DESC, id ASC "
             "LIMIT 1 FOR UPDATE SKIP LOCKED")


def explain_claim(pg: PgCluster, db: str) -> list[str]:
    out = pg.psql(f"BEGIN; EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {CLAIM_SQL}; ROLLBACK", db=db)
    return [line for line in out.splitlines() if line.strip()]


def top_statements(pg: PgCluster, db: str, queues: int, top: int = 8) -> dict:
    """pg_stat_statements of database `db` since its reset: the statements that took the most
    execution time, and the totals per queue."""
    rows = pg.psql(
        "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), "
        "rows, regexp_replace(left(query, 400), '\\s+', ' ', 'g') FROM pg_stat_statements s "
        f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{db}' "
        "ORDER BY total_exec_time DESC", db=db)
    stmts = []
    for line in rows.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5:
            stmts.append({"calls": int(parts[0]), "total_ms": float(parts[1]),
                          "mean_ms": float(parts[2]), "rows": int(parts[3]),
                          "query": parts[4]})
    calls = sum(x["calls"] for x in stmts)
    total = sum(x["total_ms"] for x in stmts)
    return {"top": stmts[:top], "calls": calls, "total_ms": total,
            "calls_per_queue": calls / max(1, queues), "ms_per_queue": total / max(1, queues)}


# ---------------------------------------------------------------------------------------------
# One worker count
# ---------------------------------------------------------------------------------------------

CLAIMED = re.compile(r"\bclaimed\b.*?\bqueue[=:](\d+)|\bqueue[=:](\d+)\b.*?\bclaimed\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


STARTED = re.compile(r"worker started worker=(\S+)")


def claims_in_logs(paths: list[Path]) -> dict[int, list[str]]:
    """Queue id → the workers (their ids, as the API names them) whose own log (stderr) says
    they claimed it."""
    out: dict[int, list[str]] = {}
    for p in paths:
        try:
            text = ANSI.sub("", p.read_text(errors="replace"))
        except OSError:
            continue
        m = STARTED.search(text)
        who = m.group(1) if m else p.stem
        for line in text.splitlines():
            if "claimed" not in line or "claim failed" in line:
                continue
            m = CLAIMED.search(line)
            if m:
                out.setdefault(int(m.group(1) or m.group(2)), []).append(who)
    return out


def paced_submit(base: str, body: dict, rate: float, seconds: float) -> list[int]:
    """POSTs one queue every 1/rate s for `seconds` on one keep-alive connection."""
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    data = json.dumps(body)
    ids: list[int] = []
    n = max(2, round(rate * seconds))
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        conn.request("POST", "/api/v1/queues", data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        answer = r.read()
        if r.status != 201:
            raise b.BenchError(f"paced submit: HTTP {r.status}: {answer[:200]!r}")
        ids.append(json.loads(answer)["id"])
    conn.close()
    return ids


def wait_done(api, ids: list[int], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(0.5)
        if not any(api.get(f"/api/v1/queues?status={s}&limit=1")["queues"]
                   for s in ("waiting", "running")):
            break
        if time.monotonic() > deadline:
            raise b.BenchError(f"{len(ids)} queues did not finish in {timeout:.0f}s")
    want = set(ids)
    return [q for q in b.all_queues(api) if q["id"] in want]


def steady_rate(times: list[float]) -> float:
    """Events per second over the middle 80% of the events (times in s, any origin)."""
    t = sorted(times)
    n = len(t)
    lo, hi = n // 10, n - 1 - n // 10
    span = t[hi] - t[lo]
    return (hi - lo) / span if span > 0 else float("nan")


def check_integrity(ids: list[int], qs: list[dict], logs: dict[int, list[str]]) -> dict:
    """No lost queue, no duplicate run: from the API and from the workers' own logs."""
    by_id = {q["id"]: q for q in qs}
    missing = [i for i in ids if i not in by_id]
    not_passed = [q["id"] for q in qs if q["status"] != "passed"]
    multi_attempt = [q["id"] for q in qs if q.get("attempts") != 1]
    never_claimed = [i for i in ids if i not in logs]
    claimed_twice = [i for i in ids if len(logs.get(i, [])) > 1]
    # The worker whose log says it claimed the queue is the one the API names.
    other_worker = [i for i in ids if i in by_id and len(logs.get(i, [])) == 1
                    and logs[i][0] != by_id[i].get("worker")]
    return {
        "submitted": len(ids), "found": len(set(by_id) & set(ids)), "missing": missing[:20],
        "not_passed": not_passed[:20], "n_not_passed": len(not_passed),
        "attempts_not_1": multi_attempt[:20], "n_attempts_not_1": len(multi_attempt),
        "log_claims": sum(len(v) for k, v in logs.items() if k in by_id),
        "never_claimed_in_logs": never_claimed[:20], "n_never_claimed": len(never_claimed),
        "claimed_twice_in_logs": claimed_twice[:20], "n_claimed_twice": len(claimed_twice),
        "api_names_another_worker": other_worker[:20], "n_other_worker": len(other_worker),
        "ok": not missing and not not_passed and not multi_attempt and not never_claimed
        and not claimed_twice and not other_worker,
    }


def sim_row(ctx, pg: PgCluster, k: int, n: int, repo: str, paced_s: float) -> dict:
    body = {"repo": repo, "branch": "main", "scenarios": ["bench/farm.xml"]}
    db = f"sim{k}"
    url = pg.create(db)
    d = ctx.work / f"data-sim-{k}"
    shutil.rmtree(d, ignore_errors=True)  # the workers' logs are read back: none of a former run
    ta, workers = None, []
    try:
        ta = b.TestArena(ctx, "serve", d, extra=["--database", url])
        t0 = time.monotonic()
        ids = b.submit_many(ta.base, body, n)
        submit_s = time.monotonic() - t0
        git_pid = find_git_daemon(ctx)
        max_conns = [0]
        waits: dict[str, int] = {}
        wait_samples = [0]
        rss_peak: dict[str, int] = {"worker": 0, "server": 0}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                max_conns[0] = max(max_conns[0], pg.connections(db))
                if workers:
                    for kind, c in pg.waits(db).items():
                        waits[kind] = waits.get(kind, 0) + c
                    wait_samples[0] += 1
                for w in workers:
                    rss_peak["worker"] = max(rss_peak["worker"],
                                             b.proc_status(w.proc.pid).get("VmRSS", 0))
                rss_peak["server"] = max(rss_peak["server"], ta.vm().get("VmRSS", 0))
                stop.wait(1.0)

        c0 = b.cpu_times()
        plan = explain_claim(pg, db)
        pg.psql("SELECT pg_stat_statements_reset()", db=db)
        cpu0 = farm_cpu([], ta.proc.pid, db, git_pid)
        h0 = time.monotonic()
        t_start = time.time()
        for i in range(k):
            workers.append(b.WorkerProc(ctx, d / f"worker-{i}", url, f"worker-{i}",
                                        config=d / "bench-config.toml"))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            qs = wait_done(ta.api, ids, timeout=3600)
            # Read the CPU before the workers go idle and before anything else runs.
            c1 = b.cpu_times()
            cpu1 = farm_cpu([w.proc.pid for w in workers], ta.proc.pid, db, git_pid)
            h1 = time.monotonic()
            statements = top_statements(pg, db, len(ids))
        finally:
            stop.set()
            sampler.join()
        wall = h1 - h0
        machine_busy = (1 - (c1[1] - c0[1]) / max(1, c1[0] - c0[0])) * (os.cpu_count() or 1)
        cpu = {part: (cpu1[part] - cpu0[part]) / 1000 / wall for part in cpu1}
        cpu["machine"] = machine_busy
        cpu["wall_s"] = wall
        cpu["other"] = machine_busy - sum(v for p, v in cpu.items()
                                          if p not in ("machine", "wall_s"))
        logs = claims_in_logs([w.log_path for w in workers])
        integrity = check_integrity(ids, qs, logs)
        started = [b.parse_time(q["started_at"]).timestamp() for q in qs if q.get("started_at")]
        finished = [b.parse_time(q["finished_at"]).timestamp() for q in qs
                    if q.get("finished_at")]
        per_worker: dict[str, int] = {}
        for q in qs:
            per_worker[q.get("worker") or "?"] = per_worker.get(q.get("worker") or "?", 0) + 1
        span = max(finished) - min(started)
        drain = {
            "n": len(qs), "submit_s": submit_s, "submit_rate": n / submit_s,
            "claims_steady": steady_rate(started), "done_steady": steady_rate(finished),
            "overall": len(qs) / span if span > 0 else float("nan"), "span_s": span,
            "first_claim_s": min(started) - t_start,
            "service_ms": [b.ms_between(q["started_at"], q["finished_at"]) for q in qs],
            "latency_ms": [b.ms_between(q["created_at"], q["finished_at"]) for q in qs],
            "per_worker": sorted(per_worker.values(), reverse=True),
            "cpu": cpu, "max_pg_connections": max_conns[0], "statements": statements,
            "claim_plan": plan,
            "waits": {k: v / max(1, wait_samples[0]) for k, v in
                      sorted(waits.items(), key=lambda kv: -kv[1])},
            "rss_peak_kib": rss_peak,
        }
        # Latency at half the drain rate: the farm keeps up, so submit → finished is the
        # claim, the queue's own work and the emulator's fixed time.
        cs = drain["claims_steady"]
        rate = max(0.2, 0.5 * cs) if math.isfinite(cs) else 0.5
        pids = paced_submit(ta.base, body, rate, paced_s)
        pq = wait_done(ta.api, pids, timeout=600)
        pq_logs = claims_in_logs([w.log_path for w in workers])
        paced_integrity = check_integrity(pids, pq, pq_logs)
        paced = {
            "rate": rate, "n": len(pq),
            "latency_ms": [b.ms_between(q["created_at"], q["finished_at"]) for q in pq],
            "claim_ms": [b.ms_between(q["created_at"], q["started_at"]) for q in pq],
            "service_ms": [b.ms_between(q["started_at"], q["finished_at"]) for q in pq],
            "integrity": paced_integrity,
        }
        problem = ""
        if not integrity["ok"] or not paced_integrity["ok"]:
            bad = integrity if not integrity["ok"] else paced_integrity
            problem = (json.dumps({x: y for x, y in bad.items() if y and x != "ok"}) + "\n"
                       + b.failed_summary(ta.api, qs + pq))
            b.say(f"10: {k} workers: LOST, FAILED OR DUPLICATED QUEUES: {problem}")
        return {"workers": k, "drain": drain, "integrity": integrity, "paced": paced,
                "problem": problem}
    finally:
        for w in workers:  # all at once: 50 graceful stops one after the other take a while
            try:
                w.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for w in workers:
            w.stop()
        if ta:
            ta.stop()
        try:
            pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        except b.BenchError as e:
            b.say(f"could not drop the database {db}: {e}")


# ---------------------------------------------------------------------------------------------
# The plot: hand-written SVG
# ---------------------------------------------------------------------------------------------


def _nice_max(v: float) -> float:
    if v <= 0 or v != v:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * mag >= v:
            return step * mag
    return 10 * mag


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cpu_per_queue_ms(r: dict) -> float:
    """CPU ms per queue of the farm's parts (workers, server, PostgreSQL, git daemon)."""
    c = r["drain"]["cpu"]
    parts = c["workers"] + c["server"] + c["postgres"] + c["git daemon"]
    return parts * c["wall_s"] / max(1, r["drain"]["n"]) * 1000


def svg_plot(rows: list[dict], title: str, cores: int) -> str:
    """Two panels side by side: claims/s against workers (measured, linear from one worker, and
    the CPU's ceiling: the cores over the CPU one queue costs), and submit → finished latency
    (p50, p95) at half load against workers."""
    W, H = 960, 420
    pw, ph = 360, 270  # plot area of one panel
    top = 70
    lefts = [80, 560]
    ks = [r["workers"] for r in rows]
    xmax = max(ks) if max(ks) > 1 else 2
    rates = [r["drain"]["claims_steady"] for r in rows]
    per_q = sorted(cpu_per_queue_ms(r) for r in rows)[len(rows) // 2]
    ceiling = cores * 1000 / per_q if per_q > 0 else 0
    ymax1 = _nice_max(max(rates + [ceiling]) * 1.15)
    p50 = [b.pct(r["paced"]["latency_ms"], 50) / 1000 for r in rows]
    p95 = [b.pct(r["paced"]["latency_ms"], 95) / 1000 for r in rows]
    ymax2 = _nice_max(max(p95 + [EMULATOR_S]) * 1.2)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
        f'font-size="12">',
        f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
        f'<text x="{W / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold">'
        f'{_esc(title)}</text>',
    ]

    def X(left, k):
        return left + (k / xmax) * pw

    def Y(v, ymax):
        return top + ph - (v / ymax) * ph

    def axes(left, ymax, ylabel, heading, fmt_y):
        out.append(f'<text x="{left + pw / 2}" y="{top - 14}" text-anchor="middle" '
                   f'font-size="13" font-weight="bold">{_esc(heading)}</text>')
        for i in range(6):
            v = ymax * i / 5
            y = Y(v, ymax)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                       f'stroke="#e4e4e4"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f'{fmt_y(v)}</text>')
        for k in ks:
            x = X(left, k)
            out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" '
                       f'stroke="#333"/>')
            out.append(f'<text x="{x:.1f}" y="{top + ph + 19}" text-anchor="middle">{k}</text>')
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" '
                   f'stroke="#333"/>')
        out.append(f'<text x="{left + pw / 2}" y="{top + ph + 40}" text-anchor="middle">'
                   f'worker processes (concurrency 1 each)</text>')
        out.append(f'<text transform="translate({left - 52},{top + ph / 2}) rotate(-90)" '
                   f'text-anchor="middle">{_esc(ylabel)}</text>')

    def series(left, ys, ymax, color, dash="", labels=True, below=False):
        pts = " ".join(f"{X(left, k):.1f},{Y(v, ymax):.1f}" for k, v in zip(ks, ys))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2.2"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        for k, v in zip(ks, ys):
            x, y = X(left, k), Y(v, ymax)
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
            if labels:
                dy = 16 if below else -9
                out.append(f'<text x="{x:.1f}" y="{y + dy:.1f}" text-anchor="middle" '
                           f'fill="{color}" font-size="11">{v:.2f}</text>')

    def legend(left, items, bottom=False):
        y = top + ph - 10 - 17 * (len(items) - 1) if bottom else top + 14
        left = left + pw - 275 if bottom else left
        for color, dash, text in items:
            out.append(f'<line x1="{left + 12}" y1="{y - 4}" x2="{left + 38}" y2="{y - 4}" '
                       f'stroke="{color}" stroke-width="2.2"'
                       + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
            out.append(f'<text x="{left + 44}" y="{y}">{_esc(text)}</text>')
            y += 17

    # Panel 1: claims/s.
    left = lefts[0]
    axes(left, ymax1, "claims per second (steady)", "Throughput", lambda v: f"{v:g}")
    r1 = rates[0] / ks[0]
    k_cap = min(xmax, ymax1 / r1) if r1 > 0 else xmax
    out.append(f'<line x1="{X(left, 0):.1f}" y1="{Y(0, ymax1):.1f}" x2="{X(left, k_cap):.1f}" '
               f'y2="{Y(r1 * k_cap, ymax1):.1f}" stroke="#999" stroke-width="1.5" '
               f'stroke-dasharray="6 4"/>')
    if ceiling:
        y = Y(ceiling, ymax1)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                   f'stroke="#e67e22" stroke-width="1.5" stroke-dasharray="2 3"/>')
    series(left, rates, ymax1, "#1f6fb5")
    legend(left, [("#1f6fb5", "", "measured (middle 80% of the claims)"),
                  ("#999", "6 4", f"linear: {ks[0]} worker × k")]
           + ([("#e67e22", "2 3", f"{cores} cores / {per_q:.0f} ms CPU per queue")]
              if ceiling else []), bottom=True)
    # Panel 2: latency at half load.
    left = lefts[1]
    axes(left, ymax2, "submit → finished, seconds", "Latency at half the drain rate",
         lambda v: f"{v:.1f}")
    y = Y(EMULATOR_S, ymax2)
    out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#999" '
               f'stroke-width="1.5" stroke-dasharray="2 3"/>')
    series(left, p95, ymax2, "#c0392b")
    series(left, p50, ymax2, "#27ae60", below=True)
    legend(left, [("#c0392b", "", "p95"), ("#27ae60", "", "p50"),
                  ("#999", "2 3", f"the emulator's own {EMULATOR_S} s")])
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def sizes(ctx) -> tuple[dict, str]:
    """The sizes of this mode; BENCH_SIM_QUEUES="1=40,50=10000" sets queues per worker count
    (the counts it names are the ones run)."""
    sz = dict(SIZES["tiny" if ctx.tiny else "full"])
    env = os.environ.get("BENCH_SIM_QUEUES", "").strip()
    if not env:
        return sz, ""
    try:
        queues = {int(k): int(v) for k, v in (x.split("=") for x in env.split(",") if x.strip())}
    except ValueError:
        raise b.BenchError(f"BENCH_SIM_QUEUES={env!r}: expected WORKERS=QUEUES,...") from None
    sz["queues"] = queues
    sz["workers"] = sorted(queues)
    return sz, env


def bench_farm_sim(ctx) -> dict:
    sz, override = sizes(ctx)
    if not ctx.git_port:
        b.start_git_daemon(ctx)
    repo = b.make_farm_repo(ctx, "farm-sim", SIM_TOML)
    rows = []
    pg = PgCluster(ctx)
    try:
        for k in sz["workers"]:
            n = sz["queues"][k]
            b.say(f"10: farm simulation: {k} worker(s) on PostgreSQL drain {n} queues "
                  f"(emulator: sleep {EMULATOR_S} s, then cat); then {sz['paced_s']:.0f} s at "
                  f"half that rate")
            rows.append(sim_row(ctx, pg, k, n, repo, sz["paced_s"]))
            d = rows[-1]["drain"]
            b.say(f"10: {k} worker(s): {d['claims_steady']:.2f} claims/s steady, "
                  f"CPU {d['cpu']['machine'] * 100:.0f}%")
    finally:
        pg.stop()
    pg_version = pg.version
    cores = os.cpu_count() or 1
    # The plot beside the report (bench/farm.svg for the full run).
    out = getattr(ctx, "out_path", None)
    svg_name = "farm-tiny.svg" if ctx.tiny else "farm.svg"
    svg_path = (out.parent if out else b.BENCH_DIR) / svg_name
    kmax = max(sz["workers"])
    title = (f"TestArena farm on PostgreSQL: {rows[-1]['drain']['n']:,} queues at {kmax} "
             f"workers, {cores} cores, emulator {EMULATOR_S} s")
    svg_path.write_text(svg_plot(rows, title, cores))
    r1, rk = rows[0]["drain"]["claims_steady"], rows[-1]["drain"]["claims_steady"]
    best = max(rows, key=lambda r: r["drain"]["claims_steady"])
    details = [
        f"![Claims per second and latency against the number of workers]({svg_name})",
        "",
        "A repository whose build is `true` and whose \"emulator\" is "
        f"`sh -c 'sleep {EMULATOR_S}; exec cat'` (a fixed {EMULATOR_S} s, little CPU; no QEMU), "
        "served by `git daemon` on loopback, one case per queue (send `hello`, expect "
        "`^hello$`). Per worker count: a fresh PostgreSQL database, one `testarena serve`, "
        "and k `testarena worker --concurrency 1` processes, each with a data directory of "
        "its own (as on separate hosts: nothing shared but the database). The queues are "
        "submitted (8 parallel POST loops) while no worker runs; then the workers start and "
        "drain them. Claims/s: from the queues' `started_at` (steady = the middle 80% of the "
        "claims over the time they took; overall = queues / first claim → last finish). "
        "Every queue does the whole of a real one: claim, `git fetch` into the worker's "
        "mirror, checkout, the build in the sandbox, the emulator in the sandbox, one case, "
        "logs and reports shipped into the database, the verdict.",
        "",
        "| workers | queues | submitted at | **claims/s (steady)** | × 1 worker | finished/s "
        "(steady) | overall queues/s | first claim after start | one queue on its worker "
        "p50 / p95 ms | queues per worker (min–max) | peak PostgreSQL connections |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        d = r["drain"]
        pw = d["per_worker"]
        details.append(
            f"| {r['workers']} | {d['n']} | {d['submit_rate']:.0f}/s | "
            f"**{d['claims_steady']:.2f}** | {b.ratio(d['claims_steady'], r1):.2f}× | "
            f"{d['done_steady']:.2f} | {d['overall']:.2f} | {d['first_claim_s']:.2f} s | "
            f"{b.pct(d['service_ms'], 50):.0f} / {b.pct(d['service_ms'], 95):.0f} | "
            f"{min(pw)}–{max(pw)} | {d['max_pg_connections']} |")
    details += [
        "",
        f"**Where the CPU went during each drain** (cores busy, of {cores}; from /proc: the "
        "worker processes with the children they reaped — git, bwrap, the shell and `cat` of "
        "the emulator —, the server, the PostgreSQL backends serving this database, and the "
        "git daemon with its upload-packs; other = the rest of the machine: other users' "
        "work, this script, processes that exited unattributed). Peak RSS sampled every second.",
        "",
        "| workers | machine | workers | server | PostgreSQL | git daemon | other "
        "| CPU per queue (all parts) | peak RSS of one worker | peak RSS of the server |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["drain"]["cpu"]
        per_q = cpu_per_queue_ms(r)
        rss = r["drain"]["rss_peak_kib"]
        details.append(
            f"| {r['workers']} | {c['machine']:.2f} | {c['workers']:.2f} | {c['server']:.2f} | "
            f"{c['postgres']:.2f} | {c['git daemon']:.2f} | {c['other']:.2f} | "
            f"{per_q:.0f} ms | {rss['worker'] / 1024:.1f} MiB | {rss['server'] / 1024:.1f} MiB |")
    per_q_med = sorted(cpu_per_queue_ms(r) for r in rows)[len(rows) // 2]
    details += [
        "",
        f"The CPU's ceiling for this farm on this machine: {cores} cores / {per_q_med:.0f} ms "
        f"of CPU per queue (the median of the rows) = {cores * 1000 / per_q_med:.1f} "
        "queues/s, if nothing else ran (the dotted orange line in the plot).",
        "",
        "**End-to-end latency.** In the drain, submit → finished is mostly the wait in the "
        "backlog (the last queue waits for all the others). So after each drain, with the "
        f"same workers idle, queues are submitted one at a time at half the drain's steady "
        f"rate for {sz['paced_s']:.0f} s (a farm that keeps up with its load), and each "
        "queue's `created_at` → `finished_at` is its end-to-end latency; the emulator "
        f"itself takes {EMULATOR_S} s of it.",
        "",
        "| workers | offered queues/s | queues | **submit → finished p50 / p95 / max ms** "
        "| submit → claimed p50 / p95 ms | claimed → finished p50 / p95 ms | in the drain: "
        "submit → finished p50 / max s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p, d = r["paced"], r["drain"]
        details.append(
            f"| {r['workers']} | {p['rate']:.2f} | {p['n']} | "
            f"**{b.pct(p['latency_ms'], 50):.0f} / {b.pct(p['latency_ms'], 95):.0f} / "
            f"{max(p['latency_ms']):.0f}** | "
            f"{b.pct(p['claim_ms'], 50):.0f} / {b.pct(p['claim_ms'], 95):.0f} | "
            f"{b.pct(p['service_ms'], 50):.0f} / {b.pct(p['service_ms'], 95):.0f} | "
            f"{b.pct(d['latency_ms'], 50) / 1000:.1f} / {max(d['latency_ms']) / 1000:.1f} |")
    total = sum(r["integrity"]["submitted"] + r["paced"]["integrity"]["submitted"]
                for r in rows)
    details += [
        "",
        f"**No lost queue, no duplicate run** (all {total:,} queues of this benchmark, drains "
        "and paced runs): every submitted id was found through the API (`GET "
        "/api/v1/queues`, all pages) as `passed` with `attempts` = 1 (a claim increments "
        "`attempts` in the same UPDATE that takes the queue, so a second claim would show), "
        "and each id appears in exactly one `claimed` line of exactly one worker's own log "
        "(stderr), the worker the API names — the workers' account, independent of the "
        "API's.",
        "",
        "| workers | submitted | found passed | attempts ≠ 1 | claims in the workers' logs | "
        "never claimed | claimed twice | the API names another worker |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        i, pi = r["integrity"], r["paced"]["integrity"]
        details.append(
            f"| {r['workers']} | {i['submitted']} + {pi['submitted']} | "
            f"{i['found'] - i['n_not_passed']} + {pi['found'] - pi['n_not_passed']} | "
            f"{i['n_attempts_not_1'] + pi['n_attempts_not_1']} | "
            f"{i['log_claims']} + {pi['log_claims']} | "
            f"{i['n_never_claimed'] + pi['n_never_claimed']} | "
            f"{i['n_claimed_twice'] + pi['n_claimed_twice']} | "
            f"{i['n_other_worker'] + pi['n_other_worker']} |")
    full_n = rows[-1]["drain"]["n"]
    per = ", ".join(f"{r['workers']}w {r['drain']['n']:,}" for r in rows)
    details += [
        "",
        f"**The PostgreSQL side** (pg_stat_statements of the drain's database, reset when the "
        "workers start; execution time includes the time a statement waited for a lock; "
        f"PostgreSQL {pg_version}, a cluster of the benchmark's own, see below):",
        "",
        "| workers | statements per queue | execution ms per queue (sum) | the slowest statement "
        "on average |",
        "|---:|---:|---:|---|",
    ]
    for r in rows:
        st = r["drain"]["statements"]
        slow = max(st["top"], key=lambda x: x["mean_ms"]) if st["top"] else None
        details.append(
            f"| {r['workers']} | {st['calls_per_queue']:.0f} | {st['ms_per_queue']:.0f} | "
            + (f"{slow['mean_ms']:.1f} ms: `{slow['query'][:90]}…`" if slow else "—") + " |")
    details += [
        "",
        "Active PostgreSQL backends of the drain's database by what they were waiting for "
        "(`pg_stat_activity.wait_event`; CPU = none: running or waiting for a core), the "
        "average of the samples taken every second:",
        "",
        "| workers | active backends | by wait |",
        "|---:|---:|---|",
    ]
    for r in rows:
        w = r["drain"]["waits"]
        details.append(f"| {r['workers']} | {sum(w.values()):.1f} | "
                       + (", ".join(f"{k} {v:.1f}" for k, v in list(w.items())[:6]) or "—")
                       + " |")
    last = rows[-1]["drain"]["statements"]
    details += [
        "",
        f"At {kmax} workers, the statements that took the most time in all "
        f"({last['calls']:,} statements, {last['total_ms'] / 1000:,.0f} s of execution in "
        f"all):",
        "",
        "| calls per queue | mean ms | share of the time | statement |",
        "|---:|---:|---:|---|",
    ]
    for x in last["top"]:
        details.append(f"| {x['calls'] / max(1, full_n):.1f} | {x['mean_ms']:.2f} | "
                       f"{100 * x['total_ms'] / max(1, last['total_ms']):.0f}% | "
                       f"`{x['query'][:160]}` |")
    details += [
        "",
        f"The claim's plan with {full_n:,} queues waiting (EXPLAIN ANALYZE, before the "
        "workers start):",
        "",
        "```",
        *rows[-1]["drain"]["claim_plan"],
        "```",
        "",
        f"Queues per drain: {per}"
        + (f" (set by `BENCH_SIM_QUEUES={override}`)" if override else "")
        + ". The goal is 10,000 queues at 50 workers; a drain of 10,000 takes ~16 min "
        "on this machine's 2 cores, so the default full run drains fewer to stay near 10 min "
        "(`BENCH_SIM_QUEUES=1=40,5=200,10=400,25=1000,50=10000 bench/run --only 10` runs the "
        "goal's size); the steady rate does not depend on the backlog's size once the "
        "workers are busy.",
        "",
        "PostgreSQL: a cluster of the benchmark's own (`initdb` into the scratch directory, "
        f"{', '.join(f'`{k}={v}`' for k, v in PG_SETTINGS.items())}; durability as shipped: "
        "`fsync` and `synchronous_commit` on). Not the machine's server of benchmarks 8 and 9: "
        "each worker process holds up to 9 connections (a pool of up to 8 and its LISTEN "
        "connection; see the peak above), and a stock server allows 100. There, 50 workers "
        "got `sorry, too many clients already`, some queues ended `error` (`database is "
        "overloaded: timed out waiting for a free connection`), and every other user of the "
        "server was refused connections meanwhile.",
    ]
    ok = all(r["integrity"]["ok"] and r["paced"]["integrity"]["ok"] for r in rows)
    for r in rows:
        if r["problem"]:
            details += ["", f"**{r['workers']} workers: queues lost, failed or run twice:**",
                        "", "```", r["problem"].rstrip(), "```"]
    verdict = "none lost or run twice" if ok else "**SOME LOST, FAILED OR RUN TWICE**"
    figure = (", ".join(f"{r['workers']}w {r['drain']['claims_steady']:.1f}/s" for r in rows)
              + f" (claims, steady; best {best['drain']['claims_steady']:.1f}/s at "
              f"{best['workers']}w); latency p50 "
              + ", ".join(f"{b.pct(r['paced']['latency_ms'], 50) / 1000:.2f} s" for r in
                          (rows[0], rows[-1]))
              + f" ({rows[0]['workers']}w, {kmax}w); {total:,} queues, {verdict}")
    return b.result(10, figure, f"1 worker ({r1:.2f} claims/s)", b.ratio(rk, r1),
                    "50 workers drain 10,000 queues: no loss, no duplicate; plot",
                    ok and full_n >= 10_000, details, rows)
