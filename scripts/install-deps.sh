#!/usr/bin/env bash
# Installs what TestArena's build, tests and demo need and is missing, without asking:
#   - the Xtensa cross compiler (Debian: gcc-xtensa-lx106, binutils-xtensa-lx106)
#   - QEMU for Xtensa (Debian: qemu-system-misc, which has qemu-system-xtensa)
#   - curl (used by scripts/demo.sh)
#   - bubblewrap (bwrap: the worker's sandbox for builds, emulators and <run> steps)
#   - the rustfmt and clippy components (used by `make lint`)
# With --test it also installs what `make test` needs beyond that:
#   - nginx and systemd (systemd-analyze) for the deployment tests
#   - prometheus (promtool) for the metrics test, chromium for the browser tests
#   - hyperfine and wrk for the benchmark harness's tiny run
#   - openapi-spec-validator (PyPI) for the OpenAPI test
#   - junitparser (PyPI) for the flaky-case test, which reads the JUnit report as CI tools do
#   - Schemathesis (PyPI, the version pinned in tests/api-fuzz/env.sh) for the API fuzzer, in a
#     virtualenv of its own (python3-venv from Debian if venv is missing)
# Idempotent: when everything is present it only checks and prints one line.
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# Root runs apt-get directly; anyone else needs sudo.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then
        SUDO=(sudo -n)
    else
        SUDO=(__no_sudo__)
    fi
fi

apt_updated=0
apt_install() {
    if [ "${SUDO[0]:-}" = "__no_sudo__" ]; then
        say "need to install $* but this is not root and sudo is missing; install them by hand" >&2
        exit 1
    fi
    if ! have apt-get; then
        say "need to install $* but apt-get is missing (not Debian/Ubuntu?); install them by hand" >&2
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=300 update -q
        apt_updated=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=300 install -y -q "$@"
}

missing=0

if ! have xtensa-lx106-elf-gcc; then
    missing=1
    apt_install gcc-xtensa-lx106 binutils-xtensa-lx106
fi

# QEMU in its own call: it is big, and a failure here should be told apart from the compiler's.
if ! have qemu-system-xtensa; then
    missing=1
    apt_install qemu-system-misc
fi

if ! have curl; then
    missing=1
    apt_install curl ca-certificates
fi

# bubblewrap: the sandbox every build, emulator and <run> step of a worker runs in.
if ! have bwrap; then
    missing=1
    apt_install bubblewrap
fi

for tool in xtensa-lx106-elf-gcc qemu-system-xtensa curl bwrap; do
    if ! have "$tool"; then
        say "$tool is still not on PATH after installing its package" >&2
        exit 1
    fi
done

# rustfmt and clippy: add them only if cargo cannot run them. An offline machine that has them
# is fine; one that lacks them and cannot download them is an error.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    missing=1
    if have rustup; then
        say "rustup component add rustfmt clippy"
        rustup component add rustfmt clippy || say "rustup component add failed" >&2
    fi
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        say "cargo fmt / cargo clippy are not available; install the rustfmt and clippy components" >&2
        exit 1
    fi
fi

if [ "${1:-}" = "--test" ]; then
    # Package installs must not start services (a stray nginx on port 80): Debian's
    # policy-rc.d convention tells maintainer scripts not to.
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    test_pkgs=()
    { have nginx || [ -x /usr/sbin/nginx ]; } || test_pkgs+=(nginx)
    have systemd-analyze || test_pkgs+=(systemd)
    have promtool || test_pkgs+=(prometheus)
    have hyperfine || test_pkgs+=(hyperfine)
    have wrk || test_pkgs+=(wrk)
    if [ "${#test_pkgs[@]}" -gt 0 ]; then
        missing=1
        apt_install "${test_pkgs[@]}"
    fi
    # Chromium is large: its own call, like QEMU.
    if ! have chromium; then
        missing=1
        apt_install chromium
    fi
    if ! have node || ! have npm; then
        missing=1
        apt_install nodejs npm
    fi
    [ "$added_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
        missing=1
        say "pip install openapi-spec-validator"
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore openapi-spec-validator
    fi
    python3 -c 'import openapi_spec_validator' || { say "openapi-spec-validator did not install" >&2; exit 1; }
    # crates/cli/tests/flaky.rs reads junit.xml with junitparser's Surefire flavour (xunit2,
    # which knows <flakyFailure> and <rerunFailure>).
    if ! python3 -c 'import junitparser.xunit2' 2>/dev/null; then
        missing=1
        say "pip install junitparser"
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore junitparser
    fi
    python3 -c 'import junitparser.xunit2' || { say "junitparser did not install" >&2; exit 1; }
    # The API fuzzer (`make api-fuzz`): its own virtualenv, so its dependencies never meet the
    # system's Python packages; replaced whole when the pinned version changes.
    # shellcheck source=tests/api-fuzz/env.sh
    . "$(dirname "${BASH_SOURCE[0]}")/../tests/api-fuzz/env.sh"
    if ! "$FUZZ_VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"; then
        missing=1
        # Debian's python3 has venv without ensurepip until python3-venv is installed.
        if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            apt_install python3-venv
        fi
        say "pip install schemathesis==$SCHEMATHESIS_VERSION into $FUZZ_VENV"
        rm -rf "$FUZZ_VENV"
        if ! python3 -m venv "$FUZZ_VENV" ||
            ! "$FUZZ_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"; then
            rm -rf "$FUZZ_VENV"
            say "schemathesis did not install into $FUZZ_VENV" >&2
            exit 1
        fi
    fi
    for tool in systemd-analyze promtool hyperfine wrk chromium node npm; do
        if ! have "$tool"; then
            say "$tool is still not on PATH after installing it" >&2
            exit 1
        fi
    done
fi

if [ "$missing" -eq 0 ]; then
    say "all present ($(xtensa-lx106-elf-gcc -dumpversion | head -n1) xtensa gcc," \
        "$(qemu-system-xtensa --version | head -n1 | sed 's/ *Copyright.*//'), $(cargo --version))"
else
    say "done"
fi
