"""``python -m benchmarks.observability``: the cost of tracing on appends, loads, read_all
and projection batches, SQLite file and PostgreSQL.

Three modes, interleaved round by round in one process so that they share the
machine's state: ``off`` (never instrumented: the hooks read one attribute),
``noop`` (instrumented with OpenTelemetry's no-op provider, what an application
gets with the API but no SDK) and ``sdk`` (the SDK recording every span, sampled always, through a
BatchSpanProcessor, as in production, into an exporter that drops them: the cost of
a recorded span and of writing the trace context into each event).
Metrics are off in every mode: this measures tracing. The figure per mode is its
best round (on a shared machine noise only ever slows a round down); the overhead
is relative to ``off``. The appending SQLite stores use the default durability
(``synchronous=FULL``) unless ``--synchronous NORMAL``.

Operations: ``append`` (to a fresh stream, ``--appends`` per round, of
``--batch`` events, default 1, each with a correlation id in its metadata),
``load`` (``Repository.get`` of one of 50 accounts of ``--events`` / 50 events each,
1,000 with the defaults, ``--loads`` per round: one load span each), ``read_all``
(``--events`` events: one span per page of 1,000) and ``projection`` (a fresh
``ProjectionRunner`` catching up on ``--projected`` events into a SQLite file / the
same PostgreSQL schema, batches of 500: one span per batch, linked to the appends of
its events).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

from benchmarks.model import Account, Deposited
from eskit import InMemoryEventStore, NewEvent, Repository, SQLiteEventStore, observability
from eskit.projections import (
    InMemoryTarget,
    PostgresTarget,
    Projection,
    ProjectionRunner,
    SQLiteTarget,
    Tx,
)
from eskit.projections.checkpoints import ProjectionTarget
from eskit.stores.base import EventStore

DSN = os.environ.get("ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MODES = ("off", "noop", "sdk")


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _set_mode(mode: str, sdk: TracerProvider) -> None:
    if mode == "off":
        observability.uninstrument()
    else:
        provider = sdk if mode == "sdk" else NoOpTracerProvider()
        observability.instrument(tracer_provider=provider, otel_metrics=False)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()`` (CPU time: what other processes' load
    does not add, so the overhead shows through a busy machine's noise)."""
    gc.collect()  # a collection triggered by the previous mode's garbage is not this one's
    started, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - started, time.thread_time() - cpu


def _append_all(store: EventStore, prefix: str, appends: int, batch: int = 1) -> None:
    for i in range(appends):
        store.append(f"{prefix}-{i}", [
            NewEvent("E", {"n": i}, metadata={"correlation_id": f"c-{i}"}) for _ in range(batch)
        ])


def _load_all(store: EventStore, loads: int) -> None:
    repository = Repository(store)
    for i in range(loads):
        repository.get(f"account-{i % 50}", Account)


class _Count(Projection):
    """One upsert per deposit into a per-run table."""

    name = "bench.trace"

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table

    def setup(self, tx: Tx) -> None:
        if tx.dialect == "memory":  # the in-memory target: count in the projection
            self.counts: dict[str, int] = {}
            return
        tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                   "(account TEXT PRIMARY KEY, deposits INTEGER NOT NULL)")

    def handle_BenchDeposited(self, event: Any, tx: Tx) -> None:
        if tx.dialect == "memory":
            key = str(event.aggregate_id)
            self.counts[key] = self.counts.get(key, 0) + 1
            return
        p = tx.placeholder
        tx.execute(f"INSERT INTO {self.table} AS b VALUES ({p}, 1) ON CONFLICT (account) "
                   "DO UPDATE SET deposits = b.deposits + 1", (str(event.aggregate_id),))


OPERATIONS = ("append", "load", "read_all", "projection")


class _Stores:
    """The stores of one backend: writers per mode, one filled reader, a projection source."""

    def __init__(self, backend: str, folder: Path, synchronous: str, dsn: str) -> None:
        self.backend, self.folder, self.dsn = backend, folder, dsn
        self.schemas: list[str] = []
        self.writers = {m: self._open(f"w_{m}", synchronous) for m in MODES}
        self.reader = self._open("read", "FULL")
        self.source = self._open("source", "FULL")
        self.target: ProjectionTarget
        if backend == "memory":
            self.target = InMemoryTarget()
        elif backend == "sqlite":
            self.target = SQLiteTarget(folder / "target.db")
        else:
            self.target = PostgresTarget(dsn, schema=self.schemas[-1])

    def _open(self, name: str, synchronous: str) -> EventStore:
        if self.backend == "memory":
            return InMemoryEventStore()
        if self.backend == "sqlite":
            return SQLiteEventStore(self.folder / f"{name}.db",
                                    synchronous=synchronous)  # type: ignore[arg-type]
        from eskit.stores.postgres import PostgresEventStore

        schema = f"eskit_bench_obs_{uuid.uuid4().hex[:8]}_{name}"
        self.schemas.append(schema)
        return PostgresEventStore(self.dsn, schema=schema)

    def close(self) -> None:
        for store in (*self.writers.values(), self.reader, self.source):
            store.close()
        self.target.close()
        if self.schemas:
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _fill(store: EventStore, events: int, per_append: int) -> None:
    written = 0
    while written < events:
        n = min(per_append, events - written)
        store.append(f"account-{(written // per_append) % 50}",
                     [Deposited(Decimal(f"{(written + j) % 997}.25")) for j in range(n)])
        written += n


def run(
    appends: int, events: int, rounds: int, synchronous: str = "FULL", *,
    backend: str = "sqlite", loads: int = 0, projected: int = 0, dsn: str = DSN,
    batch: int = 1,
) -> dict[str, dict[str, float]]:
    """Per mode: operations per second (events per second for read_all and projection),
    of wall and of this thread's CPU time; ``load`` and ``projection`` only when asked for."""
    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(_Drop()))
    ops = ["append", "read_all"] + (["load"] if loads else []) + (
        ["projection"] if projected else [])
    keys = [k for op in ops for k in (op, f"{op}_cpu")]
    results: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in MODES}
    with tempfile.TemporaryDirectory() as folder:
        stores = _Stores(backend, Path(folder), synchronous, dsn)
        try:
            # read_all reads the whole reader store; loads replay its 50 accounts, each
            # of events / 50 events (1,000 with the defaults).
            _fill(stores.reader, events, max(1, events // 50))
            if projected:
                _fill(stores.source, projected, 100)
            for store in stores.writers.values():
                _append_all(store, "warm-up", 20)
            # The order of the modes rotates each round, so neither drift nor order
            # favours one of them.
            for r in range(rounds):
                for mode in MODES[r % 3:] + MODES[:r % 3]:
                    _set_mode(mode, sdk)
                    store = stores.writers[mode]
                    work: dict[str, tuple[Callable[[], object], int]] = {
                        "append": (lambda s=store, p=f"r{r}": _append_all(s, p, appends, batch),
                                   appends),
                        "read_all": (lambda: sum(1 for _ in stores.reader.read_all()), events),
                        "load": (lambda: _load_all(stores.reader, loads), loads),
                    }
                    if projected:
                        runner = ProjectionRunner(
                            stores.source, _Count(f"t_{mode}_{r}"), stores.target,
                            name=f"trace-{mode}-{r}", batch_size=500,
                        )
                        runner.setup()
                        work["projection"] = (runner.run_until_caught_up, projected)
                    for op in ops:
                        fn, count = work[op]
                        wall, cpu = _timed(fn)
                        results[mode][op].append(count / wall)
                        results[mode][f"{op}_cpu"].append(count / cpu)
        finally:
            stores.close()
            observability.uninstrument()
            sdk.shutdown()
    return {m: {k: max(v) for k, v in ops_.items()} for m, ops_ in results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability")
    parser.add_argument(
        "--backend", action="append", choices=("sqlite", "postgres", "memory"),
        help="memory: no I/O, so what a span costs shows undiluted (default: sqlite)",
    )
    parser.add_argument("--postgres", metavar="DSN", default=DSN)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1,
                        help="events per append (each with a correlation id in its metadata)")
    parser.add_argument("--loads", type=int, default=500)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--projected", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--synchronous", choices=("FULL", "NORMAL"), default="FULL",
        help="the appending SQLite stores' durability (NORMAL: no fsync per append, so "
             "the tracing overhead shows more)",
    )
    args = parser.parse_args(argv)
    for backend in args.backend or ["sqlite"]:
        figures = run(args.appends, args.events, args.rounds, args.synchronous,
                      backend=backend, loads=args.loads, projected=args.projected,
                      dsn=args.postgres, batch=args.batch)
        where = {"sqlite": f"SQLite, synchronous={args.synchronous}", "postgres": "PostgreSQL",
                 "memory": "InMemoryEventStore"}[backend]
        print(f"{where}: {args.appends} appends of {args.batch} event(s), {args.loads} loads, "
              "read_all of "
              f"{args.events:,} events, projection of {args.projected:,} events per round; "
              f"best of {args.rounds} rounds")
        print(table(figures))
    print("rate: ops/s (append, load) or events/s (read_all, projection); vs off: change of "
          "wall-clock throughput; CPU: of this thread's CPU time")
    return 0


def table(figures: dict[str, dict[str, float]]) -> str:
    base = figures["off"]
    ops = [op for op in OPERATIONS if op in base]
    lines = [f"{'operation':<11} {'mode':<5} {'rate':>9} {'vs off':>7} {'CPU':>7}"]
    for op in ops:
        for mode in MODES:
            f = figures[mode]
            lines.append(
                f"{op:<11} {mode:<5} {f[op]:>9.0f} {f[op] / base[op] - 1:>+7.1%} "
                f"{f[op + '_cpu'] / base[op + '_cpu'] - 1:>+7.1%}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
