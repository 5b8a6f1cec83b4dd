#!/usr/bin/env bash
# Installs what TestArena's build, tests and demo need and is missing, without asking:
#   - the Xtensa cross compiler (Debian: gcc-xtensa-lx106, binutils-xtensa-lx106)
#   - QEMU for Xtensa (Debian: qemu-system-misc, which has qemu-system-xtensa)
#   - curl (used by scripts/demo.sh)
#   - the rustfmt and clippy components (used by `make lint`)
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

for tool in xtensa-lx106-elf-gcc qemu-system-xtensa curl; do
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

if [ "$missing" -eq 0 ]; then
    say "all present ($(xtensa-lx106-elf-gcc -dumpversion | head -n1) xtensa gcc," \
        "$(qemu-system-xtensa --version | head -n1 | sed 's/ *Copyright.*//'), $(cargo --version))"
else
    say "done"
fi
