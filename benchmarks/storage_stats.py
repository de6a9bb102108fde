"""What ``eskit.stats`` and snapshot pruning cost (issue 13, items 6 and 7).

``python -m benchmarks.storage_stats --backend sqlite --events 200000`` builds a
synthetic store (10 events per stream, three categories, ~150-byte payloads),
then times:

* ``stats``: :func:`eskit.stats` on the whole store (median of ``--repeat``);
* ``save``: one snapshot save, without ``keep`` and with ``keep=3`` (the prune in
  the save's transaction, deleting one row), median of 3 x 500 saves each,
  the two interleaved;
* ``prune``: one :meth:`~eskit.SnapshotStore.prune` pass to ``keep=3`` over
  ``--aggregates`` aggregates with 10 snapshots each.

``--bulk`` writes the events straight into the event table instead (SQLite:
``executemany``; PostgreSQL: one ``INSERT ... SELECT generate_series``), with the
streams interleaved in the global order as a live store's are (event ``i`` in
stream ``i % streams``), so that a million events take seconds to build. It is for
sizing only: the rows are what eskit writes, but no append checks run.

It prints one JSON document. Timings depend on the machine: compare runs of the
same machine only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import eskit
from eskit import NewEvent, Snapshot, codec

CATEGORIES = ("order", "customer", "sensor")
PER_STREAM = 10
DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def _store(backend: str, workdir: Path) -> Iterator[tuple[Any, Any, Any]]:
    """(event store, snapshot store without keep, snapshot store with keep=3)."""
    if backend == "sqlite":
        store: Any = eskit.SQLiteEventStore(workdir / "events.db")
        try:
            yield (store, eskit.SQLiteSnapshotStore(store),
                   eskit.SQLiteSnapshotStore(store, keep=3))
        finally:
            store.close()
        return
    import psycopg

    schema = "bench_stats_" + uuid.uuid4().hex[:10]
    store = eskit.PostgresEventStore(DSN, schema=schema)
    try:
        yield store, eskit.PostgresSnapshotStore(store), eskit.PostgresSnapshotStore(store, keep=3)
    finally:
        store.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _fill(store: Any, events: int) -> float:
    started = time.perf_counter()
    streams = events // PER_STREAM
    for n in range(streams):
        store.append(f"{CATEGORIES[n % 3]}-{n}", [
            NewEvent("Happened", {"n": i, "sku": f"SKU-{n:08d}", "qty": i + 1,
                                  "price": "19.99", "note": "lorem ipsum dolor sit amet " * 2},
                     metadata={"correlation_id": str(uuid.UUID(int=n))})
            for i in range(PER_STREAM)
        ])
    return time.perf_counter() - started


def _payload(n: int, i: int) -> str:
    return codec.encode({"n": i, "sku": f"SKU-{n:08d}", "qty": i + 1, "price": "19.99",
                         "note": "lorem ipsum dolor sit amet " * 2}).decode()


def _bulk_fill(store: Any, events: int) -> float:
    """``events`` rows straight into the table, streams interleaved (see the docstring)."""
    started = time.perf_counter()
    streams = events // PER_STREAM
    if isinstance(store, eskit.SQLiteEventStore):
        from eskit.stores.rows import timestamp_to_micros

        now = timestamp_to_micros(datetime.now(UTC))
        rows = (
            (uuid.uuid4().bytes, f"{CATEGORIES[(i % streams) % 3]}-{i % streams}",
             i // streams + 1, "Happened", 1, now, _payload(i % streams, i // streams),
             codec.encode({"correlation_id": str(uuid.UUID(int=i % streams))}).decode())
            for i in range(events)
        )
        conn = store._lock_writer()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO eskit_events (event_id, stream_id, version, event_type, "
                "schema_version, recorded_at, data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows)
            conn.execute("COMMIT")
        finally:
            store._write_lock.release()
        return time.perf_counter() - started
    with store._connection() as conn:
        conn.execute(f"""
            INSERT INTO "{store.schema}".eskit_events (event_id, stream_id, version,
                event_type, schema_version, recorded_at, data, metadata)
            SELECT gen_random_uuid(),
                   (ARRAY['order', 'customer', 'sensor'])[mod(mod(i, %(s)s), 3) + 1]
                       || '-' || mod(i, %(s)s),
                   i / %(s)s + 1, 'Happened', 1, now(),
                   json_build_object('n', i / %(s)s,
                                     'sku', 'SKU-' || lpad(mod(i, %(s)s)::text, 8, '0'),
                                     'qty', i / %(s)s + 1, 'price', '19.99',
                                     'note', repeat('lorem ipsum dolor sit amet ', 2)),
                   json_build_object('correlation_id', gen_random_uuid())
            FROM generate_series(0, %(n)s - 1) AS i""", {"s": streams, "n": events})
        conn.execute(f'ANALYZE "{store.schema}".eskit_events')
    return time.perf_counter() - started


def _snapshot(stream: str, version: int, event_id: uuid.UUID) -> Snapshot:
    return Snapshot(stream, "bench.Agg", version, event_id, 1,
                    codec.encode({"version": version, "pad": "x" * 200}), datetime.now(UTC))


def run(backend: str, events: int, aggregates: int, repeat: int, *, bulk: bool = False
        ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, _store(backend, Path(tmp)) as (store, plain, keep3):
        fill_seconds = _bulk_fill(store, events) if bulk else _fill(store, events)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            found = eskit.stats(store)
            times.append(time.perf_counter() - started)
        assert found.events == events, found
        # Snapshot saves in the steady state: aggregates holding versions 1..7 (with
        # keep=3: 5, 6 and 7), then saves at versions 8, 9 and 10, timed (with keep=3
        # each deletes one row in the same transaction).
        streams = [f"{CATEGORIES[n % 3]}-{n}" for n in range(aggregates)]
        heads = {s: [e.event_id for e in store.read_stream(s)] for s in streams}
        half = min(500, aggregates // 2)
        sets = (("without_keep", plain, streams[:half]), ("keep_3", keep3, streams[half:2 * half]))
        for _, snapshots, chosen in sets:
            for stream in chosen:
                for version in range(1, 8):
                    snapshots.save(_snapshot(stream, version, heads[stream][version - 1]))
        samples: dict[str, list[float]] = {name: [] for name, _, _ in sets}
        # Interleaved, so that both see the same load on a shared machine.
        for version in (8, 9, 10):
            for i in range(half):
                for name, snapshots, chosen in sets:
                    stream = chosen[i]
                    started = time.perf_counter()
                    snapshots.save(_snapshot(stream, version, heads[stream][version - 1]))
                    samples[name].append(time.perf_counter() - started)
        save_ms = {name: round(statistics.median(times) * 1000, 3)
                   for name, times in samples.items()}
        # The maintenance pass: every aggregate with 10 snapshots, pruned to 3.
        for stream in streams:
            for version in range(1, PER_STREAM + 1):
                plain.save(_snapshot(stream, version, heads[stream][version - 1]))
        started = time.perf_counter()
        deleted = plain.prune(3)
        prune_seconds = time.perf_counter() - started
        assert deleted == aggregates * (PER_STREAM - 3), deleted
        after = eskit.stats(store, top=3)
        return {
            "backend": backend, "bulk": bulk, "events": events, "streams": events // PER_STREAM,
            "fill_seconds": round(fill_seconds, 2),
            "stats_seconds_median": round(statistics.median(times), 3),
            "stats_seconds_all": [round(t, 3) for t in times],
            "payload_bytes": found.payload_bytes, "storage_bytes": found.storage_bytes,
            "snapshot_save_ms_median": save_ms,
            "prune_aggregates": aggregates, "prune_deleted": deleted,
            "prune_seconds": round(prune_seconds, 3),
            "snapshots_after_prune": after.snapshots,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--aggregates", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bulk", action="store_true",
                        help="Write the rows straight into the table, streams interleaved.")
    args = parser.parse_args(argv)
    result = run(args.backend, args.events, args.aggregates, args.repeat, bulk=args.bulk)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
