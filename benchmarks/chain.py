"""``python -m benchmarks.chain``: what the tamper-evidence hash chain costs on append
and read_all, SQLite file and PostgreSQL, in the same run.

Two modes, interleaved round by round in one process: ``chained`` (the store as it
is: every append computes and stores each event's chain hash) and ``unchained``
(the same store with the chain switched off the way a store of the schema before
chains runs: SQLite's insert without the hash column, PostgreSQL's schema-9
append statement and no digests computed). Each mode appends to a store of its
own and reads all of a store it filled itself (``--events`` events, so the
chained one holds the hashes). The figure per mode is its best round; the cost is
``chained`` relative to ``unchained``, of wall-clock time and of this thread's CPU
time (the client's share only: PostgreSQL's ``sha256`` runs in the server).

Operations: ``append`` (``--appends`` appends of one event, each to a fresh stream),
``append_batch`` (``--appends`` / 10 appends of 10 events to one stream each) and
``read_all`` (``--events`` events).

Run: ``.venv/bin/python -m benchmarks.chain [--backend sqlite|postgres ...] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from eskit import NewEvent, SQLiteEventStore
from eskit.stores import postgres_schema
from eskit.stores.base import EventStore

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MODES = ("chained", "unchained")
OPERATIONS = ("append", "append_batch", "read_all")


def _event(i: int) -> NewEvent:
    return NewEvent("Deposited", {"account": f"a-{i % 97}", "amount": f"{i % 997}.25",
                                  "note": "salary"}, metadata={"correlation_id": f"c-{i}"})


@contextmanager
def _mode(store: EventStore, mode: str) -> Iterator[None]:
    """Switch the chain off on ``store`` for the block (``unchained``)."""
    if mode == "chained":
        yield
        return
    if isinstance(store, SQLiteEventStore):
        store._chained = False
        try:
            yield
        finally:
            store._chained = True
        return
    statements: Any = store.sql  # type: ignore[attr-defined]
    chained, digests = statements.append, postgres_schema.digests
    statements.append = statements._append_dcb
    postgres_schema.digests = lambda stream, batch: []  # type: ignore[assignment]
    try:
        yield
    finally:
        statements.append, postgres_schema.digests = chained, digests


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and this thread's CPU seconds of ``fn()`` (CPU time: what other
    processes' load does not add, so the cost shows through a busy machine's noise)."""
    gc.collect()
    started, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - started, time.thread_time() - cpu


def _append(store: EventStore, prefix: str, appends: int) -> None:
    for i in range(appends):
        store.append(f"{prefix}-{i}", [_event(i)])


def _append_batch(store: EventStore, prefix: str, appends: int) -> None:
    for i in range(max(1, appends // 10)):
        store.append(f"{prefix}-{i}", [_event(i * 10 + j) for j in range(10)])


def _read_all(store: EventStore) -> None:
    for _ in store.read_all():
        pass


class _Stores:
    def __init__(self, backend: str, folder: Path, synchronous: str, dsn: str) -> None:
        self.backend, self.folder, self.synchronous, self.dsn = backend, folder, synchronous, dsn
        self.schemas: list[str] = []
        self.writers = {m: self._open(f"w_{m}") for m in MODES}
        self.readers = {m: self._open(f"r_{m}") for m in MODES}

    def _open(self, name: str) -> EventStore:
        if self.backend == "sqlite":
            return SQLiteEventStore(self.folder / f"{name}.db",
                                    synchronous=self.synchronous)  # type: ignore[arg-type]
        from eskit.stores.postgres import PostgresEventStore

        schema = f"eskit_bench_chain_{uuid.uuid4().hex[:8]}_{name}"
        self.schemas.append(schema)
        return PostgresEventStore(self.dsn, schema=schema)

    def close(self) -> None:
        for store in (*self.writers.values(), *self.readers.values()):
            store.close()
        if self.schemas:
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run(appends: int, events: int, rounds: int, *, backend: str = "sqlite",
        synchronous: str = "FULL", dsn: str = DSN) -> dict[str, dict[str, float]]:
    """Per mode and operation (and ``OPERATION_cpu``): the best round's events per
    second, of wall-clock and of this thread's CPU time."""
    keys = [k for op in OPERATIONS for k in (op, f"{op}_cpu")]
    best: dict[str, dict[str, float]] = {m: dict.fromkeys(keys, 0.0) for m in MODES}

    def note(mode: str, op: str, count: int, took: tuple[float, float]) -> None:
        for key, seconds in ((op, took[0]), (f"{op}_cpu", took[1])):
            best[mode][key] = max(best[mode][key], count / max(seconds, 1e-9))

    with tempfile.TemporaryDirectory() as folder:
        stores = _Stores(backend, Path(folder), synchronous, dsn)
        try:
            for mode in MODES:
                reader = stores.readers[mode]
                with _mode(reader, mode):
                    for start in range(0, events, 100):
                        reader.append(f"fill-{start // 100}",
                                      [_event(start + j) for j in range(min(100, events - start))])
                with _mode(stores.writers[mode], mode):
                    _append(stores.writers[mode], "warm-up", 20)
            for r in range(rounds):
                for mode in MODES[r % 2:] + MODES[:r % 2]:  # alternate who goes first
                    writer = stores.writers[mode]
                    with _mode(writer, mode):
                        note(mode, "append", appends,
                             _timed(partial(_append, writer, f"r{r}", appends)))
                        note(mode, "append_batch", max(1, appends // 10) * 10,
                             _timed(partial(_append_batch, writer, f"b{r}", appends)))
                    note(mode, "read_all", events, _timed(partial(_read_all, stores.readers[mode])))
        finally:
            stores.close()
    return best


def cost(result: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per operation (and ``OPERATION_cpu``): how much slower chained is than unchained
    (0.10 = 10% slower)."""
    return {key: result["unchained"][key] / result["chained"][key] - 1
            for key in result["chained"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chain")
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    report = {}
    for backend in args.backend or ["sqlite", "postgres"]:
        result = run(args.appends, args.events, args.rounds, backend=backend,
                     synchronous=args.synchronous)
        report[backend] = {"rates": result, "cost": cost(result)}
        costs = cost(result)
        for op in OPERATIONS:
            print(f"{backend:8} {op:12} chained {result['chained'][op]:9.0f}/s  unchained "
                  f"{result['unchained'][op]:9.0f}/s  cost {costs[op]:+6.1%}  "
                  f"(CPU time: {costs[op + '_cpu']:+6.1%})")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
