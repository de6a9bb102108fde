"""Blob garbage collection: how long a collection takes, against a read_all. One run.

``python -m benchmarks.blob_gc [--events N] [--blobs B] [--repeat R] [--postgres DSN]``

Fills a fresh store (SQLite, and PostgreSQL with ``--postgres``) with ``--events``
small events on 1,000 streams, one in a hundred naming one of ``--blobs`` blobs (a
directory for SQLite, the store's table for PostgreSQL); half the blobs are named by
no event. Every blob is then dated two days back, and the same store is timed, runs
interleaved: ``collect_blobs(..., dry_run=True)`` (the whole mark phase and the
listing; nothing deleted, so each run sees the same store) and a full ``read_all``
(decoding every event). Prints each as events/s (median of ``--repeat``, and the
range), and their ratio. See docs/blobs.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eskit import NewEvent, SQLiteEventStore, StreamAppend
from eskit.blobs import BlobStore, DirectoryBlobStore, collect_blobs

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TWO_DAYS = 2 * 86_400


def fill(store: Any, blobs: BlobStore, events: int, blob_count: int,
         backdate: Callable[[], None]) -> None:
    refs = [blobs.put(f"blob {n} ".encode() * 64) for n in range(blob_count)]
    named = refs[: blob_count // 2]
    per_call = 1_000
    for start in range(0, events, per_call):
        appends = []
        for k in range(10):
            batch = []
            for n in range(start + k * 100, min(start + (k + 1) * 100, events)):
                data: dict[str, Any] = {"n": n, "note": "a deposit"}
                if n % 100 == 0:
                    data["scan"] = named[(n // 100) % len(named)]
                batch.append(NewEvent("Deposited", data))
            if batch:
                appends.append(StreamAppend(f"account-{(start // 100 + k) % 1000}", batch))
        store.append_many(appends)
    backdate()


def timed(events: int, repeat: int, runs: dict[str, Callable[[], int]]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for n in range(repeat):  # interleaved, alternating which goes first
        order = list(runs) if n % 2 == 0 else list(reversed(runs))
        for name in order:
            began = time.perf_counter()
            seen = runs[name]()
            rates[name].append(events / (time.perf_counter() - began))
            assert seen == events, (name, seen, events)
    return rates


def report(label: str, rates: dict[str, list[float]]) -> None:
    for name, runs in rates.items():
        print(f"{label:8} {name:28} {statistics.median(runs):>12,.0f} events/s "
              f"(range {min(runs):,.0f}-{max(runs):,.0f})")
    collect, read = (statistics.median(r) for r in rates.values())
    print(f"{label:8} {'collect / read_all':28} {collect / read:>12.2f}")


def measure(label: str, store: Any, blobs: BlobStore, events: int, blob_count: int,
            repeat: int, backdate: Callable[[], None]) -> None:
    """Fill ``store``, check a dry run finds exactly the unnamed half, time and report."""
    fill(store, blobs, events, blob_count, backdate)
    found = collect_blobs(store, blobs, dry_run=True)
    assert len(found.removed) == blob_count - blob_count // 2, found
    report(label, timed(events, repeat, {
        "collect_blobs (dry run)": lambda: collect_blobs(store, blobs, dry_run=True).payloads,
        "read_all": lambda: sum(1 for _ in store.read_all()),
    }))


def run_sqlite(events: int, blob_count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="eskit-blob-gc-") as tmp:
        store = SQLiteEventStore(Path(tmp) / "events.db")
        blobs = DirectoryBlobStore(Path(tmp) / "blobs")

        def backdate() -> None:
            then = time.time() - TWO_DAYS
            for sub in blobs.directory.iterdir():
                for path in sub.iterdir():
                    os.utime(path, (then, then))

        measure("sqlite", store, blobs, events, blob_count, repeat, backdate)
        store.close()


def run_postgres(dsn: str, events: int, blob_count: int, repeat: int) -> None:
    import psycopg

    from eskit.blobs import PostgresBlobStore
    from eskit.stores.postgres import PostgresEventStore

    schema = f"eskit_blob_gc_{uuid.uuid4().hex[:8]}"
    store = PostgresEventStore(dsn, schema=schema)
    try:
        blobs = PostgresBlobStore(store)

        def backdate() -> None:
            store._run(lambda conn: conn.execute(
                f'UPDATE "{schema}".eskit_blobs SET stored_at = stored_at - interval \'2 days\''))

        measure("postgres", store, blobs, events, blob_count, repeat, backdate)
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--blobs", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="DSN", nargs="?", const=DSN, default=None)
    args = parser.parse_args(argv)
    run_sqlite(args.events, args.blobs, args.repeat)
    if args.postgres:
        run_postgres(args.postgres, args.events, args.blobs, args.repeat)


if __name__ == "__main__":
    main()
