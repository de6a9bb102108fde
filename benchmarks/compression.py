"""Payload compression: bytes per event, read-all and load rates, on and off, one run.

``python -m benchmarks.compression [--quick] [--repeat N] [--backend sqlite|postgres]``

Two workloads: the bank demo's small deposits (about 60 bytes of data: below
the threshold, so "on" stores them exactly as "off"), and orders of 20 lines
(about 4 KB of JSON each). Each (backend, workload) pair is written twice, with
``compress_threshold=None`` (off) and the default (on), then read back: the
whole log with ``read_all`` and every stream with ``read_stream`` (a load).
Rates are the median of ``--repeat`` runs. Bytes are measured on the database
itself: SQLite's file after a checkpoint, PostgreSQL's table with its TOAST
table and indexes (``pg_total_relation_size``), over the event count; and the
stored payload bytes alone (``length(data)``, ``pg_column_size``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from eskit import EventStore, NewEvent, SQLiteEventStore
from eskit.stores.compression import DEFAULT_COMPRESS_THRESHOLD

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Sizes:
    bank_events: int
    bank_streams: int
    order_events: int
    order_streams: int
    batch: int


FULL = Sizes(bank_events=20_000, bank_streams=200, order_events=5_000, order_streams=500,
             batch=50)
QUICK = Sizes(bank_events=200, bank_streams=10, order_events=60, order_streams=6, batch=10)

_WORDS = [
    "widget", "gadget", "bolt", "panel", "cable", "sensor", "valve", "bracket", "hinge",
    "filter", "motor", "pump", "blue", "red", "matte", "steel", "oak", "large", "small",
    "compact", "heavy-duty", "spare", "replacement", "kit", "pack", "of", "six", "twelve",
    "warehouse", "express", "fragile", "gift", "wrapped",
]


def order_payload(rng: random.Random, n: int) -> dict[str, Any]:
    """An order of 20 lines, about 4 KB of JSON: varied words, codes and amounts."""
    lines = []
    for i in range(20):
        name = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 6)))
        lines.append({
            "line": i + 1,
            "sku": f"SKU-{rng.randint(0, 99999):05d}",
            "name": name,
            "quantity": rng.randint(1, 12),
            "unit_price": Decimal(f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"),
            "discount": Decimal(f"0.{rng.randint(0, 30):02d}"),
            "warehouse": rng.choice(["AMS-1", "AMS-3", "FRA-2", "DUB-1"]),
            "gift": rng.random() < 0.1,
            "note": "" if rng.random() < 0.7 else " ".join(rng.choice(_WORDS) for _ in range(5)),
        })
    return {
        "order_id": f"order-{n}",
        "customer": {"id": str(uuid.UUID(int=rng.getrandbits(128))), "tier": "gold"},
        "currency": "EUR",
        "shipping": {"street": f"{rng.randint(1, 400)} Keizersgracht", "city": "Amsterdam",
                     "postcode": f"10{rng.randint(10, 99)} AB", "country": "NL"},
        "lines": lines,
    }


def workload(name: str, sizes: Sizes) -> list[tuple[str, list[NewEvent]]]:
    """The batches to append, in order: (stream, events)."""
    rng = random.Random(42)
    batches: list[tuple[str, list[NewEvent]]] = []
    if name == "bank":
        per = sizes.bank_events // sizes.bank_streams
        for s in range(sizes.bank_streams):
            events = [
                NewEvent("BenchDeposited", {"amount": Decimal(f"{i % 997 + 1}.{i % 100:02d}")})
                for i in range(per)
            ]
            for i in range(0, per, sizes.batch):
                batches.append((f"account-{s}", events[i:i + sizes.batch]))
    else:
        per = sizes.order_events // sizes.order_streams
        for s in range(sizes.order_streams):
            events = [NewEvent("OrderPlaced", order_payload(rng, s * per + i)) for i in range(per)]
            for i in range(0, per, sizes.batch):
                batches.append((f"order-{s}", events[i:i + sizes.batch]))
    return batches


@dataclass
class Result:
    backend: str
    workload: str
    compression: str
    events: int
    bytes_per_event: float
    payload_bytes_per_event: float
    append_per_s: float
    read_all_per_s: float
    load_per_s: float


def _rate(count: int, action: Callable[[], int]) -> float:
    start = time.perf_counter()
    seen = action()
    elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return count / elapsed


def _open(backend: str, workdir: Path, tag: str, threshold: int | None) -> tuple[EventStore, Any]:
    if backend == "sqlite":
        path = workdir / f"{tag}.db"
        return SQLiteEventStore(path, compress_threshold=threshold), path
    from eskit.stores.postgres import PostgresEventStore

    schema = f"bench_cmp_{uuid.uuid4().hex[:10]}"
    return PostgresEventStore(DSN, schema=schema, compress_threshold=threshold), schema


def _sizes(backend: str, where: Any, events: int) -> tuple[float, float]:
    if backend == "sqlite":
        with sqlite3.connect(where) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (payload,) = conn.execute(
                "SELECT sum(length(CAST(data AS BLOB)) + length(CAST(metadata AS BLOB))) "
                "FROM eskit_events"
            ).fetchone()
        return Path(where).stat().st_size / events, payload / events
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'VACUUM ANALYZE "{where}".eskit_events')
        row = conn.execute(
            f"SELECT pg_total_relation_size('\"{where}\".eskit_events'),"
            " sum(coalesce(pg_column_size(data), 0) + coalesce(pg_column_size(data_zstd), 0)"
            f" + pg_column_size(metadata)) FROM \"{where}\".eskit_events"
        ).fetchone()
        assert row is not None
    return row[0] / events, float(row[1]) / events


def _drop(backend: str, where: Any) -> None:
    if backend == "postgres":
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{where}" CASCADE')


def _reader(store: EventStore) -> Callable[[], int]:
    return lambda: sum(1 for _ in store.read_all())


def _loader(store: EventStore, streams: list[str]) -> Callable[[], int]:
    return lambda: sum(len(store.read_stream(s)) for s in streams)


def run(backend: str, sizes: Sizes, repeat: int, workdir: Path,
        progress: Callable[[str], object] = lambda _: None) -> list[Result]:
    """Both modes of each workload side by side; their timed reads alternate (off, on,
    off, on, ...) so that a machine shared with other work slows both alike."""
    results = []
    modes = (("off", None), ("on", DEFAULT_COMPRESS_THRESHOLD))
    for name in ("bank", "orders"):
        batches = workload(name, sizes)
        count = sum(len(events) for _, events in batches)
        streams = sorted({stream for stream, _ in batches})
        opened = [_open(backend, workdir, f"{name}-{mode}", threshold) for mode, threshold in modes]
        try:
            appends, footprint = [], []
            for (mode, _), (store, where) in zip(modes, opened, strict=True):
                progress(f"{backend} {name}: appending, compression {mode}")
                start = time.perf_counter()
                for stream, events in batches:
                    store.append(stream, events)
                appends.append(count / (time.perf_counter() - start))
                footprint.append(_sizes(backend, where, count))
            progress(f"{backend} {name}: reading")
            reads: list[list[float]] = [[], []]
            loads: list[list[float]] = [[], []]
            for _ in range(repeat):
                for k, (store, _) in enumerate(opened):
                    reads[k].append(_rate(count, _reader(store)))
                    loads[k].append(_rate(count, _loader(store, streams)))
        finally:
            for store, where in opened:
                store.close()
                _drop(backend, where)
        for k, (mode, _) in enumerate(modes):
            results.append(Result(
                backend, name, mode, count, footprint[k][0], footprint[k][1], appends[k],
                statistics.median(reads[k]), statistics.median(loads[k]),
            ))
    return results


def ratios() -> list[tuple[int, int, int, float, float]]:
    """For the threshold: orders of 1 to 20 lines, as (lines, JSON bytes, frame bytes,
    ratio, microseconds to inflate one frame)."""
    from eskit import codec
    from eskit.stores.compression import compress, inflate

    out = []
    rng = random.Random(7)
    for lines in (1, 2, 3, 5, 10, 20):
        payload = order_payload(rng, lines)
        payload["lines"] = payload["lines"][:lines]
        raw = codec.encode(payload)
        frame = compress(raw)
        start = time.perf_counter()
        for _ in range(1000):
            inflate(frame)
        micros = (time.perf_counter() - start) * 1000
        out.append((lines, len(raw), len(frame), len(raw) / len(frame), micros))
    return out


def _ratio_table() -> str:
    lines = ["| order lines | JSON bytes | zstd frame bytes | ratio | inflate µs |",
             "|---|---|---|---|---|"]
    for n, raw, frame, ratio, micros in ratios():
        lines.append(f"| {n} | {raw:,} | {frame:,} | {ratio:.2f}x | {micros:.1f} |")
    return "\n".join(lines)


def _table(results: list[Result]) -> str:
    lines = [
        "| backend | workload | compression | bytes/event | payload bytes/event "
        "| append ev/s | read_all ev/s | load ev/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.workload} | {r.compression} | {r.bytes_per_event:,.0f} "
            f"| {r.payload_bytes_per_event:,.0f} | {r.append_per_s:,.0f} "
            f"| {r.read_all_per_s:,.0f} | {r.load_per_s:,.0f} |"
        )
    by_key = {(r.backend, r.workload, r.compression): r for r in results}
    lines.append("")
    for (backend, name, mode), on in by_key.items():
        off = by_key.get((backend, name, "off"))
        if mode != "on" or off is None:
            continue
        lines.append(
            f"{backend} {name}: {off.bytes_per_event / on.bytes_per_event:.2f}x smaller on disk, "
            f"payload {off.payload_bytes_per_event / on.payload_bytes_per_event:.2f}x; "
            f"read_all {on.read_all_per_s / off.read_all_per_s - 1:+.0%}, "
            f"load {on.load_per_s / off.load_per_s - 1:+.0%}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--repeat", type=int, default=5, help="timed reads per case (median)")
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/compression.json"))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backend or ["sqlite", "postgres"]:
            results += run(backend, sizes, args.repeat, Path(tmp),
                           progress=lambda step: print(f"... {step}", file=sys.stderr))
    print(_table(results))
    print()
    print(_ratio_table())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(
        {"sizes": asdict(sizes), "repeat": args.repeat, "results": [asdict(r) for r in results]},
        indent=2,
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
