#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with Schemathesis (PyPI, pinned in env.sh,
# installed by `scripts/install-deps.sh --test`): it starts `testarena serve` (no worker, so no
# build ever runs) on a free loopback port with a fresh data dir and SQLite database, sends
# schema-generated requests, valid and invalid, to every operation, and fails on any answer
# whose status code the document does not list, any 5xx, any body that does not match its
# schema, any undocumented content type or malformed documented header, and any request the
# schema calls valid that the server refuses (other than 401/403/404/409/429). Deterministic
# (Hypothesis's derandomized mode) and bounded to about a minute and a half on 2 cores.
#
#   TESTARENA_FUZZ_TOKEN      sent as `Authorization: Bearer …` with every request
#   TESTARENA_FUZZ_EXAMPLES   examples per operation and phase (default 40)
#   TESTARENA_FUZZ_MAX_TIME   time budget of the fuzzer in seconds (default 100)
#   TESTARENA_BIN             a testarena binary to use instead of building target/debug/testarena
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=tests/api-fuzz/env.sh
. tests/api-fuzz/env.sh

say() { printf 'api-fuzz: %s\n' "$*"; }

schemathesis="$FUZZ_VENV/bin/schemathesis"
if [ ! -x "$schemathesis" ]; then
    say "$schemathesis is missing: run 'bash scripts/install-deps.sh --test' (or make test-deps)" >&2
    exit 1
fi

bin="${TESTARENA_BIN:-}"
if [ -z "$bin" ]; then
    "${CARGO:-cargo}" build -p testarena --locked
    bin="$root/target/debug/testarena"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/testarena-api-fuzz.XXXXXX")"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

# The binary on this run's own data dir and database.
testarena() {
    "$bin" --data-dir "$work/data" --database "sqlite://$work/data/testarena.db" "$@"
}

# Port 0: the server picks a free port and says which on stdout. No worker runs, so local
# repositories may be anywhere (`/`): nothing is ever read from them, and every repository the
# schema admits is then accepted.
mkdir -p "$work/data"
# Tokens required (as on a shared server): every request carries an admin token made below, so
# every route is reached past the auth check; the submit limit is off so the generated submits
# are judged, not throttled.
# The binary itself in the background (not the function: `$!` would then be a subshell, and
# stopping it would leave the server running).
"$bin" --data-dir "$work/data" --database "sqlite://$work/data/testarena.db" \
    serve --listen 127.0.0.1:0 --allow-local-repos / --auth required --submit-rate 0 \
    >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

base=""
for _ in $(seq 1 300); do
    base="$(sed -n 's|^testarena listening on \(http://[^ ]*\)$|\1|p' "$work/server.out")"
    [ -n "$base" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        say "the server exited before listening:" >&2
        cat "$work/server.out" "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$base" ]; then
    say "the server did not say where it listens within 30 s" >&2
    cat "$work/server.log" >&2
    exit 1
fi
healthy=0
for _ in $(seq 1 100); do
    if curl -fsS --max-time 5 -o /dev/null "$base/api/v1/health"; then
        healthy=1
        break
    fi
    sleep 0.1
done
if [ "$healthy" -ne 1 ]; then
    say "$base/api/v1/health did not answer 200" >&2
    cat "$work/server.log" >&2
    exit 1
fi
say "fuzzing $base"

# The credentials of every request: the token given, else an admin token made here as an admin
# would (`token create` prints it as its last line).
token="${TESTARENA_FUZZ_TOKEN:-}"
if [ -z "$token" ]; then
    token="$(testarena token create --name api-fuzz --scope admin | tail -n 1)"
fi
auth=()
if [ -n "$token" ]; then
    # Every request as this caller: no generated credentials in place of the token.
    auth=(--header "Authorization: Bearer $token" --generation-with-security-parameters false)
fi

# One worker: several run in threads, and CPython 3.11 (as on these machines) can then fail
# compiling code in two threads at once ("AST constructor recursion depth mismatch").
# The two live streams (/events, /log/stream) never end while there is something to follow:
# they are left out, as a response would never arrive whole. Their error answers are the same
# extractors as the log's, which is fuzzed.
status=0
(
    cd "$work"
    "$schemathesis" run "$base/api/openapi.json" \
        --url "$base" \
        "${auth[@]}" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,positive_data_acceptance \
        --exclude-path /api/v1/events \
        --exclude-path '/api/v1/queues/{id}/log/stream' \
        --max-examples "${TESTARENA_FUZZ_EXAMPLES:-40}" \
        --max-time "${TESTARENA_FUZZ_MAX_TIME:-100}" \
        --generation-deterministic \
        --request-timeout 20 \
        --workers 1 \
        --continue-on-failure \
        --no-color
) || status=$?

stop_server
if grep -q "panicked" "$work/server.log"; then
    say "the server panicked:" >&2
    grep -A5 "panicked" "$work/server.log" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    say "FAILED: the findings are listed above (server log: see below)" >&2
    tail -n 50 "$work/server.log" >&2
    exit 1
fi
say "0 findings"
