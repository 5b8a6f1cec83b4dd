#!/usr/bin/env bash
# Adds up the results of `make test`'s runners (cargo's `test result:` lines, node's `# pass` /
# `# fail`) into one closing line: "N passed, N failed".
set -uo pipefail
passed=0
failed=0
for log in "$@"; do
    [ -f "$log" ] || continue
    while read -r p f; do
        passed=$((passed + p))
        failed=$((failed + f))
    done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$log")
    p=$(sed -nE 's/^# pass ([0-9]+)$/\1/p' "$log" | tail -n1)
    f=$(sed -nE 's/^# fail ([0-9]+)$/\1/p' "$log" | tail -n1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
done
echo "make test: cargo and browser tests"
echo "$passed passed, $failed failed"
