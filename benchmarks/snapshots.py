"""Snapshot and time-travel benchmarks: what a snapshot saves when loading.

``python -m benchmarks.snapshots`` (or ``python -m benchmarks snapshots``) times
``Repository.get`` on one store per backend:

* a 10-event account, the baseline;
* a 10,010-event account replayed from its first event, and the same account
  loaded through its snapshot at version 10,000 (then 10 events);
* time travel to version 9,505, by version and by time (``as_of``), without
  snapshots (9,505 events replayed) and with them (the snapshot at 9,000, then
  505 events).

The target: loading through a snapshot costs about what loading a 10-event
aggregate costs, whatever the aggregate's length. Every scenario checks that
the loads with and without snapshots agree (version and balance) before it is
reported. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.model import EVENT_TYPE, Account, amounts
from eskit import (
    EventStore,
    InMemoryEventStore,
    InMemorySnapshotStore,
    NewEvent,
    OnDemand,
    Repository,
    SnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
)

__all__ = ["DEFAULT", "QUICK", "Sizes", "main", "run"]

RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Sizes:
    long: int = 10_000
    """Events up to the newest snapshot of the long account."""
    tail: int = 10
    """Events after it (and the length of the short account)."""
    every: int = 1_000
    """Snapshots of the long account every this many versions."""
    target: int = 9_505
    """The version time travel goes to."""
    batch: int = 1_000


DEFAULT = Sizes()
QUICK = Sizes(long=300, tail=10, every=100, target=255, batch=100)


@dataclass
class Result:
    scenario: str
    backend: str
    replayed: int
    seconds: list[float] = field(default_factory=list)
    loops: int = 1

    @property
    def ms(self) -> float:
        return median(self.seconds) * 1000


# --------------------------------------------------------------------------- backends


@contextmanager
def open_stores(backend: str, workdir: Path) -> Iterator[tuple[EventStore, SnapshotStore]]:
    if backend == "memory":
        store: EventStore = InMemoryEventStore()
        yield store, InMemorySnapshotStore(store)
        return
    if backend == "sqlite":
        sqlite_store = SQLiteEventStore(workdir / "snapshots-bench.db")
        try:
            yield sqlite_store, SQLiteSnapshotStore(sqlite_store)
        finally:
            sqlite_store.close()
        return
    assert backend == "postgres"
    import uuid

    import psycopg

    from eskit import PostgresEventStore, PostgresSnapshotStore

    dsn = postgres_dsn()
    schema = f"eskit_bench_snap_{uuid.uuid4().hex[:10]}"
    pg = PostgresEventStore(dsn, schema=schema, pool_size=2)
    try:
        yield pg, PostgresSnapshotStore(pg)
    finally:
        pg.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def postgres_dsn() -> str:
    return os.environ.get(
        "ESKIT_BENCH_POSTGRES_DSN",
        os.environ.get("ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )


BACKENDS = ("sqlite", "postgres", "memory")


# --------------------------------------------------------------------------- filling (untimed)


def fill(store: EventStore, snapshots: SnapshotStore, sizes: Sizes) -> None:
    """The short account ('short', ``tail`` events) and the long one ('long', ``long + tail``).

    Event ``i`` of the long account is recorded at ``T0 + i`` milliseconds, so
    that a moment names a version exactly. Snapshots of the long account are
    taken every ``every`` versions up to ``long``; the short account has none.
    """
    amts = amounts(sizes.long + sizes.tail)
    store.append("short", [NewEvent(EVENT_TYPE, {"amount": a}) for a in amts[: sizes.tail]], 0)
    total = sizes.long + sizes.tail
    for start in range(0, total, sizes.batch):
        stop = min(start + sizes.batch, total)
        store.append("long", [
            NewEvent(EVENT_TYPE, {"amount": amts[i]}, timestamp=T0 + (i + 1) * STEP)
            for i in range(start, stop)
        ], start)
    # Each snapshot is loaded from the one before it, so filling stays linear in length.
    repo = Repository(store, snapshots=snapshots, snapshot_policy=OnDemand())
    for version in range(sizes.every, sizes.long + 1, sizes.every):
        repo.take_snapshot(repo.get("long", Account, version=version))


# --------------------------------------------------------------------------- timing


def _time(load: Callable[[], Account], repeat: int, budget: float) -> tuple[list[float], int, Any]:
    """Median-ready per-load seconds: ``repeat`` runs of enough loads to fill ``budget``."""
    result = load()  # warm-up: caches, connections, prepared statements
    started = time.perf_counter()
    load()
    once = time.perf_counter() - started
    loops = max(1, min(1_000, int(budget / max(once, 1e-6))))
    runs = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        for _ in range(loops):
            load()
        runs.append((time.perf_counter() - started) / loops)
    return runs, loops, (result.version, result.balance)


def run(backend: str, sizes: Sizes, repeat: int, workdir: Path,
        budget: float = 0.25) -> list[Result]:
    """Every scenario on one backend; raises ``AssertionError`` if two sides disagree."""
    results: list[Result] = []
    with open_stores(backend, workdir) as (store, snapshots):
        fill(store, snapshots, sizes)
        plain = Repository(store)
        snap = Repository(store, snapshots=snapshots, snapshot_policy=OnDemand())
        moment = T0 + sizes.target * STEP
        from_snapshot = sizes.target - sizes.target // sizes.every * sizes.every
        head = sizes.long + sizes.tail
        scenarios: list[tuple[str, int, Callable[[], Account], str]] = [
            (f"get, {sizes.tail} events", sizes.tail,
             lambda: plain.get("short", Account), "short"),
            (f"get, {head:,} events, replayed", head,
             lambda: plain.get("long", Account), "long"),
            (f"get, {head:,} events, snapshot at {sizes.long:,}", sizes.tail,
             lambda: snap.get("long", Account), "long"),
            (f"get(version={sizes.target:,}), replayed", sizes.target,
             lambda: plain.get("long", Account, version=sizes.target), "past"),
            (f"get(version={sizes.target:,}), snapshot below", from_snapshot,
             lambda: snap.get("long", Account, version=sizes.target), "past"),
            (f"get(as_of=...) = version {sizes.target:,}, replayed", sizes.target,
             lambda: plain.get("long", Account, as_of=moment), "past"),
            (f"get(as_of=...) = version {sizes.target:,}, snapshot below", from_snapshot,
             lambda: snap.get("long", Account, as_of=moment), "past"),
        ]
        agreed: dict[str, Any] = {}
        for title, replayed, load, group in scenarios:
            seconds, loops, outcome = _time(load, repeat, budget)
            expected = agreed.setdefault(group, outcome)
            assert outcome == expected, f"{title} on {backend}: {outcome} != {expected}"
            results.append(Result(title, backend, replayed, seconds, loops))
        assert agreed["past"][0] == sizes.target
    return results


# --------------------------------------------------------------------------- the command


def table(results: list[Result]) -> Any:
    from rich.table import Table

    out = Table(title="Repository.get with and without snapshots: median ms per load",
                caption="x short = ms / ms of the short-aggregate load on the same backend")
    out.add_column("scenario", no_wrap=True)
    out.add_column("backend")
    out.add_column("events replayed", justify="right")
    out.add_column("ms per load", justify="right")
    out.add_column("x short", justify="right")
    base: dict[str, float] = {}
    for r in results:
        base.setdefault(r.backend, r.ms)  # each backend's first scenario: the short account
    for r in results:
        out.add_row(r.scenario, r.backend, f"{r.replayed:,}", f"{r.ms:.3f}",
                    f"{r.ms / base[r.backend]:.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.snapshots",
        description="Time Repository.get with and without snapshots, and time travel.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--long", type=int, default=None, metavar="N",
                        help="the long account's snapshot version (default 10,000); time "
                             "travel goes to N - 495")
    parser.add_argument("--repeat", type=int, default=7, metavar="N",
                        help="timed runs per scenario; the median is reported (default 7)")
    parser.add_argument("--backend", action="append", choices=BACKENDS,
                        help="run only this backend (repeatable; default all three)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default benchmarks/results/snapshots.json)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sizes = QUICK if args.quick else DEFAULT
    if args.long is not None:
        if args.long < 1_000 or args.long % 1_000:
            parser.error("--long must be a multiple of 1,000")
        sizes = replace(sizes, long=args.long, target=args.long - 495)
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 110)
    results: list[Result] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="eskit-bench-snap-") as tmp:
        for backend in [b for b in BACKENDS if b in (args.backend or BACKENDS)]:
            with console.status(f"{backend}: filling and timing"):
                results.extend(run(backend, sizes, args.repeat, Path(tmp)))
    console.print(table(results))
    elapsed = time.perf_counter() - started
    console.print(
        f"total {elapsed:.1f} s | 1-minute load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after | Python {platform.python_version()} | "
        f"SQLite {sqlite3.sqlite_version}",
        highlight=False,
    )
    output = args.output or RESULTS / ("snapshots-quick.json" if args.quick else "snapshots.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.snapshots", *(argv or sys.argv[1:])]),
        "sizes": asdict(sizes),
        "repeat": args.repeat,
        "total_seconds": elapsed,
        "results": [
            {**asdict(r), "median_ms": r.ms} for r in results
        ],
    }, indent=2) + "\n")
    console.print(f"wrote {output}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
