"""Projection throughput: events/s into a SQL read model, eskit beside raw psycopg.

``python -m benchmarks.projections [--events N] [--repeat R] [--backend sqlite|postgres]``

Each run projects the same N deposit events (on 200 streams) into a per-account
balance table (one upsert per event, batches of 500 events per transaction, the
checkpoint in the same transaction) from a fresh checkpoint. The scenarios:

* ``execute``: the handler upserts with ``tx.execute`` (a round trip per event on
  PostgreSQL); 1 and 2 partitions. With 2, two worker processes each take the
  streams that hash to their partition; both read the whole log.
* ``write``: the same handler with ``tx.write``: on PostgreSQL a batch's upserts
  go in one pipeline before the checkpoint; 1 and 2 partitions.
* ``async write`` (PostgreSQL): ``write`` under ``AsyncProjectionRunner`` on an
  ``AsyncPostgresEventStore``.
* ``raw`` and ``raw writes`` (PostgreSQL): the same projection by hand with psycopg,
  batched the same way (``benchmarks/projections_raw.py``): reading the log, or
  only the upserts with their parameters built beforehand.

Repeats go round the scenarios in turn, so that a change in the machine's load
falls on all of them; the ratios are taken per repeat. ``CPU us/event`` is the
workers' own CPU time (every thread of theirs, not the database server's) per event:
where the client's work, not a round trip, is what a scenario waits on. Timing starts when every
worker has connected and set up, and ends when the last one has caught up.
PostgreSQL: ``ESKIT_TEST_POSTGRES_DSN`` or the local test server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from typing import Any, NamedTuple

from eskit import NewEvent, SQLiteEventStore
from eskit.projections import PostgresTarget, Projection, ProjectionRunner, SQLiteTarget, Tx

DSN = os.environ.get("ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


UPSERT = (
    "INSERT INTO {table} AS b VALUES ({p}, 1, {p}) ON CONFLICT (account) DO UPDATE "
    "SET deposits = b.deposits + 1, cents = b.cents + excluded.cents"
)


class Balances(Projection):
    name = "bench.balances"

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table

    def setup(self, tx: Tx) -> None:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                   "(account TEXT PRIMARY KEY, deposits INTEGER NOT NULL, cents BIGINT NOT NULL)")

    def handle_BenchDeposited(self, event: Any, tx: Tx) -> None:
        # The same projection runs on SQLite and PostgreSQL: markers from tx.placeholder.
        tx.execute(UPSERT.format(table=self.table, p=tx.placeholder),
                   (str(event.aggregate_id), event.event_data["cents"]))


class WrittenBalances(Balances):
    """:class:`Balances` with ``tx.write``: the upserts' rows are not needed."""

    def handle_BenchDeposited(self, event: Any, tx: Tx) -> None:
        tx.write(UPSERT.format(table=self.table, p=tx.placeholder),
                 (str(event.aggregate_id), event.event_data["cents"]))


class Scenario(NamedTuple):
    name: str
    partitions: int
    kind: str
    """``execute``, ``write``, ``async`` (write, async runner), ``raw``, ``raw-writes``."""


SCENARIOS = {
    "sqlite": [Scenario("execute", 1, "execute"), Scenario("execute", 2, "execute"),
               Scenario("write", 1, "write")],
    "postgres": [Scenario("execute", 1, "execute"), Scenario("execute", 2, "execute"),
                 Scenario("write", 1, "write"), Scenario("write", 2, "write"),
                 Scenario("async write", 1, "async"), Scenario("raw", 1, "raw"),
                 Scenario("raw writes", 1, "raw-writes")],
}
RATIOS = [("write", "raw"), ("write", "raw writes"), ("async write", "raw"),
          ("execute", "raw"), ("write", "execute")]
"""(scenario, baseline) pairs shown as ratios of events/s, 1 partition each."""


def _open(backend: str, where: str) -> tuple[Any, Any]:
    if backend == "sqlite":
        return SQLiteEventStore(where), SQLiteTarget(where)
    from eskit.stores.postgres import PostgresEventStore

    return PostgresEventStore(DSN, schema=where), PostgresTarget(DSN, schema=where)


def _worker(backend: str, where: str, tag: str, partition: int, partitions: int, kind: str,
            ready: Any, start: Any, cpu: Any) -> None:
    """One worker of a scenario; adds the CPU seconds it spent once started to ``cpu``."""
    if kind.startswith("raw"):
        spent = _raw_worker(where, tag, kind, ready, start)
    elif kind == "async":
        spent = asyncio.run(_async_worker(where, tag, ready, start))
    else:
        spent = _sync_worker(backend, where, tag, partition, partitions, kind, ready, start)
    with cpu.get_lock():
        cpu.value += spent


def _sync_worker(backend: str, where: str, tag: str, partition: int, partitions: int,
                 kind: str, ready: Any, start: Any) -> float:
    store, target = _open(backend, where)
    projection = (WrittenBalances if kind == "write" else Balances)(f"bench_{tag}")
    runner = ProjectionRunner(store, projection, target, name=f"bench-{tag}",
                              partition=partition, partitions=partitions, batch_size=500)
    runner.setup()
    ready.release()
    start.wait()
    began = time.process_time()  # every thread of the process: the read-ahead's too
    runner.run_until_caught_up()
    spent = time.process_time() - began
    store.close()
    target.close()
    return spent


async def _async_worker(where: str, tag: str, ready: Any, start: Any) -> float:
    from eskit.aio import AsyncPostgresEventStore, AsyncProjectionRunner

    async with AsyncPostgresEventStore(DSN, schema=where) as store:
        target = PostgresTarget(DSN, schema=where)
        runner = AsyncProjectionRunner(store, WrittenBalances(f"bench_{tag}"), target,
                                       name=f"bench-{tag}", batch_size=500)
        await runner.setup()
        ready.release()
        await asyncio.to_thread(start.wait)
        began = time.process_time()
        await runner.run_until_caught_up()
        spent = time.process_time() - began
        target.close()
    return spent


def _raw_worker(where: str, tag: str, kind: str, ready: Any, start: Any) -> float:
    from benchmarks.projections_raw import RawProjector

    raw = RawProjector(DSN, where, f"bench_{tag}")
    batches = raw.prepared_writes() if kind == "raw-writes" else []
    ready.release()
    start.wait()
    began = time.process_time()
    if kind == "raw-writes":
        raw.write_only(batches)
    else:
        raw.run_until_caught_up()
    spent = time.process_time() - began
    raw.close()
    return spent


def _fill(backend: str, where: str, events: int) -> None:
    store, target = _open(backend, where)
    for i in range(events // 100):
        store.append(f"account-{i % 200}", [
            NewEvent("BenchDeposited", {"cents": 100 + j}) for j in range(100)
        ])
    store.close()
    target.close()
    if backend == "postgres":
        import psycopg

        # Without it the first scenario to read the fresh rows pays for setting their
        # hint bits, or races autovacuum doing it (measured: 30 ms instead of 1.2 ms
        # for each of the first pages), and the scenarios are not measured alike.
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'VACUUM ANALYZE "{where}".eskit_events')


class Measure(NamedTuple):
    rate: float
    """Events per second, wall clock."""
    cpu: float
    """Microseconds of the workers' CPU per event (all their threads; not the server's)."""


def _measure(backend: str, where: str, scenario: Scenario, events: int) -> Measure:
    context = multiprocessing.get_context("spawn")
    ready, start, cpu = context.Semaphore(0), context.Event(), context.Value("d", 0.0)
    tag = uuid.uuid4().hex[:8]
    workers = [
        context.Process(target=_worker, args=(backend, where, tag, p, scenario.partitions,
                                              scenario.kind, ready, start, cpu))
        for p in range(scenario.partitions)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    began = time.perf_counter()
    start.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    if any(w.exitcode for w in workers):
        raise RuntimeError("a benchmark worker failed")
    _check(backend, where, f"bench_{tag}", events)
    return Measure(events / elapsed, cpu.value / events * 1e6)


def _check(backend: str, where: str, table: str, events: int) -> None:
    """Every scenario must have built the same read model: each deposit counted once."""
    query = f"SELECT sum(deposits), sum(cents) FROM {table}"
    if backend == "sqlite":
        import sqlite3

        with contextlib.closing(sqlite3.connect(where)) as conn:
            found = conn.execute(query).fetchone()
    else:
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as conn:
            found = conn.execute(query.replace(" FROM ", f' FROM "{where}".')).fetchone()
    expected = (events, events // 100 * sum(100 + j for j in range(100)))
    if tuple(int(x) for x in found) != expected:
        raise RuntimeError(f"{table} holds {found}, not {expected}")


def run(backend: str, events: int, repeat: int) -> dict[tuple[str, int], list[Measure]]:
    """Every scenario of ``backend``, ``repeat`` runs each, taken in turns."""
    runs: dict[tuple[str, int], list[Measure]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        where = os.path.join(tmp, "bench.db") if backend == "sqlite" else \
            f"eskit_bench_{uuid.uuid4().hex[:8]}"
        _fill(backend, where, events)
        try:
            for _ in range(repeat):
                for scenario in SCENARIOS[backend]:
                    runs.setdefault((scenario.name, scenario.partitions), []).append(
                        _measure(backend, where, scenario, events)
                    )
        finally:
            if backend == "postgres":
                import psycopg

                with psycopg.connect(DSN, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgres"]:
        runs = run(backend, args.events, args.repeat)
        print(f"{'backend':10} {'scenario':12} {'partitions':>10} {'events/s (median)':>18} "
              f"{'CPU us/event':>12}  runs (events/s)")
        for (name, partitions), measures in runs.items():
            rates = [m.rate for m in measures]
            shown = ", ".join(f"{r:,.0f}" for r in rates)
            cpu = statistics.median(m.cpu for m in measures)
            print(f"{backend:10} {name:12} {partitions:>10} "
                  f"{statistics.median(rates):>18,.0f} {cpu:>12.1f}  {shown}", flush=True)
        for name, baseline in RATIOS:
            if (name, 1) in runs and (baseline, 1) in runs:
                ratios = [a.rate / b.rate
                          for a, b in zip(runs[name, 1], runs[baseline, 1], strict=True)]
                shown = ", ".join(f"{r:.2f}" for r in ratios)
                print(f"{backend:10} {name} / {baseline}: median {statistics.median(ratios):.2f} "
                      f"(per repeat: {shown})", flush=True)


if __name__ == "__main__":
    main()
