"""Retention and archive at a million events: time and peak memory (issue 13, item 8).

``python -m benchmarks.maintenance [--backend sqlite|postgres] [--events N]
[--per-stream K]``

For each backend it fills two fresh stores with ``--events`` events (default
1,000,000) in streams of ``--per-stream`` events (default 100; ``append_many`` of ten
streams per transaction), and measures, each in a fresh process of its own:

* ``plan``: :func:`eskit.maintenance.plan_retention` of a policy that expires every
  stream (``RetentionPolicy("order", max_age=0)``), with the bytes counted;
* ``apply``: :func:`eskit.maintenance.apply_retention` of that policy (hard deletes,
  a tombstone per stream), on the first store;
* ``archive``: :func:`eskit.archive.archive_streams` of every stream of the second
  store into a local directory (segment files, manifests, checksums);
* ``restore``: :func:`eskit.archive.restore_streams` of all of them back.

Each row gives the events the operation touched, the seconds, the rate and the
memory: the process's peak resident set (``ru_maxrss``) when the operation ended, and
how much that is above the peak before it began (the store open and eskit imported;
0 when the operation never needed more than opening the store did). Every count is checked (every
event planned, deleted, archived and restored) before it is reported.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eskit import NewEvent, SQLiteEventStore, StreamAppend

__all__ = ["Row", "main", "run"]

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
STREAMS_PER_TX = 10


@dataclass(frozen=True)
class Row:
    backend: str
    operation: str
    events: int
    seconds: float
    peak_mib: float
    """How far the operation raised the process's peak resident set."""
    process_peak_mib: float = 0.0
    """The process's peak resident set at the end of the operation."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _open(backend: str, where: str, dsn: str) -> Any:
    if backend == "sqlite":
        return SQLiteEventStore(where)
    from eskit.stores.postgres import PostgresEventStore

    return PostgresEventStore(dsn, schema=where)


def _fill(backend: str, where: str, dsn: str, events: int, per_stream: int) -> None:
    store = _open(backend, where, dsn)
    try:
        for first in range(0, events // per_stream, STREAMS_PER_TX):
            store.append_many([
                StreamAppend(f"order-{first + k}", [
                    NewEvent("OrderLine", {"line": n, "sku": f"SKU-{n:05d}", "cents": 1999})
                    for n in range(per_stream)
                ], expected_version=0)
                for k in range(min(STREAMS_PER_TX, events // per_stream - first))
            ])
    finally:
        store.close()


def _plan(store: Any, _archive: str) -> int:
    from eskit.maintenance.retention import RetentionPolicy, plan_retention

    plan = plan_retention(store, [RetentionPolicy("order", max_age=timedelta(0))])
    return sum(c.events for c in plan.categories)


def _apply(store: Any, _archive: str) -> int:
    from eskit.maintenance.retention import RetentionPolicy, apply_retention

    result = apply_retention(store, [RetentionPolicy("order", max_age=timedelta(0))])
    return int(result.deleted_events)


def _archive_all(store: Any, archive: str) -> int:
    from eskit.archive import LocalDirectoryStorage, archive_streams

    streams = [s.stream_id for s in store.list_streams()]
    return archive_streams(store, LocalDirectoryStorage(archive), streams)


def _restore_all(store: Any, archive: str) -> int:
    from eskit.archive import LocalDirectoryStorage, restore_streams

    return restore_streams(store, LocalDirectoryStorage(archive))


OPERATIONS: dict[str, Callable[[Any, str], int]] = {
    "plan": _plan, "apply": _apply, "archive": _archive_all, "restore": _restore_all,
}


def _child(backend: str, where: str, dsn: str, operation: str,
           archive: str) -> tuple[int, float, float, float]:
    store = _open(backend, where, dsn)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        began = time.perf_counter()
        touched = OPERATIONS[operation](store, archive)
        seconds = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        store.close()
    return touched, seconds, (peak - before) / 1024, peak / 1024  # ru_maxrss: KiB on Linux


def _measure(backend: str, where: str, dsn: str, operation: str, archive: str,
             expected: int) -> Row:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        touched, seconds, peak, process_peak = pool.apply(
            _child, (backend, where, dsn, operation, archive))
    if touched != expected:
        raise RuntimeError(f"{operation} touched {touched} events, expected {expected}")
    return Row(backend, operation, touched, seconds, peak, process_peak)


def run(backend: str, events: int, per_stream: int, *, dsn: str = DSN,
        workdir: str | None = None) -> list[Row]:
    """The four operations on ``events`` events; the rows in order."""
    if events % per_stream:
        raise SystemExit("--events must be a multiple of --per-stream")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="eskit-maintenance-", dir=workdir) as tmp:
        names = (
            [os.path.join(tmp, f"{n}.db") for n in ("retention", "archive")]
            if backend == "sqlite" else
            [f"eskit_bench_maint_{uuid.uuid4().hex[:8]}" for _ in range(2)]
        )
        try:
            for where in names:
                _fill(backend, where, dsn, events, per_stream)
            retention, archived = names
            archive = os.path.join(tmp, "archive")
            for operation, where in (("plan", retention), ("apply", retention),
                                     ("archive", archived), ("restore", archived)):
                rows.append(_measure(backend, where, dsn, operation, archive, events))
        finally:
            if backend == "postgres":
                import psycopg

                with psycopg.connect(dsn, autocommit=True) as conn:
                    for where in names:
                        conn.execute(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-stream", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"{'backend':8} {'operation':9} {'events':>10} {'seconds':>8} {'events/s':>9} "
          f"{'peak MiB':>8} {'raised by':>9}", flush=True)
    for backend in args.backend or ["sqlite", "postgres"]:
        for row in run(backend, args.events, args.per_stream):
            print(f"{row.backend:8} {row.operation:9} {row.events:>10,} {row.seconds:>8.1f} "
                  f"{row.rate:>9,.0f} {row.process_peak_mib:>8.1f} {row.peak_mib:>9.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
