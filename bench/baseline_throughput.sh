#!/usr/bin/env bash
# Baseline for benchmark 1 (console throughput): the firmware's `spam N` output piped straight
# from QEMU into `wc -c`, with nothing in between. Prints the byte count.
#
#   bench/baseline_throughput.sh FW_ELF N      (N = 0: boot and exit only, to subtract the boot)
#
# The QEMU flags are those of the bench repository's testarena.toml (see bench/bench.py).
set -euo pipefail
fw=${1:?usage: baseline_throughput.sh FW_ELF N}
n=${2:?usage: baseline_throughput.sh FW_ELF N}
if [ "$n" -gt 0 ]; then
    input="spam $n\nexit 0\n"
else
    input='exit 0\n'
fi
# shellcheck disable=SC2059
printf "$input" |
    qemu-system-xtensa -M sim -cpu lx106 -semihosting -nographic -monitor none -kernel "$fw" |
    wc -c
