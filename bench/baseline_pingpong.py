#!/usr/bin/env python3
"""Baseline for benchmark 2: one QEMU, N ping/pong exchanges over its stdin/stdout pipes.

    bench/baseline_pingpong.py FW_ELF [N]      (N defaults to 100)

Boots the firmware once, waits for the `ready` line, then N times writes `ping` and reads until
a line `pong`; closes stdin (the firmware exits at end of file) and waits for QEMU. No logs, no
database: the least work a program can do to run the same 100 cases. Exits non-zero if a step
takes more than 10 s.
"""

import os
import select
import subprocess
import sys
import time

QEMU = ["qemu-system-xtensa", "-M", "sim", "-cpu", "lx106", "-semihosting",
        "-nographic", "-monitor", "none", "-kernel"]


def wait_line(proc, buf, want, timeout=10.0):
    """Reads from QEMU until a whole line equals `want`; returns the unread rest."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.rstrip(b"\r") == want:
                return buf
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            sys.exit(f"timed out waiting for {want!r}")
        data = os.read(fd, 65536)
        if not data:
            sys.exit(f"QEMU closed its output while waiting for {want!r}")
        buf += data


def main():
    fw = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    proc = subprocess.Popen(QEMU + [fw], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    buf = wait_line(proc, b"", b"ready")
    for _ in range(n):
        proc.stdin.write(b"ping\n")
        buf = wait_line(proc, buf, b"pong")
    proc.stdin.close()
    proc.stdout.close()
    if proc.wait(timeout=10) != 0:
        sys.exit(f"QEMU exited with {proc.returncode}")


if __name__ == "__main__":
    main()
