#!/usr/bin/env bash
# `make demo`: runs TestArena on this machine against the example firmware.
#
#   1. makes ./testarena-data/demo-repos/demo-firmware a git repository (branch main) holding a
#      copy of examples/demo-firmware;
#   2. starts `testarena up` on 127.0.0.1:8080 in the background (or reuses one that answers);
#   3. submits a queue for that repository and follows it until it finishes;
#   4. prints the verdict and where the logs are, and leaves the server running.
#
# Needs target/release/testarena (`make build`), git, curl, python3, and the cross compiler and
# QEMU on PATH (`make deps`). Reads nothing from stdin.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

LISTEN="${TESTARENA_DEMO_LISTEN:-127.0.0.1:8080}"
BASE="http://$LISTEN"
DATA="$ROOT/testarena-data"
REPOS="$DATA/demo-repos"
REPO="$REPOS/demo-firmware"
LOG="$DATA/demo.log"
PIDFILE="$DATA/testarena.pid"
BIN="$ROOT/target/release/testarena"
POLL_LIMIT=300 # seconds

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for tool in git curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (run: make deps)"
done
[ -x "$BIN" ] || die "$BIN is missing (run: make build)"

# JSON field access without jq: json_get FIELD... < json
json_get() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v.get(k)
    if v is None:
        break
print("" if v is None else v)
' "$@"
}

# ---- 1. the demo repository ------------------------------------------------------------------
say "creating the demo repository $REPO"
mkdir -p "$REPOS"
rm -rf "$REPO"
mkdir -p "$REPO"
tar -C examples/demo-firmware --exclude=./build -cf - . | tar -C "$REPO" -xf -
(
    cd "$REPO"
    export GIT_AUTHOR_DATE="2025-01-01T00:00:00Z" GIT_COMMITTER_DATE="2025-01-01T00:00:00Z"
    git -c init.defaultBranch=main init -q .
    git checkout -q -B main
    git add -A
    git -c user.name="TestArena Demo" -c user.email="demo@testarena.invalid" \
        -c commit.gpgsign=false commit -q -m "TestArena demo firmware"
)
REPO_REAL="$(cd "$REPO" && pwd -P)"
say "demo repository at commit $(git -C "$REPO" rev-parse --short HEAD) on branch main"

# ---- 2. the server ---------------------------------------------------------------------------
healthy() { curl -fsS --max-time 2 "$BASE/api/v1/health" >/dev/null 2>&1; }

pid_is_testarena() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q testarena
}

started_here=0
if healthy; then
    say "a server already answers on $BASE; reusing it"
    say "(if it was not started by 'make demo' it may refuse the local repository; 'make stop' and retry)"
else
    old_pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if pid_is_testarena "$old_pid"; then
        say "testarena (pid $old_pid) is running but not answering yet; waiting for it"
    else
        say "starting: testarena up --listen $LISTEN --data-dir $DATA --allow-local-repos $REPOS"
        mkdir -p "$DATA"
        # setsid: the server gets its own session, so it outlives this script and make.
        # Environment settings that would change what the demo does are cleared, and so is
        # make's own (MAKEFLAGS would leak into the firmware build the worker runs).
        nohup setsid env -u TESTARENA_CONFIG -u TESTARENA_DATABASE_URL -u TESTARENA_LISTEN \
            -u TESTARENA_DATA_DIR -u TESTARENA_ALLOW_LOCAL_REPOS \
            -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES \
            "$BIN" up --listen "$LISTEN" --data-dir "$DATA" --allow-local-repos "$REPOS" \
            >>"$LOG" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
        started_here=1
    fi
    pid="$(cat "$PIDFILE")"
    for _ in $(seq 1 60); do
        healthy && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "---- last lines of $LOG ----" >&2
            tail -n 20 "$LOG" >&2 || true
            die "the server exited during start-up (is $LISTEN taken by something else?)"
        fi
        sleep 0.5
    done
    healthy || die "the server did not answer $BASE/api/v1/health within 30 s; see $LOG"
    say "server up (pid $pid), log: $LOG"
fi
curl -fsS "$BASE/api/v1/health"
echo

# ---- 3. submit and follow --------------------------------------------------------------------
body="$(python3 -c 'import json,sys; print(json.dumps({"repo": sys.argv[1], "branch": "main", "name": "demo"}))' "$REPO_REAL")"
say "POST $BASE/api/v1/queues $body"
resp="$(curl -sS -X POST -H 'Content-Type: application/json' --data "$body" \
    -w '\n%{http_code}' "$BASE/api/v1/queues")"
code="${resp##*$'\n'}"
resp="${resp%$'\n'*}"
if [ "$code" != 201 ]; then
    echo "$resp" >&2
    die "the server refused the queue (HTTP $code)"
fi
id="$(json_get id <<<"$resp")"
say "queue $id created: $BASE/api/v1/queues/$id"

last=""
start=$SECONDS
while :; do
    q="$(curl -fsS --max-time 10 "$BASE/api/v1/queues/$id")" || die "cannot read queue $id"
    line="$(python3 -c '
import json, sys
q = json.load(sys.stdin)
s = q["summary"]
print("status=%s phase=%s cases: %d passed, %d failed, %d error of %d" % (
    q["status"], q["phase"] or "-", s["passed"], s["failed"], s["error"], s["total"]))
' <<<"$q")"
    if [ "$line" != "$last" ]; then
        printf '    [%3ds] %s\n' "$((SECONDS - start))" "$line"
        last="$line"
    fi
    case "$(json_get status <<<"$q")" in
        waiting | running) ;;
        *) break ;;
    esac
    if [ $((SECONDS - start)) -ge "$POLL_LIMIT" ]; then
        die "queue $id did not finish within $POLL_LIMIT s (it is still running; see $BASE/api/v1/queues/$id)"
    fi
    sleep 1
done

# ---- 4. report -------------------------------------------------------------------------------
status="$(json_get status <<<"$q")"
echo
say "queue $id finished: $status"
python3 -c '
import json, sys
q = json.load(sys.stdin)
print("    repo    %s" % q["repo"])
print("    branch  %s  commit %s" % (q["branch"], q["commit"]))
if q.get("error"):
    print("    error   %s" % q["error"])
for t in q["tasks"]:
    print("    scenario %s: %s%s" % (t["scenario"], t["status"], ("  (" + t["error"] + ")") if t.get("error") else ""))
    for c in t["cases"]:
        ms = c.get("duration_ms")
        print("      %-8s %-12s %-40s %s" % (c["status"], c["id"], c["name"], ("%d ms" % ms) if ms is not None else ""))
        if c.get("message"):
            for l in c["message"].splitlines():
                print("               " + l)
s = q["summary"]
print("    summary: %d passed, %d failed, %d error, %d skipped of %d" % (
    s["passed"], s["failed"], s["error"], s["skipped"], s["total"]))
' <<<"$q"

QDIR="$DATA/queues/$id"
cat <<MSG

Files of this queue ($QDIR/):
    queue.log     everything: phases, build output, console lines, verdicts
    build.log     the build's output
    junit.xml     JUnit report
    NN-<scenario>/<case>.log and .html   one log (and a readable HTML page) per test case
    work/         the checkout that was built and tested
$( [ -d "$QDIR" ] && (cd "$QDIR" && find . -type f ! -path './work/*' | sort | sed 's|^\./|      |') )

Try the API:
    curl -s $BASE/api/v1/health
    curl -s $BASE/api/v1/queues
    curl -s $BASE/api/v1/queues/$id
    curl -s $BASE/api/v1/queues/$id/log
    curl -s $BASE/api/v1/queues/$id/junit.xml
    curl -s -X POST -H 'Content-Type: application/json' \\
         -d '{"repo":"$REPO_REAL","branch":"main"}' $BASE/api/v1/queues

The dashboard: $BASE/  (this queue: $BASE/#/queues/$id)

Server log: $LOG
The server keeps running$( [ "$started_here" = 1 ] && echo " (pid $(cat "$PIDFILE"), in $PIDFILE)"). Stop it with: make stop
MSG

[ "$status" = passed ] || die "the demo queue did not pass ($status); see $QDIR/queue.log"
