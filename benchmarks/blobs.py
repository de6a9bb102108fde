"""Large payloads: where to keep blobs, and what a reference saves on load. One run.

``python -m benchmarks.blobs [--quick] [--repeat N] [--postgres DSN]``

1. Put and get rates (MB/s) of blobs of 64 KiB, 1 MiB and 8 MiB in each blob store:
   SQLite's table in the store file, a directory, and (with ``--postgres``) a
   PostgreSQL table.
2. Appends per second on SQLite while another thread puts 1 MiB blobs, into the
   store file's table or into a directory, against appends with no blob traffic:
   SQLite has one writer per file, so a blob in the same file holds appends back.
3. Loading a stream of events that each carry 1 MiB inline, against the same events
   carrying a ``BlobRef`` (the load reads events only; blobs are fetched on demand).

Rates are medians of ``--repeat`` runs. Random bytes, so nothing compresses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eskit import NewEvent, SQLiteEventStore
from eskit.blobs import BlobStore, DirectoryBlobStore, SQLiteBlobStore


@dataclass(frozen=True)
class Sizes:
    blob_sizes: tuple[int, ...]
    bytes_per_size: int  # how many bytes of blobs each rate moves
    appends: int
    load_events: int


FULL = Sizes(blob_sizes=(64 * 1024, 1024 * 1024, 8 * 1024 * 1024), bytes_per_size=64 * 2**20,
             appends=2_000, load_events=50)
QUICK = Sizes(blob_sizes=(64 * 1024, 1024 * 1024), bytes_per_size=4 * 2**20, appends=200,
              load_events=5)


@dataclass(frozen=True)
class BlobRate:
    store: str
    blob_bytes: int
    put_mb_s: float
    get_mb_s: float


@dataclass(frozen=True)
class Contention:
    blobs_into: str  # "none", "sqlite table", "directory"
    appends_per_s: float


@dataclass(frozen=True)
class Load:
    payload: str  # "inline", "reference"
    load_ms: float
    stored_bytes_per_event: float


def _median(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def rates(name: str, make: Callable[[], tuple[BlobStore, Callable[[], None]]], size: int,
          total: int, repeat: int) -> BlobRate:
    count = max(1, total // size)

    def once() -> tuple[float, float]:
        blobs, close = make()
        datas = [os.urandom(size) for _ in range(count)]
        started = time.perf_counter()
        refs = [blobs.put(d) for d in datas]
        put = time.perf_counter() - started
        started = time.perf_counter()
        for ref in refs:
            blobs.get(ref)
        got = time.perf_counter() - started
        close()
        return put, got

    runs = [once() for _ in range(repeat)]
    mb = size * count / 1e6
    return BlobRate(name, size, round(mb / statistics.median(r[0] for r in runs), 1),
                    round(mb / statistics.median(r[1] for r in runs), 1))


def contention(workdir: Path, sizes: Sizes, repeat: int) -> list[Contention]:
    found = []
    for into in ("none", "sqlite table", "directory"):
        def once(into: str = into) -> float:
            with tempfile.TemporaryDirectory(dir=workdir) as d:
                store = SQLiteEventStore(Path(d) / "events.db")
                blobs: BlobStore | None = (
                    SQLiteBlobStore(store) if into == "sqlite table"
                    else DirectoryBlobStore(Path(d) / "blobs") if into == "directory" else None)
                stop = threading.Event()

                def put_blobs() -> None:
                    while blobs is not None and not stop.is_set():
                        blobs.put(os.urandom(1024 * 1024))

                putter = threading.Thread(target=put_blobs)
                putter.start()
                started = time.perf_counter()
                for i in range(sizes.appends):
                    store.append(f"s-{i % 50}", [NewEvent("Happened", {"i": i})])
                elapsed = time.perf_counter() - started
                stop.set()
                putter.join()
                store.close()
                return sizes.appends / elapsed

        found.append(Contention(into, round(_median(repeat, once))))
    return found


def loads(workdir: Path, sizes: Sizes, repeat: int) -> list[Load]:
    found = []
    for payload in ("inline", "reference"):
        with tempfile.TemporaryDirectory(dir=workdir) as d:
            store = SQLiteEventStore(Path(d) / "events.db", compress_threshold=None)
            blobs = DirectoryBlobStore(Path(d) / "blobs")
            for i in range(sizes.load_events):
                big = os.urandom(1024 * 1024)
                value: Any = big.hex()[: 1024 * 1024] if payload == "inline" else blobs.put(big)
                store.append("doc-1", [NewEvent("Attached", {"i": i, "file": value})])

            def once(store: SQLiteEventStore = store) -> float:
                started = time.perf_counter()
                assert len(store.read_stream("doc-1")) == sizes.load_events
                return (time.perf_counter() - started) * 1000

            with store._reading() as conn:
                stored = conn.execute("SELECT avg(length(data)) FROM eskit_events").fetchone()[0]
            found.append(Load(payload, round(_median(repeat, once), 2), round(stored, 1)))
            store.close()
    return found


def run(sizes: Sizes, *, repeat: int, workdir: Path, postgres: str | None = None
        ) -> dict[str, list[Any]]:
    def sqlite_blobs() -> tuple[BlobStore, Callable[[], None]]:
        d = tempfile.mkdtemp(dir=workdir)
        store = SQLiteEventStore(Path(d) / "events.db")
        return SQLiteBlobStore(store), store.close

    def directory_blobs() -> tuple[BlobStore, Callable[[], None]]:
        return DirectoryBlobStore(tempfile.mkdtemp(dir=workdir)), lambda: None

    makers: list[tuple[str, Callable[[], tuple[BlobStore, Callable[[], None]]]]] = [
        ("sqlite table", sqlite_blobs), ("directory", directory_blobs)]
    if postgres is not None:
        import uuid

        from eskit.blobs import PostgresBlobStore
        from eskit.stores.postgres import PostgresEventStore

        def postgres_blobs() -> tuple[BlobStore, Callable[[], None]]:
            store = PostgresEventStore(postgres, schema=f"bench_blobs_{uuid.uuid4().hex[:8]}")

            def close() -> None:
                with store._connection() as conn:
                    conn.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
                store.close()

            return PostgresBlobStore(store), close

        makers.append(("postgresql table", postgres_blobs))
    return {
        "rates": [rates(name, make, size, sizes.bytes_per_size, repeat)
                  for size in sizes.blob_sizes for name, make in makers],
        "contention": contention(workdir, sizes, repeat),
        "loads": loads(workdir, sizes, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="DSN", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        found = run(QUICK if args.quick else FULL, repeat=args.repeat, workdir=Path(workdir),
                    postgres=args.postgres)
    if args.json:
        print(json.dumps({k: [asdict(x) for x in v] for k, v in found.items()}, indent=2))
        return 0
    print("| blob store | blob size | put MB/s | get MB/s |\n|---|---|---|---|")
    for r in found["rates"]:
        print(f"| {r.store} | {r.blob_bytes // 1024:,} KiB | {r.put_mb_s:,} | {r.get_mb_s:,} |")
    print("\n| blobs put meanwhile into | SQLite appends/s |\n|---|---|")
    for c in found["contention"]:
        print(f"| {c.blobs_into} | {c.appends_per_s:,.0f} |")
    print("\n| 1 MiB per event | load ms | stored bytes/event |\n|---|---|---|")
    for load in found["loads"]:
        print(f"| {load.payload} | {load.load_ms:,} | {load.stored_bytes_per_event:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
