# The fuzzer's pinned version and where its virtualenv lives; sourced by
# scripts/install-deps.sh (which installs it) and tests/api-fuzz/run.sh (which runs it).
# TESTARENA_FUZZ_VENV overrides the place.
SCHEMATHESIS_VERSION=4.32.5
FUZZ_VENV="${TESTARENA_FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/testarena/schemathesis-$SCHEMATHESIS_VERSION}"
