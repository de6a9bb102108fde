"""Instructions per event of data protection, counted by valgrind's callgrind.

``python -m benchmarks.protection_ic [--events N] [--modes plain,fields,...]``

Wall-clock rates on a shared machine move with its load; instruction counts do not.
For each mode of :mod:`benchmarks.protection` and each operation (``read_all``, and
``append`` in batches), the whole process is counted twice under callgrind, at one
pass and at three passes over ``--events`` events on SQLite; the difference over
2 x events is the cost of one event, with start-up and set-up cancelled out.
Needs ``valgrind`` on the PATH; each count runs the interpreter 20-50x slower.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.protection import MODES, Sizes, batches, fresh_store, wrap

_COLLECTED = re.compile(rb"Collected : (\d+)")


def work(mode: str, what: str, passes: int, events: int) -> None:
    """The counted process: set up, then ``passes`` passes of ``what``."""
    appended = events * passes if what == "append" else events
    sizes = Sizes(events=appended, streams=40, subjects=400, batch=50)
    with tempfile.TemporaryDirectory() as tmp, fresh_store("sqlite", Path(tmp), "ic") as inner:
        store = wrap(inner, mode)
        for stream, batch in batches(sizes):
            store.append(stream, batch)
        if what == "read":
            for _ in range(passes):
                sum(1 for _ in store.read_all())


def count(mode: str, what: str, passes: int, events: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-m", "benchmarks.protection_ic", "--work", mode, what, str(passes), str(events)],
        capture_output=True, check=True,
    )
    found = _COLLECTED.search(out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count: {out.stderr[-500:]!r}")
    return int(found.group(1))


def per_event(mode: str, what: str, events: int) -> int:
    return (count(mode, what, 3, events) - count(mode, what, 1, events)) // (2 * events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.protection_ic")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--work", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.work:
        mode, what, passes, events = args.work
        work(mode, what, int(passes), int(events))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    print("| mode | read_all instructions/event | append instructions/event |")
    print("|---|---:|---:|")
    for mode in args.modes.split(","):
        read, append = per_event(mode, "read", args.events), per_event(mode, "append", args.events)
        print(f"| {mode} | {read:,} | {append:,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
