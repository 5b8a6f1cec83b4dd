#!/usr/bin/env bash
# `make stop`: stops the server `make demo` started (pid in testarena-data/testarena.pid).
# SIGTERM first (the worker stops its queues and kills their processes), SIGKILL after 20 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PIDFILE="$ROOT/testarena-data/testarena.pid"

if [ ! -f "$PIDFILE" ]; then
    echo "stop: no $PIDFILE; nothing to stop"
    exit 0
fi
pid="$(tr -dc '0-9' <"$PIDFILE")"
# Only a live process that is testarena: a stale pid may belong to something else by now.
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null ||
    ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q testarena; then
    echo "stop: testarena (pid ${pid:-?}) is not running"
    rm -f "$PIDFILE"
    exit 0
fi
echo "stop: stopping testarena (pid $pid)"
kill -TERM "$pid"
for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
if kill -0 "$pid" 2>/dev/null; then
    echo "stop: still running after 20 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PIDFILE"
echo "stop: stopped"
