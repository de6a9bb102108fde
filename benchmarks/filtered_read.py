"""Filtered reads: reading 1% of a large log by type or by category, against reading it all.

``python -m benchmarks.filtered_read`` (or ``python -m benchmarks filtered_read``)
fills one store per backend (SQLite file, PostgreSQL) with ``--events`` events
(default 1,000,000) in batches of 1,000, one stream per batch. One event in 100
has the type ``Rare``; one batch in 100 goes to a stream of the ``audit-``
category. Then it times, each ``--repeat`` times (the median is reported):

* ``unfiltered``: ``read_all()`` over the whole log, keeping the ``Rare`` events
  in Python (what a filtered subscription did before filters went to the database);
* ``by type``: ``read_all(event_types=["Rare"])``;
* ``by category``: ``read_all(stream_prefixes=["audit-"])``;
* ``subscription``: a subscription with ``event_types=["Rare"]`` from 0 until its
  checkpoint reaches the head (catch-up of a subscriber to a rare type).
* ``partition 1/4``: what a projection runner of partition 0 of 4 reads, page by page
  (the store's filtered page on the stored ``stream_hash``): about a quarter of the
  log, against ``unfiltered``, which is what each partition read before.

Every filtered result is checked against the unfiltered one before it is reported.
See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

from eskit import EventStore, NewEvent, SQLiteEventStore
from eskit.stores.filtered import ReadFilter
from eskit.stores.partitions import partition_of

__all__ = ["Result", "main", "run"]

BACKENDS = ("sqlite", "postgres")
BATCH = 1_000
RARE_EVERY = 100
DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Result:
    backend: str
    scenario: str
    events: int
    returned: int
    seconds: float
    runs: list[float]

    @property
    def ms(self) -> float:
        return self.seconds * 1000


def fill(store: EventStore, events: int) -> None:
    """``events`` events in batches of 1,000; 1% of type Rare, 1% in audit- streams."""
    for start in range(0, events, BATCH):
        batch = start // BATCH
        category = "audit" if batch % RARE_EVERY == 1 else "load"
        store.append(f"{category}-{batch}", [
            NewEvent("Rare" if n % RARE_EVERY == 0 else "Common", {"n": n})
            for n in range(start, min(start + BATCH, events))
        ])


def _unfiltered(store: EventStore) -> int:
    return sum(1 for e in store.read_all() if e.event_type == "Rare")


def _by_type(store: EventStore) -> int:
    return sum(1 for _ in store.read_all(event_types=["Rare"]))


def _by_category(store: EventStore) -> int:
    return sum(1 for _ in store.read_all(stream_prefixes=["audit-"]))


def _subscription(store: EventStore) -> int:
    head = store.head_position()
    subscription = store.subscribe(event_types=["Rare"], page_size=1_000, poll_interval=0.01)
    seen = 0

    def stop_at_head() -> None:
        while subscription.position < head:
            time.sleep(0.001)
        subscription.stop()

    stopper = threading.Thread(target=stop_at_head, daemon=True)
    stopper.start()
    for _ in subscription:
        seen += 1
    stopper.join()
    return seen


def _partition(store: EventStore) -> int:
    wanted = ReadFilter(None, None).in_partitions(4, [0])
    after, more, seen = 0, True, 0
    while more:
        page, after, more, _ = store._filtered_page(after, 500, wanted, True)
        seen += len(page)
    return seen


SCENARIOS: dict[str, Callable[[EventStore], int]] = {
    "unfiltered": _unfiltered,
    "by type": _by_type,
    "by category": _by_category,
    "subscription": _subscription,
    "partition 1/4": _partition,
}


@contextmanager
def _store(backend: str, workdir: Path, dsn: str) -> Iterator[EventStore]:
    if backend == "sqlite":
        with SQLiteEventStore(workdir / "filtered.db") as store:
            yield store
        return
    import psycopg

    from eskit import PostgresEventStore

    schema = f"eskit_bench_filtered_{uuid.uuid4().hex[:8]}"
    try:
        with PostgresEventStore(dsn, schema=schema) as store:
            yield store
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _expected(store: EventStore) -> dict[str, int]:
    rare = audit = quarter = 0
    for event in store.read_all():
        rare += event.event_type == "Rare"
        audit += str(event.aggregate_id).startswith("audit-")
        quarter += partition_of(event.aggregate_id, 4) == 0
    return {"unfiltered": rare, "by type": rare, "by category": audit, "subscription": rare,
            "partition 1/4": quarter}


def run(backend: str, events: int, *, repeat: int = 3, workdir: Path,
        dsn: str = DSN, progress: Callable[[str], None] = lambda _: None) -> list[Result]:
    """Fill a store of ``backend`` and time every scenario ``repeat`` times."""
    results = []
    with _store(backend, workdir, dsn) as store:
        began = time.perf_counter()
        fill(store, events)
        progress(f"{backend}: filled {events:,} events in {time.perf_counter() - began:.1f} s")
        if backend == "postgres":
            from eskit import PostgresEventStore

            assert isinstance(store, PostgresEventStore)
            with store._connection() as conn:  # planner statistics, as autovacuum would
                conn.execute(f'ANALYZE "{store.schema}".eskit_events')
        expected = _expected(store)
        for name, scenario in SCENARIOS.items():
            runs = []
            for _ in range(repeat):
                began = time.perf_counter()
                returned = scenario(store)
                runs.append(time.perf_counter() - began)
                if returned != expected[name]:
                    raise AssertionError(
                        f"{backend} {name}: {returned} events, expected {expected[name]}"
                    )
            results.append(Result(backend, name, events, returned, median(runs), runs))
            progress(f"{backend}: {name}: {median(runs) * 1000:,.1f} ms")
    return results


def table(results: list[Result]) -> str:
    lines = [f"{'backend':<9} {'scenario':<13} {'events':>10} {'returned':>9} {'median ms':>11}"
             f" {'vs unfiltered':>14}"]
    base = {r.backend: r.seconds for r in results if r.scenario == "unfiltered"}
    for r in results:
        speedup = base[r.backend] / r.seconds if r.seconds else float("inf")
        lines.append(f"{r.backend:<9} {r.scenario:<13} {r.events:>10,} {r.returned:>9,} "
                     f"{r.ms:>11,.1f} {speedup:>13.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.filtered_read",
        description="Time reading 1%% of a log by type and by category against read_all.",
    )
    parser.add_argument("--events", type=int, default=1_000_000, metavar="N",
                        help="events in the log (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="timed runs per scenario; the median is reported (default 3)")
    parser.add_argument("--backend", action="append", choices=BACKENDS,
                        help="run only this backend (repeatable; default both)")
    parser.add_argument("--dsn", default=DSN, help="the PostgreSQL server")
    parser.add_argument("--output", type=Path, default=None, help="also write JSON results")
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be at least 1")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="eskit-filtered-") as workdir:
        for backend in args.backend or BACKENDS:
            results.extend(run(backend, args.events, repeat=args.repeat, workdir=Path(workdir),
                               dsn=args.dsn, progress=lambda m: print(m, file=sys.stderr)))
    print(table(results))
    if args.output is not None:
        args.output.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
