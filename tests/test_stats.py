"""eskit.stats / stats_async and the Prometheus size gauges, on every store that has them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit import (
    EventStore,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    Snapshot,
    SQLiteEventStore,
    SQLiteSnapshotStore,
    StoreStats,
    codec,
)
from eskit.maintenance import CategorySize, StreamSize, stats_async
from tests.conftest import new_schema_name

# Streams, their events' data and metadata: non-ASCII text (bytes are not characters),
# ids with several dashes, and one without any.
WORLD: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "order-1": [({"n": i, "text": "zoë ✓ " * 20}, {}) for i in range(5)],
    "order-2": [({"n": 1}, {"by": "ann"})],
    "user-1-admin": [({"name": "ann"}, {}), ({"name": "bob"}, {"trace": "x" * 300})],
    "solo": [({}, {})],
    "sensor-9": [({"v": [1.5] * 50}, {}) for _ in range(3)],
}


def _fill(store: EventStore) -> dict[str, list[uuid.UUID]]:
    ids = {}
    for stream, events in WORLD.items():
        result = store.append(stream, [NewEvent("Happened", d, metadata=m) for d, m in events])
        ids[stream] = [e.event_id for e in result.events]
    return ids


def _bytes(events: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
    return sum(len(codec.encode(d)) + len(codec.encode(m)) for d, m in events)


def _expected_streams() -> list[StreamSize]:
    sizes = [StreamSize(s, len(e), _bytes(e)) for s, e in WORLD.items()]
    return sorted(sizes, key=lambda s: (-s.bytes, s.stream_id))


def _expected_categories() -> list[CategorySize]:
    found: dict[str, list[int]] = {}
    for stream, events in WORLD.items():
        row = found.setdefault(stream.split("-")[0], [0, 0, 0])
        row[0] += 1
        row[1] += len(events)
        row[2] += _bytes(events)
    sizes = [CategorySize(c, *row) for c, row in found.items()]
    return sorted(sizes, key=lambda c: (-c.bytes, c.category))


@pytest.fixture(params=["memory", "sqlite-file", "sqlite-memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    made: EventStore
    if request.param == "memory":
        made = InMemoryEventStore()
    elif request.param == "sqlite-file":
        made = SQLiteEventStore(tmp_path / "events.db")
    elif request.param == "sqlite-memory":
        made = SQLiteEventStore(":memory:")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        made = eskit.PostgresEventStore(dsn, schema=new_schema_name())
    yield made
    made.close()


def _snapshot_store(store: EventStore) -> Any:
    if isinstance(store, SQLiteEventStore):
        return SQLiteSnapshotStore(store)
    if isinstance(store, InMemoryEventStore):
        return None
    return eskit.PostgresSnapshotStore(store)  # type: ignore[arg-type]


def test_an_empty_store_measures_zero(store: EventStore) -> None:
    found = eskit.stats(store)
    assert (found.events, found.streams, found.payload_bytes) == (0, 0, 0)
    assert found.bytes_per_event is None
    assert found.largest_streams == found.largest_categories == ()
    if found.system != "memory":
        assert (found.snapshots, found.snapshot_bytes) == (0, 0)


def test_stats_count_events_streams_and_their_stored_bytes(store: EventStore) -> None:
    _fill(store)
    found = eskit.stats(store, top=3)
    total = sum(_bytes(e) for e in WORLD.values())
    assert found.events == sum(len(e) for e in WORLD.values()) == 12
    assert found.streams == len(WORLD)
    assert found.payload_bytes == total  # UTF-8 bytes of the stored JSON, not characters
    assert found.bytes_per_event == pytest.approx(total / 12)
    assert list(found.largest_streams) == _expected_streams()[:3]
    assert list(found.largest_categories) == _expected_categories()[:3]
    assert found.largest_categories[0] == CategorySize(
        "order", 2, 6, _bytes(WORLD["order-1"]) + _bytes(WORLD["order-2"])
    )
    # Small payloads stay below the compression threshold: stored as they decode.
    assert found.decoded_bytes == found.payload_bytes
    assert found.compression_ratio == 1.0
    if found.system != "memory":  # archiving exists on SQLite and PostgreSQL
        assert (found.archived_streams, found.archived_events) == (0, 0)
    else:
        assert (found.archived_streams, found.archived_events) == (None, None)
    assert found.deleted_streams == 0  # nothing deleted (was None before stream deletion)
    assert found.deleted_events == 0


def test_top_bounds_the_lists_and_zero_lists_nothing(store: EventStore) -> None:
    _fill(store)
    everything = eskit.stats(store, top=100)
    assert list(everything.largest_streams) == _expected_streams()
    assert list(everything.largest_categories) == _expected_categories()
    assert {c.category for c in everything.largest_categories} == {
        "order", "user", "solo", "sensor"
    }
    nothing = eskit.stats(store, top=0)
    assert nothing.largest_streams == nothing.largest_categories == ()
    assert nothing.events == everything.events


def test_the_same_events_measure_the_same_on_every_backend(
    store: EventStore, tmp_path: Path
) -> None:
    _fill(store)
    reference = InMemoryEventStore()
    _fill(reference)
    found, expected = eskit.stats(store), eskit.stats(reference)
    for field in ("events", "streams", "payload_bytes", "largest_streams",
                  "largest_categories"):
        assert getattr(found, field) == getattr(expected, field), field


def test_storage_bytes_are_what_the_database_spends(store: EventStore) -> None:
    _fill(store)
    found = eskit.stats(store)
    if found.system == "memory":
        assert found.storage_bytes is None
        return
    assert found.storage_bytes is not None
    assert found.storage_bytes > found.payload_bytes  # rows, indexes and pages cost more
    if found.system == "sqlite":
        assert found.storage_bytes % 512 == 0  # whole pages


def test_snapshots_are_counted_with_their_state_bytes(store: EventStore) -> None:
    ids = _fill(store)
    snapshots = _snapshot_store(store)
    if snapshots is None:
        assert eskit.stats(store).snapshots is None  # in memory they live elsewhere
        return
    states = [codec.encode({"v": v, "note": "é" * v}) for v in (1, 2, 3)]
    for version, state in zip((1, 2, 3), states, strict=True):
        snapshots.save(Snapshot("order-1", "t.Order", version, ids["order-1"][version - 1], 1,
                                state, datetime.now(UTC)))
    found = eskit.stats(store)
    assert found.snapshots == 3
    assert found.snapshot_bytes == sum(len(s) for s in states)


@pytest.mark.parametrize("top", [-1, True, "3", 1.0, 10_001])
def test_bad_top_is_invalid_input_before_any_io(tmp_path: Path, top: Any) -> None:
    closed = SQLiteEventStore(tmp_path / "events.db")
    closed.close()  # any I/O would raise StoreError instead
    with pytest.raises(InvalidInputError, match="top"):
        eskit.stats(closed, top=top)


def test_a_store_it_cannot_measure_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="cannot measure"):
        eskit.stats(object())  # type: ignore[arg-type]


def test_to_dict_is_json_with_bytes_per_event(store: EventStore) -> None:
    _fill(store)
    document = json.loads(json.dumps(eskit.stats(store, top=1).to_dict()))
    assert document["events"] == 12
    assert document["bytes_per_event"] == pytest.approx(document["payload_bytes"] / 12)
    assert document["largest_streams"] == [
        {"stream_id": "order-1", "events": 5, "bytes": _bytes(WORLD["order-1"])}
    ]
    assert document["compression_ratio"] == 1.0


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "postgres-async"])
def test_decoded_bytes_are_what_the_same_events_take_uncompressed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    def open_pair() -> tuple[Any, Any]:
        if kind == "sqlite":
            return (SQLiteEventStore(tmp_path / "on.db"),
                    SQLiteEventStore(tmp_path / "off.db", compress_threshold=None))
        dsn = request.getfixturevalue("postgres_dsn")
        return (eskit.PostgresEventStore(dsn, schema=new_schema_name()),
                eskit.PostgresEventStore(dsn, schema=new_schema_name(), compress_threshold=None))

    on, off = open_pair()
    for store in (on, off):
        for i in range(20):
            lines = [{"sku": f"sku-{n}", "qty": n, "note": "fragile " * (i % 5)}
                     for n in range(40)]
            store.append(f"order-{i % 3}", [NewEvent("Placed", {"lines": lines}),
                                            NewEvent("Paid", {"i": i})])
    if kind == "postgres-async":
        from eskit.aio import AsyncPostgresEventStore

        async def measure() -> Any:
            store = await AsyncPostgresEventStore.open(on.pool.conninfo, schema=on.schema)
            try:
                return await stats_async(store)
            finally:
                await store.close()

        compressed = asyncio.run(measure())
    else:
        compressed = eskit.stats(on)
    plain = eskit.stats(off)
    assert compressed.payload_bytes < plain.payload_bytes / 3
    assert compressed.decoded_bytes == plain.payload_bytes == plain.decoded_bytes
    assert compressed.compression_ratio == round(plain.payload_bytes / compressed.payload_bytes, 4)
    assert compressed.compression_ratio > 3
    on.close()
    off.close()


# --------------------------------------------------------------------------- async


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_stats_async_gives_the_same_figures_as_stats(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from eskit.aio import AsyncInMemoryEventStore, AsyncSQLiteEventStore

    async def main() -> tuple[StoreStats, StoreStats]:
        store: Any
        if kind == "memory":
            store = AsyncInMemoryEventStore()
        elif kind == "sqlite":
            store = await AsyncSQLiteEventStore.open(tmp_path / "events.db")
        else:
            from eskit.aio import AsyncPostgresEventStore

            store = await AsyncPostgresEventStore.open(
                request.getfixturevalue("postgres_dsn"), schema=new_schema_name()
            )
        try:
            for stream, events in WORLD.items():
                await store.append(stream, [NewEvent("Happened", d, metadata=m)
                                            for d, m in events])
            with pytest.raises(InvalidInputError, match="stats_async"):
                eskit.stats(store)
            with pytest.raises(InvalidInputError, match="top"):
                await stats_async(store, top=-1)
            found = await stats_async(store, top=2)
        finally:
            await store.close()
        reference = InMemoryEventStore()
        _fill(reference)
        return found, eskit.stats(reference, top=2)

    found, expected = asyncio.run(main())
    for field in ("events", "streams", "payload_bytes", "largest_streams",
                  "largest_categories"):
        assert getattr(found, field) == getattr(expected, field), field
    if kind == "postgres":
        assert found.storage_bytes is not None
        assert found.storage_bytes > 0
        assert found.snapshots == 0


# --------------------------------------------------------------------------- Prometheus


def _scrape(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect() for s in metric.samples
    }


def test_the_collector_exports_the_size_and_measures_at_most_every_max_age(
    tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from eskit.observability.prometheus import StoreStatsCollector

    store = SQLiteEventStore(tmp_path / "events.db")
    now = [100.0]
    collector = StoreStatsCollector(store, max_age=30, top=2, clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(collector)
    assert collector._stats is None  # registering did not measure
    try:
        _fill(store)
        first = _scrape(registry)
        sqlite = (("system", "sqlite"),)
        assert first[("eskit_store_stats_events", sqlite)] == 12
        assert first[("eskit_store_stats_streams", sqlite)] == len(WORLD)
        assert first[("eskit_store_stats_snapshots", sqlite)] == 0
        order = (("category", "order"), ("system", "sqlite"))
        assert first[("eskit_store_stats_category_events", order)] == 6
        assert ("eskit_store_stats_category_bytes", order) in first
        assert first[("eskit_store_stats_age_seconds", sqlite)] == 0
        store.append("late-1", [NewEvent("Happened", {})])
        now[0] += 29.0  # within max_age: the cached figures
        cached = _scrape(registry)
        assert cached[("eskit_store_stats_events", sqlite)] == 12
        assert cached[("eskit_store_stats_age_seconds", sqlite)] == 29.0
        now[0] += 1.0  # max_age reached: measured again
        fresh = _scrape(registry)
        assert fresh[("eskit_store_stats_events", sqlite)] == 13
        assert fresh[("eskit_store_stats_age_seconds", sqlite)] == 0
    finally:
        store.close()
    now[0] += 60.0  # the store is closed: the last figures stay, and their age shows it
    after = _scrape(registry)
    assert after[("eskit_store_stats_events", (("system", "sqlite"),))] == 13
    assert after[("eskit_store_stats_age_seconds", (("system", "sqlite"),))] == 60.0


def test_the_collector_leaves_out_figures_the_store_does_not_have() -> None:
    from prometheus_client import CollectorRegistry

    from eskit.observability.prometheus import StoreStatsCollector

    store = InMemoryEventStore()
    _fill(store)
    registry = CollectorRegistry()
    registry.register(StoreStatsCollector(store, max_age=0))
    names = {name for name, _ in _scrape(registry)}
    assert "eskit_store_stats_events" in names
    assert "eskit_store_stats_storage_bytes" not in names
    assert "eskit_store_stats_snapshots" not in names


@pytest.mark.parametrize("kwargs", [{"max_age": -1}, {"max_age": float("inf")},
                                    {"max_age": True}, {"top": -1}])
def test_bad_collector_options_are_invalid_input(kwargs: dict[str, Any]) -> None:
    from eskit.observability.prometheus import StoreStatsCollector

    with pytest.raises(InvalidInputError):
        StoreStatsCollector(InMemoryEventStore(), **kwargs)


# --------------------------------------------------------------------------- the benchmark


@pytest.mark.parametrize("bulk", [False, True], ids=["appends", "bulk"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_storage_benchmark_runs_and_checks_its_own_figures(
    backend: str, bulk: bool, request: pytest.FixtureRequest
) -> None:
    from benchmarks.storage_stats import run

    if backend == "postgres":
        request.getfixturevalue("postgres_dsn")  # fails in CI when the server is down
    result = run(backend, events=300, aggregates=20, repeat=1, bulk=bulk)
    assert (result["events"], result["streams"]) == (300, 30)
    assert result["prune_deleted"] == 20 * 7
    assert result["snapshots_after_prune"] == 20 * 3
    assert set(result["snapshot_save_ms_median"]) == {"without_keep", "keep_3"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_compressed_payloads_count_their_stored_bytes(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store: EventStore
    if backend == "sqlite":
        store = SQLiteEventStore(tmp_path / "events.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        store = eskit.PostgresEventStore(dsn, schema=new_schema_name())
    with store:
        lines = [{"sku": f"SKU-{i:04d}", "qty": i, "note": "the same words again " * 4}
                 for i in range(60)]
        store.append("order-1", [eskit.NewEvent("OrderPlaced", {"lines": lines})])
        found = eskit.stats(store)
    plain = len(eskit.codec.encode({"lines": lines})) + len(b"{}")
    # Stored compressed (the payload is well over the 1 KiB threshold): counted, and smaller.
    assert 0 < found.payload_bytes < plain / 2
