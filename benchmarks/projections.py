"""Projection throughput: events/s into a SQL read model, 1 and 2 partitions.

``python -m benchmarks.projections [--events N] [--repeat R] [--backend sqlite|postgres]``

Each run projects the same N deposit events (on 200 streams) into a per-account
balance table (one upsert per event, batches of 500 events per transaction, the
checkpoint in the same transaction) from a fresh checkpoint. With 2 partitions, two
worker processes each take the streams that hash to their partition; both read the
whole log. Timing starts when every worker has connected and set up, and ends when
the last one has caught up. PostgreSQL: ``ESKIT_TEST_POSTGRES_DSN`` or the local test
server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

from eskit import NewEvent, SQLiteEventStore
from eskit.projections import PostgresTarget, Projection, ProjectionRunner, SQLiteTarget, Tx

DSN = os.environ.get("ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class Balances(Projection):
    name = "bench.balances"

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table

    def setup(self, tx: Tx) -> None:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                   "(account TEXT PRIMARY KEY, deposits INTEGER NOT NULL, cents BIGINT NOT NULL)")

    def handle_BenchDeposited(self, event: Any, tx: Tx) -> None:
        p = tx.placeholder  # the same projection runs on SQLite and PostgreSQL
        tx.execute(
            f"INSERT INTO {self.table} AS b VALUES ({p}, 1, {p}) ON CONFLICT (account) DO UPDATE "
            "SET deposits = b.deposits + 1, cents = b.cents + excluded.cents",
            (str(event.aggregate_id), event.event_data["cents"]),
        )


def _open(backend: str, where: str) -> tuple[Any, Any]:
    if backend == "sqlite":
        return SQLiteEventStore(where), SQLiteTarget(where)
    from eskit.stores.postgres import PostgresEventStore

    return PostgresEventStore(DSN, schema=where), PostgresTarget(DSN, schema=where)


def _worker(backend: str, where: str, tag: str, partition: int, partitions: int,
            ready: Any, start: Any) -> int:
    store, target = _open(backend, where)
    runner = ProjectionRunner(store, Balances(f"bench_{tag}"), target, name=f"bench-{tag}",
                              partition=partition, partitions=partitions, batch_size=500)
    runner.setup()
    ready.release()
    start.wait()
    handled = runner.run_until_caught_up()
    store.close()
    target.close()
    return handled


def _fill(backend: str, where: str, events: int) -> None:
    store, target = _open(backend, where)
    for i in range(events // 100):
        store.append(f"account-{i % 200}", [
            NewEvent("BenchDeposited", {"cents": 100 + j}) for j in range(100)
        ])
    store.close()
    target.close()


def _measure(backend: str, where: str, partitions: int, events: int) -> float:
    context = multiprocessing.get_context("spawn")
    ready, start = context.Semaphore(0), context.Event()
    tag = uuid.uuid4().hex[:8]
    workers = [
        context.Process(target=_worker, args=(backend, where, tag, p, partitions, ready, start))
        for p in range(partitions)
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
    return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    print(f"{'backend':10} {'partitions':>10} {'events/s (median)':>18}  runs")
    for backend in args.backend or ["sqlite", "postgres"]:
        with tempfile.TemporaryDirectory() as tmp:
            where = os.path.join(tmp, "bench.db") if backend == "sqlite" else \
                f"eskit_bench_{uuid.uuid4().hex[:8]}"
            _fill(backend, where, args.events)
            try:
                for partitions in (1, 2):
                    runs = [_measure(backend, where, partitions, args.events)
                            for _ in range(args.repeat)]
                    shown = ", ".join(f"{r:,.0f}" for r in runs)
                    print(f"{backend:10} {partitions:>10} {statistics.median(runs):>18,.0f}  "
                          f"{shown}", flush=True)
            finally:
                if backend == "postgres":
                    import psycopg

                    with psycopg.connect(DSN, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')


if __name__ == "__main__":
    main()
