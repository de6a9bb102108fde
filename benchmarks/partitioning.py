"""A partitioned PostgreSQL events table against the same table unpartitioned.

``python -m benchmarks.partitioning [--events N] [--size S] [--repeat R] [--dsn DSN]``

Fills one PostgreSQL store with ``--events`` events (default 1,000,000) in
streams of 100 (batches of 100 per append), times each workload ``--repeat``
times on it, then partitions it (``eskit.maintenance.partitioning.partition_events``
with ``--size`` positions per partition, timed: the migration), and times the
same workloads again on the same rows. The workloads:

* ``command append``: 1,000 one-event appends to existing streams, each at the
  expected version (what a command handler does);
* ``batch append``: 100 appends of 100 events to new streams;
* ``load``: ``read_stream`` of 1,000 streams of 100 events or more, in random order;
* ``read_all``: 200,000 events from the start, in pages.

Medians of the repeats; ``after/before`` is the partitioned rate over the
unpartitioned one. See benchmarks/README.md, "Partitioning".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psycopg

from eskit import NewEvent, PostgresEventStore
from eskit.maintenance.partitioning import list_partitions, partition_events

__all__ = ["Row", "main", "run"]

DSN = os.environ.get("ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PER_STREAM = 100


@dataclass
class Row:
    workload: str
    events: int
    before: float
    """events/s, unpartitioned (median)"""
    after: float
    """events/s, partitioned (median)"""
    before_runs: list[float]
    after_runs: list[float]


def _payload(n: int) -> dict[str, object]:
    return {"account": n % 997, "amount": n % 10_000, "note": "deposit"}


def fill(store: PostgresEventStore, events: int) -> int:
    """``events`` events in streams of 100; the number of streams."""
    streams = max(1, events // PER_STREAM)
    for s in range(streams):
        store.append(f"acct-{s}", [NewEvent("Deposited", _payload(n))
                                   for n in range(PER_STREAM)], 0)
    return streams


def _workloads(store: PostgresEventStore, streams: int, rng: random.Random,
               heads: dict[int, int], ops: int) -> dict[str, tuple[int, Callable[[], int]]]:
    picks = [rng.randrange(streams) for _ in range(ops)]

    def command_append() -> int:
        for s in picks:
            heads[s] = store.append(f"acct-{s}", [NewEvent("Deposited", _payload(s))],
                                    heads[s]).version
        return len(picks)

    def batch_append() -> int:
        tag = uuid.uuid4().hex[:8]
        for b in range(ops // 10):
            store.append(f"batch-{tag}-{b}", [NewEvent("Deposited", _payload(n))
                                              for n in range(100)], 0)
        return ops // 10 * 100

    def load() -> int:
        return sum(len(store.read_stream(f"acct-{s}")) for s in picks)

    def read_all() -> int:
        return sum(1 for _ in store.read_all(limit=min(200_000, streams * PER_STREAM)))

    return {"command append": (ops, command_append), "batch append": (ops * 10, batch_append),
            "load": (0, load), "read_all": (0, read_all)}


def _time(workloads: dict[str, tuple[int, Callable[[], int]]], repeat: int
          ) -> dict[str, tuple[int, list[float]]]:
    out: dict[str, tuple[int, list[float]]] = {}
    for _ in range(repeat):  # round the workloads, so a load change falls on all of them
        for name, (_, work) in workloads.items():
            began = time.perf_counter()
            done = work()
            spent = time.perf_counter() - began
            rates = out.get(name, (done, []))[1]
            rates.append(done / spent)
            out[name] = (done, rates)
    return out


def run(events: int, size: int, *, repeat: int = 3, dsn: str = DSN, ops: int = 1_000,
        progress: Callable[[str], object] = lambda _: None) -> tuple[list[Row], float, int]:
    """The rows, the migration's seconds and the partition count."""
    schema = f"eskit_bench_partitions_{uuid.uuid4().hex[:8]}"
    try:
        with PostgresEventStore(dsn, schema=schema) as store:
            began = time.perf_counter()
            streams = fill(store, events)
            progress(f"filled {streams * PER_STREAM:,} events in "
                     f"{time.perf_counter() - began:.1f} s")
            with store._connection() as conn:  # planner statistics, as autovacuum would
                conn.execute(f'VACUUM (ANALYZE) "{schema}".eskit_events')
            heads = {s: PER_STREAM for s in range(streams)}  # as the appends move them
            before = _time(_workloads(store, streams, random.Random(1), heads, ops), repeat)
            began = time.perf_counter()
            moved = partition_events(store, size=size, ahead=2)
            migration = time.perf_counter() - began
            progress(f"partitioned {moved:,} events in {migration:.1f} s")
            with store._connection() as conn:
                conn.execute(f'VACUUM (ANALYZE) "{schema}".eskit_events')
            partitions = len(list_partitions(store))
            after = _time(_workloads(store, streams, random.Random(1), heads, ops), repeat)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    rows = [Row(name, before[name][0], statistics.median(before[name][1]),
                statistics.median(after[name][1]), before[name][1], after[name][1])
            for name in before]
    return rows, migration, partitions


def table(rows: list[Row], migration: float, events: int, partitions: int) -> str:
    lines = [f"{'workload':<15} {'events':>8} {'before ev/s':>12} {'after ev/s':>11} "
             f"{'after/before':>13}"]
    for r in rows:
        lines.append(f"{r.workload:<15} {r.events:>8,} {r.before:>12,.0f} {r.after:>11,.0f} "
                     f"{r.after / r.before:>12.2f}x")
    lines.append(f"migration: {events:,} events in {migration:.1f} s "
                 f"({events / migration:,.0f} events/s), {partitions} partitions")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partitioning",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--size", type=int, default=100_000, metavar="S",
                        help="positions per partition (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R")
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--output", help="also write JSON results")
    args = parser.parse_args(argv)
    rows, migration, partitions = run(args.events, args.size, repeat=args.repeat,
                                      dsn=args.dsn, progress=lambda m: print(m, flush=True))
    print(table(rows, migration, args.events, partitions))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"rows": [asdict(r) for r in rows], "migration_s": migration,
                       "events": args.events, "partitions": partitions}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
