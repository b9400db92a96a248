"""Run a command while every CPU is kept busy: the timing-sensitive tests must pass on a loaded machine too.

    python .ci/under_load.py [--max-s 900] [--workers N] -- python -m pytest -q tests/test_x.py

One pure-Python busy loop per CPU (no stress-ng needed), at the command's own priority, each ending by
itself after --max-s seconds (so a killed CI job leaves nothing spinning) and stopped as soon as the command
exits. Exits with the command's status.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time


def spin(until: float) -> None:
    """Burn one CPU until the monotonic deadline (checked every few million additions)."""
    x = 0
    while time.monotonic() < until:
        for _ in range(2_000_000):
            x += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-s", type=float, default=900.0, help="the load ends by itself after this long")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="busy loops (default: CPUs)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run under load")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    until = time.monotonic() + args.max_s
    workers = [mp.Process(target=spin, args=(until,), daemon=True) for _ in range(args.workers)]
    for w in workers:
        w.start()
    try:
        return subprocess.call(command)
    finally:
        for w in workers:
            w.terminate()
            w.join(5)


if __name__ == "__main__":
    sys.exit(main())
