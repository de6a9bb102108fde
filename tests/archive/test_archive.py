"""Archive and restore on SQLite and PostgreSQL: raw rows back byte for byte, at their
original positions; typed errors; the same tests on both stores (``backend``)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

import eskit
from eskit.aio import AsyncEventStore
from eskit.archive import (
    LocalDirectoryStorage,
    archive_streams,
    restore_streams,
    streams_older_than,
    verify,
)
from eskit.stores.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteEventStore
from eskit.stores.sqlite_archive import MIGRATION as ARCHIVE_MIGRATION
from tests.archive.conftest import Backend

_RAW_INSERT = {
    "sqlite": "INSERT INTO {events} (event_id, stream_id, version, event_type, schema_version, "
              "recorded_at, data, metadata) "
              "VALUES (x'00', 'order-1', 1, 't', 1, 0, '{{}}', '{{}}')",
    "postgres": "INSERT INTO {events} (event_id, stream_id, version, event_type, schema_version, "
                "recorded_at, data, metadata) VALUES (gen_random_uuid(), 'order-1', 1, 't', 1, "
                "now(), '{{}}', '{{}}')",
}


async def _open_async(backend: Backend) -> AsyncEventStore:
    """The backend's store, opened as an asyncio store."""
    from eskit.aio import AsyncPostgresEventStore, AsyncSQLiteEventStore

    opened: AsyncEventStore
    if backend.kind == "sqlite":
        opened = await AsyncSQLiteEventStore.open(backend.path)
    else:
        opened = await AsyncPostgresEventStore.open(backend.dsn, schema=backend.schema)
    return opened


def _fill(store: eskit.EventStore) -> None:
    for s in ("order-1", "order-2", "user-1"):
        for i in range(3):
            store.append(s, [eskit.NewEvent(
                "Happened", {"i": i, "text": "é 😀 \u0000" if i == 1 else "x" * 5000})])


def test_round_trip_gives_back_identical_rows_at_their_positions(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open(compress_threshold=1000)  # the 5,000-byte payloads are compressed
    _fill(store)
    before = backend.raw()
    positions = {(e.stream_id, e.version): e.position for e in store.read_all()}
    storage = LocalDirectoryStorage(tmp_path / "arch")
    assert archive_streams(store, storage, ["order-1", "order-2"]) == 6
    assert [r[3 if backend.kind == "postgres" else 2] for r in backend.raw()] == ["user-1"] * 3
    assert verify(storage) == []
    # Rerun: nothing left to archive, nothing duplicated.
    assert archive_streams(store, storage, ["order-1", "order-2"]) == 0
    assert restore_streams(store, storage) == 6
    assert backend.raw() == before  # every column, compressed payloads included
    assert {(e.stream_id, e.version): e.position for e in store.read_all()} == positions
    assert restore_streams(store, storage) == 0
    # New appends get positions after the old head, not in the refilled holes.
    result = store.append("order-1", [eskit.NewEvent("More", {})])
    assert result.position > max(positions.values())


def test_an_archived_stream_refuses_reads_appends_deletes_and_truncation(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open()
    _fill(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    archive_streams(store, storage, ["order-1"])
    with pytest.raises(eskit.StreamArchivedError) as info:
        store.read_stream("order-1")
    assert info.value.archive == str(tmp_path / "arch")
    assert isinstance(info.value, eskit.EskitError)
    for expected in (eskit.ANY, 3, 0):
        with pytest.raises(eskit.StreamArchivedError):
            store.append("order-1", [eskit.NewEvent("More", {})], expected)
    with pytest.raises(eskit.StreamArchivedError):
        store.truncate_stream("order-1", 2, force=True)
    with pytest.raises(eskit.StreamArchivedError):
        store.delete_stream("order-1", hard=True)
    assert len(store.read_stream("order-2")) == 3
    assert [e.stream_id for e in store.read_all()].count("order-1") == 0
    # Raw SQL cannot put events into an archived stream nor delete live ones.
    with pytest.raises(backend.refused):
        backend.execute(_RAW_INSERT[backend.kind])
    with pytest.raises(backend.refused):
        backend.execute("DELETE FROM {events} WHERE stream_id = 'order-2'")
    assert restore_streams(store, storage) == 3  # and it comes back whole
    assert len(store.read_stream("order-1")) == 3


def test_verify_finds_a_corrupt_segment_and_restore_refuses_it(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open()
    _fill(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    archive_streams(store, storage, ["order-1"])
    segment = next(n for n in storage.list("seg-") if n.endswith(".zst"))
    blob = bytearray(storage.get(segment))
    blob[-1] ^= 1
    (tmp_path / "arch" / segment).write_bytes(bytes(blob))
    problems = verify(storage)
    assert len(problems) == 1
    assert "sha256" in problems[0]
    with pytest.raises(eskit.archive.ArchiveCorruptError):
        restore_streams(store, storage)
    with pytest.raises(eskit.StreamArchivedError):
        store.read_stream("order-1")


def test_policy_picks_streams_by_age_and_category(backend: Backend) -> None:
    store = backend.open()
    _fill(store)
    store.delete_stream("user-1")
    assert streams_older_than(store, timedelta(days=1)) == []
    assert streams_older_than(store, timedelta(0), category="order") == ["order-1", "order-2"]
    assert streams_older_than(store, timedelta(0)) == ["order-1", "order-2"]  # not deleted


def _fill_tagged(store: eskit.EventStore) -> None:
    store.append("order-1", [
        eskit.NewEvent("Placed", {"n": 1}, tags=["customer:1", "shop:é 😀"]),
        eskit.NewEvent("Noted", {"n": 2}),
        eskit.NewEvent("Shipped", {"n": 3}, tags=["customer:1"]),
    ])
    store.append("order-2", [eskit.NewEvent("Placed", {}, tags=["customer:2"])])


def test_tags_go_into_the_segment_and_come_back_identical(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open()
    _fill_tagged(store)
    rows, tags = backend.raw(), backend.raw_tags()
    customer = eskit.Query.of(tags=["customer:1"])
    read = store.read_events(customer)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    assert archive_streams(store, storage, ["order-1"]) == 3
    # The delete took the archived events' tags with them; the other stream's stay.
    assert [t[0] for t in backend.raw_tags()] == ["customer:2"]
    assert store.read_events(customer).events == ()
    assert restore_streams(store, storage) == 3
    assert (backend.raw(), backend.raw_tags()) == (rows, tags)
    again = store.read_events(customer)
    assert [(e.event_type, e.tags) for e in again.events] == [
        ("Placed", ("customer:1", "shop:é 😀")), ("Shipped", ("customer:1",))]
    # A condition decided before the archive still sees the restored events.
    with pytest.raises(eskit.AppendConditionFailed):
        store.append("order-3", [eskit.NewEvent("Placed", {}, tags=["customer:1"])],
                     condition=eskit.AppendCondition(customer, 0))
    assert [e.event_id for e in again.events] == [e.event_id for e in read.events]


def test_the_async_functions_keep_tags_too(backend: Backend, tmp_path: Path) -> None:
    from eskit.archive.aio import archive_streams_async, restore_streams_async

    store = backend.open()
    _fill_tagged(store)
    rows, tags = backend.raw(), backend.raw_tags()
    storage = LocalDirectoryStorage(tmp_path / "arch")

    async def main() -> None:
        opened = await _open_async(backend)
        try:
            assert await archive_streams_async(opened, storage, ["order-1", "order-2"]) == 4
            assert backend.raw_tags() == []
            assert await restore_streams_async(opened, storage) == 4
        finally:
            await opened.close()

    asyncio.run(main())
    assert (backend.raw(), backend.raw_tags()) == (rows, tags)


def test_a_segment_with_damaged_tags_is_refused_before_any_restore(
    backend: Backend, tmp_path: Path,
) -> None:
    import json

    import zstandard

    from eskit.archive.segments import ArchiveCorruptError, decode_segment_tags

    store = backend.open()
    _fill_tagged(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    archive_streams(store, storage, ["order-2"])
    segment = next(n for n in storage.list("seg-") if n.endswith(".zst"))
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(
        storage.get(segment)).decode().splitlines()
    damaged = [json.dumps({**json.loads(line), "tg": [1, 2]}) for line in lines if line]
    blob = zstandard.ZstdCompressor().compress(("\n".join(damaged) + "\n").encode())
    with pytest.raises(ArchiveCorruptError, match="tags"):
        decode_segment_tags(blob)


def test_a_sqlite_store_of_the_previous_schema_migrates_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteEventStore(str(path))
    _fill(store)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER eskit_events_not_archived")
        conn.execute("DROP TABLE eskit_archived_streams")
        # The version before the archive migration (later migrations are idempotent).
        conn.execute("UPDATE eskit_meta SET value = ? WHERE key = 'schema_version'",
                     (str(MIGRATIONS.index(ARCHIVE_MIGRATION)),))
    store = SQLiteEventStore(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    assert archive_streams(store, LocalDirectoryStorage(tmp_path / "a"), ["user-1"]) == 3
    store.close()


def test_a_postgres_schema_9_refuses_to_archive_until_migrated(
    postgres_dsn: str, tmp_path: Path,
) -> None:
    import psycopg

    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_archive import ARCHIVE_SCHEMA
    from eskit.stores.postgres_schema import SCHEMA_VERSION as PG_VERSION
    from eskit.stores.postgres_schema import Statements
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for migration in statements.migrations[: ARCHIVE_SCHEMA - 1]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(statements.write_schema_version, (str(ARCHIVE_SCHEMA - 1),))
    storage = LocalDirectoryStorage(tmp_path / "arch")
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        _fill(old)
        with pytest.raises(eskit.StoreError, match="eskit migrate"):
            archive_streams(old, storage, ["user-1"])
        assert old.read_stream("nothing") == []  # reads do not look for archives there
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == PG_VERSION
        assert archive_streams(store, storage, ["user-1"]) == 3
        assert eskit.stats(store).archived_events == 3


def test_stats_and_gauges_count_what_is_archived_until_it_is_restored(
    backend: Backend, tmp_path: Path,
) -> None:
    from prometheus_client import CollectorRegistry

    from eskit.observability.prometheus import StoreStatsCollector

    store = backend.open()
    _fill(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    registry = CollectorRegistry()
    registry.register(StoreStatsCollector(store, max_age=0))
    system = "sqlite" if backend.kind == "sqlite" else "postgresql"
    assert archive_streams(store, storage, ["order-1", "order-2"]) == 6
    found = eskit.stats(store)
    assert (found.events, found.archived_streams, found.archived_events) == (3, 2, 6)
    assert registry.get_sample_value("eskit_store_stats_archived_events",
                                     {"system": system}) == 6
    assert registry.get_sample_value("eskit_store_stats_archived_streams",
                                     {"system": system}) == 2
    restore_streams(store, storage)
    found = eskit.stats(store)
    assert (found.events, found.archived_streams, found.archived_events) == (9, 0, 0)


def test_the_async_store_reads_an_archived_stream_as_archived(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open()
    _fill(store)
    archive_streams(store, LocalDirectoryStorage(tmp_path / "arch"), ["order-1"])

    async def main() -> None:
        opened = await _open_async(backend)
        try:
            with pytest.raises(eskit.StreamArchivedError):
                await opened.read_stream("order-1")
            with pytest.raises(eskit.StreamArchivedError):
                await opened.append("order-1", [eskit.NewEvent("More", {})])
            found = await eskit.maintenance.stats_async(opened)
            assert found.archived_events == 3
        finally:
            await opened.close()

    asyncio.run(main())


def test_the_async_functions_archive_and_restore_the_same_way(
    backend: Backend, tmp_path: Path,
) -> None:
    from eskit.archive.aio import (
        archive_streams_async,
        restore_streams_async,
        streams_older_than_async,
    )

    store = backend.open(compress_threshold=1000)
    _fill(store)
    before = backend.raw()
    storage = LocalDirectoryStorage(tmp_path / "arch")
    archive_streams(store, storage, ["user-1"])  # a sync archive the async restore reads

    async def main() -> None:
        opened = await _open_async(backend)
        try:
            assert await streams_older_than_async(opened, timedelta(0), category="order") == [
                "order-1", "order-2"]
            skipped: list[str] = []
            seen: list[int] = []
            assert await archive_streams_async(
                opened, storage, ["order-1", "order-2", "user-1"], skipped=skipped,
                progress=lambda n, total: seen.append(n)) == 6
            assert (skipped, seen) == (["user-1"], [1, 2, 3])  # user-1: archived already
            with pytest.raises(eskit.StreamArchivedError):
                await opened.read_stream("order-2")
            assert await restore_streams_async(opened, storage, ["order-1"]) == 3
            assert await restore_streams_async(opened, storage) == 6
            assert await restore_streams_async(opened, storage) == 0
        finally:
            await opened.close()
        with pytest.raises(eskit.InvalidInputError):
            await archive_streams_async(eskit.aio.AsyncInMemoryEventStore(), storage, [])

    asyncio.run(main())
    assert backend.raw() == before
