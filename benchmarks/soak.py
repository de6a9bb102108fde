"""Soak at scale: grow one store to millions of events and see which rates hold up.

``python -m benchmarks.soak [--backend sqlite|postgres] [--events N] [--streams S]
[--probes K] [--json FILE]``

Grows a fresh store (a SQLite file in a temporary directory, or a fresh PostgreSQL
schema) to ``--events`` events (default 10,000,000) in ``--streams`` streams (default
1,000,000; ``events / streams`` events each, written to one stream at a time,
``append_many`` of 100 streams per transaction). At ``--probes`` points on the way
(the first at 5% of the events, the last at the end) it stops growing and measures,
on the store as it is then:

* ``append``: 2,000 single-event command appends with the expected version, to
  random existing streams, one at a time: events/s and the p99 latency;
* ``load``: 2,000 random existing streams read whole (``read_stream``): events/s;
* ``read-all``: the newest 100,000 events in global order (``read_all`` from the
  position before them, what a subscriber catching up reads): events/s;
* ``projection``: a fresh projection (an upsert per event into a balance table, the
  checkpoint in the same transaction, batches of 500) started at that same position
  and run until caught up (``run_until_caught_up``): events/s;
* ``bytes/event``: the events table and its indexes (PostgreSQL:
  ``pg_table_size``/``pg_indexes_size`` of every eskit table in the schema; SQLite:
  the ``dbstat`` table), divided by the events stored;
* ``grow``: the bulk append rate over the last chunk grown before the probe.

The figures go to stdout as a table (and to ``--json``). Not part of ``make test``:
10,000,000 events take about an hour per backend on this machine. See the "Soak"
section of ``benchmarks/README.md`` and ``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from benchmarks.projections import Balances
from eskit import EventStore, NewEvent, SQLiteEventStore, StreamAppend
from eskit.projections import PostgresTarget, ProjectionRunner, SQLiteTarget

__all__ = ["Probe", "main", "run"]

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
STREAMS_PER_TX = 100
OPERATIONS = 2_000
WINDOW = 100_000


@dataclass(frozen=True)
class Probe:
    backend: str
    events: int
    streams: int
    grow_per_s: float
    append_per_s: float
    append_p99_ms: float
    load_per_s: float
    read_all_per_s: float
    projection_per_s: float
    table_bytes_per_event: float
    index_bytes_per_event: float
    load_average: float
    """The machine's 1-minute load average when the probe ended (2 cores here)."""


@contextmanager
def _store(backend: str, dsn: str, workdir: str | None) -> Iterator[tuple[EventStore, Any, str]]:
    """A fresh store, a projection target in the same database, and where it lives."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="eskit-soak-", dir=workdir) as tmp:
            path = os.path.join(tmp, "soak.db")
            store = SQLiteEventStore(path)
            target = SQLiteTarget(path)
            try:
                yield store, target, path
            finally:
                target.close()
                store.close()
        return
    import psycopg

    from eskit.stores.postgres import PostgresEventStore

    schema = f"eskit_soak_{uuid.uuid4().hex[:8]}"
    pg_store = PostgresEventStore(dsn, schema=schema)
    pg_target = PostgresTarget(dsn, schema=schema)
    try:
        yield pg_store, pg_target, schema
    finally:
        pg_target.close()
        pg_store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _sizes(backend: str, where: str, dsn: str) -> tuple[int, int]:
    """(table bytes, index bytes) of the store's own tables."""
    if backend == "sqlite":
        with sqlite3.connect(where) as conn:
            kinds = dict(conn.execute("SELECT name, type FROM sqlite_master"))
            table = index = 0
            for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                if kinds.get(name) == "index" or name.startswith("sqlite_autoindex"):
                    index += size
                else:
                    table += size
        return table, index
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_table_size(c.oid)), 0),"
            " coalesce(sum(pg_indexes_size(c.oid)), 0)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (where,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _stream(i: int) -> str:
    return f"account-{i:07d}"


def _events(count: int, first: int) -> list[NewEvent]:
    return [NewEvent("BenchDeposited", {"cents": 100 + first + n, "note": "soak deposit"})
            for n in range(count)]


class _Soak:
    def __init__(self, backend: str, store: EventStore, target: Any, where: str,
                 per_stream: int, dsn: str) -> None:
        self.backend, self.store, self.target, self.where = backend, store, target, where
        self.dsn = dsn
        self.per_stream = per_stream
        self.versions: list[int] = []  # per existing stream: its current version
        self.marks: list[tuple[int, int]] = [(0, 0)]  # (events stored, last position)
        self.stored = 0
        self.random = random.Random(7)
        # PostgreSQL with autovacuum off (this machine's test server runs so): do what
        # it would, VACUUM (ANALYZE) once the rows inserted since the last one pass
        # autovacuum's default insert threshold (1,000 + 20% of the table). Without it
        # the planner never learns the table's size and nothing is marked all-visible.
        self.emulate_autovacuum = backend == "postgres" and not _autovacuum_on(dsn)
        self.vacuumed_rows = 0
        self.vacuums: list[float] = []

    def grow(self, streams: int) -> float:
        """Write ``streams`` more whole streams; the bulk rate in events/s."""
        began = time.perf_counter()
        written = 0
        while written < streams:
            take = min(STREAMS_PER_TX, streams - written)
            first = len(self.versions)
            results = self.store.append_many([
                StreamAppend(_stream(first + k), _events(self.per_stream, 0), expected_version=0)
                for k in range(take)
            ])
            self.versions.extend([self.per_stream] * take)
            self.stored += take * self.per_stream
            self.marks.append((self.stored, results[-1].position))
            written += take
        return streams * self.per_stream / (time.perf_counter() - began)

    def maybe_vacuum(self) -> None:
        """Autovacuum's insert-triggered VACUUM (ANALYZE), where the server has it off."""
        if not self.emulate_autovacuum or \
                self.stored - self.vacuumed_rows <= 1_000 + 0.2 * self.vacuumed_rows:
            return
        import psycopg

        began = time.perf_counter()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.where,))]
            for table in tables:
                conn.execute(f'VACUUM (ANALYZE) "{self.where}"."{table}"')
        self.vacuums.append(time.perf_counter() - began)
        self.vacuumed_rows = self.stored

    def _position_before(self, events: int) -> int:
        """The last position at or before ``events`` stored events (a chunk boundary)."""
        return max(position for stored, position in self.marks if stored <= max(events, 0))

    def probe(self, grow_rate: float) -> Probe:
        pick = self.random.randrange
        latencies: list[float] = []
        for _ in range(OPERATIONS):
            i = pick(len(self.versions))
            began = time.perf_counter()
            self.store.append(_stream(i), _events(1, self.versions[i]),
                              expected_version=self.versions[i])
            latencies.append(time.perf_counter() - began)
            self.versions[i] += 1
        self.stored += OPERATIONS
        began, loaded = time.perf_counter(), 0
        for _ in range(OPERATIONS):
            loaded += len(self.store.read_stream(_stream(pick(len(self.versions)))))
        load_rate = loaded / (time.perf_counter() - began)
        start = self._position_before(self.stored - OPERATIONS - WINDOW)
        began = time.perf_counter()
        read = sum(1 for _ in self.store.read_all(start))
        read_rate = read / (time.perf_counter() - began)
        table, index = _sizes(self.backend, self.where, self.dsn)
        return Probe(
            backend=self.backend, events=self.stored, streams=len(self.versions),
            grow_per_s=grow_rate, append_per_s=OPERATIONS / sum(latencies),
            append_p99_ms=statistics.quantiles(latencies, n=100)[98] * 1000,
            load_per_s=load_rate, read_all_per_s=read_rate,
            projection_per_s=self._project(start),
            table_bytes_per_event=table / self.stored, index_bytes_per_event=index / self.stored,
            load_average=os.getloadavg()[0],
        )

    def _project(self, start: int) -> float:
        tag = uuid.uuid4().hex[:8]
        name = f"soak-{tag}"
        runner = ProjectionRunner(self.store, Balances(f"soak_{tag}"), self.target, name=name,
                                  batch_size=500)
        runner.setup()
        # Start the new projection at the window, not at 0: a full replay of 10M events
        # is the rebuild figure, not the catch-up one.
        with self.target.transaction() as conn:
            self.target.load_state(conn, name, 0)
            self.target.save_position(conn, name, 0, start, 0, None, None)
        began = time.perf_counter()
        handled = runner.run_until_caught_up()
        return handled / (time.perf_counter() - began)


def run(backend: str, events: int, streams: int, probes: int, *, dsn: str = DSN,
        workdir: str | None = None, repeat: int = 1) -> list[Probe]:
    """Grow one fresh store to ``events`` and probe it ``probes`` times on the way;
    the first and the last point ``repeat`` times each (their medians are compared)."""
    if events % streams or events // streams < 1:
        raise SystemExit("--events must be a multiple of --streams")
    per_stream = events // streams
    first = max(STREAMS_PER_TX, streams // 20)
    steps = [first] + [
        round(first + (streams - first) * k / (probes - 1)) for k in range(1, probes)
    ] if probes > 1 else [streams]
    results: list[Probe] = []
    with _store(backend, dsn, workdir) as (store, target, where), Progress(
        TextColumn(f"{backend} soak"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), transient=True,
    ) as bar:
        soak = _Soak(backend, store, target, where, per_stream, dsn)
        task = bar.add_task("grow", total=streams)
        for goal in steps:
            grown_rate = 0.0
            while len(soak.versions) < goal:
                step = min(10_000, goal - len(soak.versions))
                grown_rate = soak.grow(step)
                soak.maybe_vacuum()
                bar.advance(task, step)
            ends = goal in (steps[0], steps[-1])
            for _ in range(repeat if ends else 1):
                probe = soak.probe(grown_rate)
                results.append(probe)
                bar.console.print(_row(probe), soft_wrap=True)
        if soak.vacuums:
            bar.console.print(
                f"{backend}: autovacuum is off on this server; the soak ran VACUUM (ANALYZE) "
                f"at its default insert thresholds {len(soak.vacuums)} times, "
                f"{sum(soak.vacuums):.0f} s in all (not in the rates)", soft_wrap=True)
    return results


def _autovacuum_on(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    return bool(row and row[0] == "on")


HEADER = (f"{'backend':8} {'events':>11} {'grow/s':>8} {'append/s':>9} {'p99 ms':>7} "
          f"{'load/s':>9} {'read-all/s':>10} {'project/s':>9} {'table B/ev':>10} "
          f"{'index B/ev':>10} {'loadavg':>7}")


def _row(p: Probe) -> str:
    return (f"{p.backend:8} {p.events:>11,} {p.grow_per_s:>8,.0f} {p.append_per_s:>9,.0f} "
            f"{p.append_p99_ms:>7.2f} {p.load_per_s:>9,.0f} {p.read_all_per_s:>10,.0f} "
            f"{p.projection_per_s:>9,.0f} {p.table_bytes_per_event:>10.0f} "
            f"{p.index_bytes_per_event:>10.0f} {p.load_average:>7.2f}")


RATES = ("grow_per_s", "append_per_s", "load_per_s", "read_all_per_s", "projection_per_s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--streams", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3,
                        help="probe the first and the last point this many times each "
                             "(the ratios compare their medians)")
    parser.add_argument("--json", help="also write the probes to this file")
    args = parser.parse_args(argv)
    if args.probes < 1 or args.repeat < 1:
        raise SystemExit("--probes and --repeat must be at least 1")
    print(HEADER, flush=True)
    every: list[Probe] = []
    for backend in args.backend or ["sqlite", "postgres"]:
        probes = run(backend, args.events, args.streams, args.probes, repeat=args.repeat)
        every.extend(probes)
        first = [p for p in probes if p.events <= probes[args.repeat - 1].events]
        last = [p for p in probes if p.events >= probes[-args.repeat].events]
        ratios = ", ".join(
            f"{r.removesuffix('_per_s')} "
            f"{statistics.median(getattr(p, r) for p in last) / statistics.median(getattr(p, r) for p in first):.2f}"  # noqa: E501
            for r in RATES)
        print(f"{backend}: end/start (medians of {args.repeat}) {ratios}", flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(p) for p in every], out, indent=1)


if __name__ == "__main__":
    main()
