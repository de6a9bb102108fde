"""Compression beyond the contract: the frame reader's bounds, option checks, the async
stores, appends in the caller's transaction, and stores migrated from older schemas."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import zstandard

from eskit import (
    DecodingError,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    StoreError,
    compact,
)
from eskit.aio import AsyncSQLiteEventStore
from eskit.stores import compression
from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from eskit.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from eskit.testing.compression_contract import large_payload
from tests.conftest import new_schema_name

# -- the frame reader ------------------------------------------------------------------


def test_inflate_refuses_frames_without_a_declared_size_or_beyond_the_bound() -> None:
    payload = b'{"a": "' + b"x" * 5000 + b'"}'
    assert compression.inflate(compression.compress(payload)) == payload
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
    with pytest.raises(DecodingError, match="declare"):
        compression.inflate(unsized)
    with pytest.raises(DecodingError, match="over the limit"):
        compression.inflate(compression.compress(payload), limit=100)
    flipped = bytearray(compression.compress(payload))
    flipped[-6] ^= 0xFF  # inside the last block or the checksum
    with pytest.raises(DecodingError):
        compression.inflate(bytes(flipped))
    with pytest.raises(DecodingError, match="not a zstd frame"):
        compression.inflate(b"{}")


def test_postgres_hex_text_of_a_frame_is_inflated_and_bad_hex_is_a_decoding_error() -> None:
    payload = b'{"n": "' + "é".encode() * 800 + b'"}'
    text = "\\x" + compression.compress(payload).hex()
    assert compression.plain(text) == payload
    assert compression.is_compressed(text)
    assert compression.plain('{"n": 1}') == '{"n": 1}'
    with pytest.raises(DecodingError):
        compression.plain(compression.HEX_PREFIX + "zz")


def test_stored_data_compresses_only_at_the_threshold_and_only_if_smaller() -> None:
    big = b'{"a": "' + b"ab" * 1000 + b'"}'
    assert compression.stored_data(big, None) == big.decode()
    assert compression.stored_data(big, len(big) + 1) == big.decode()
    assert isinstance(compression.stored_data(big, len(big)), bytes)
    noise = b'{"a": "' + bytes(range(35, 127)).replace(b'"', b"").replace(b"\\", b"") + b'"}'
    assert compression.stored_data(noise, 1) == noise.decode()  # would not shrink


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1024"])
def test_a_bad_threshold_is_refused_before_any_io(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="compress_threshold"):
        SQLiteEventStore(tmp_path / "x.db", compress_threshold=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "x.db").exists()


# -- SQLite ----------------------------------------------------------------------------


def test_the_sqlite_trigger_refuses_every_update_but_text_to_frame(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path, compress_threshold=None) as store:
        store.append("s", [NewEvent("A", large_payload())])
    frame = compression.compress(b'{"a": 1}' * 200)
    with closing(sqlite3.connect(path)) as conn:
        for change, params in [
            ("event_type = 'B'", ()),
            ("data = ?, event_type = 'B'", (frame,)),  # a frame, but another column too
            ("data = ?", (b"not a frame",)),
            ("data = '{}'", ()),
        ]:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(f"UPDATE eskit_events SET {change}", params)


def test_an_old_sqlite_file_is_migrated_on_open_and_can_be_compacted(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("s", [NewEvent("A", large_payload())])
    with closing(sqlite3.connect(path)) as conn, conn:
        # Back to schema 2: its trigger refused every UPDATE.
        conn.execute("DROP TRIGGER eskit_events_no_update")
        conn.execute("""CREATE TRIGGER eskit_events_no_update BEFORE UPDATE ON eskit_events
                        BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""")
        conn.execute("UPDATE eskit_meta SET value = '2' WHERE key = 'schema_version'")
    with SQLiteEventStore(path, create=False) as inspecting:
        assert inspecting.schema_version() == 2
        with pytest.raises(StoreError, match=f"compact needs {SQLITE_SCHEMA_VERSION}"):
            compact(inspecting, older_than=timedelta(0))
    with SQLiteEventStore(path) as store:
        assert store.schema_version() == SQLITE_SCHEMA_VERSION
        assert compact(store, older_than=timedelta(0)).compressed == 0  # already compressed
        assert store.read_stream("s")[0].event_data == large_payload()


def test_the_async_sqlite_store_compresses_and_reads_back(tmp_path: Path) -> None:
    async def main() -> None:
        store = await AsyncSQLiteEventStore.open(tmp_path / "events.db", compress_threshold=512)
        try:
            batch = [NewEvent("Placed", large_payload(1))]
            await store.append("order-1", batch, 0)
            assert (await store.append("order-1", batch, 0)).duplicate
            [event] = await store.read_stream("order-1")
            assert event.event_data == large_payload(1)
            assert [e.event_id async for e in store.read_all()] == [event.event_id]
            assert compact(store, older_than=timedelta(0)).compressed == 0
        finally:
            await store.close()

    asyncio.run(main())
    with closing(sqlite3.connect(tmp_path / "events.db")) as conn:
        assert conn.execute("SELECT typeof(data) FROM eskit_events").fetchone() == ("blob",)


# -- PostgreSQL ------------------------------------------------------------------------


def _compressed(dsn: str, schema: str) -> list[bool]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            f'SELECT data_zstd IS NOT NULL FROM "{schema}".eskit_events ORDER BY tx_id, seq'
        ).fetchall()]


def test_the_async_postgres_store_compresses_and_reads_back(postgres_dsn: str) -> None:
    from eskit.aio import AsyncPostgresEventStore

    schema = new_schema_name()

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=schema)
        try:
            batch = [NewEvent("Placed", large_payload(1)), NewEvent("Small", {"n": 1})]
            await store.append("order-1", batch, 0)
            assert (await store.append("order-1", batch, 0)).duplicate
            events = await store.read_stream("order-1")
            assert [e.event_data for e in events] == [large_payload(1), {"n": 1}]
        finally:
            await store.close()

    asyncio.run(main())
    assert _compressed(postgres_dsn, schema) == [True, False]


def test_an_append_in_the_callers_transaction_is_compressed(postgres_dsn: str) -> None:
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()  # set up the schema
    with psycopg.connect(postgres_dsn) as conn:
        store = PostgresEventStore(connection=conn, schema=schema)
        store.append("order-1", [NewEvent("Placed", large_payload(1))], 0)
        conn.commit()
        assert store.read_stream("order-1")[0].event_data == large_payload(1)
    assert _compressed(postgres_dsn, schema) == [True]


def test_a_schema_4_store_appends_uncompressed_then_migrates_and_compacts(
    postgres_dsn: str,
) -> None:
    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_schema import Statements

    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for migration in statements.migrations[:4]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(statements.write_schema_version, ("4",))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        old.append("order-1", [NewEvent("Placed", large_payload(1))], 0)
        assert old.read_stream("order-1")[0].event_data == large_payload(1)
        with pytest.raises(StoreError, match="eskit migrate"):
            compact(old, older_than=timedelta(0))
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == POSTGRES_SCHEMA_VERSION
        assert _compressed(postgres_dsn, schema) == [False]
        assert compact(store, older_than=timedelta(0)).compressed == 1
        assert _compressed(postgres_dsn, schema) == [True]
        assert store.read_stream("order-1")[0].event_data == large_payload(1)


def test_the_postgres_triggers_refuse_updates_without_the_flag_or_beyond_the_payload(
    postgres_dsn: str,
) -> None:
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema, compress_threshold=None) as store:
        store.append("order-1", [NewEvent("Placed", large_payload(1))], 0)
    frame = compression.compress(b'{"a": 1}' * 200)
    events = f'"{schema}".eskit_events'
    for flag, change, params in [
        (False, "data = NULL, data_zstd = %s", (frame,)),  # no flag
        (True, "data = NULL, data_zstd = %s, event_type = 'B'", (frame,)),
        (True, "data = NULL, data_zstd = %s", (b"not a frame",)),
        (True, "data_zstd = %s", (frame,)),  # both payloads: the CHECK
    ]:
        with psycopg.connect(postgres_dsn) as conn:
            if flag:
                conn.execute("SELECT set_config('eskit.compacting', 'on', true)")
            with pytest.raises(psycopg.Error):
                conn.execute(f"UPDATE {events} SET {change}", params)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SELECT set_config('eskit.compacting', 'on', true)")
        with pytest.raises(psycopg.Error, match="append-only"):
            conn.execute(f"DELETE FROM {events}")
    assert _compressed(postgres_dsn, schema) == [False]


def test_compact_refuses_a_store_it_cannot_compact_before_any_io(postgres_dsn: str) -> None:
    from eskit import InMemoryEventStore
    from eskit.aio import AsyncPostgresEventStore

    with pytest.raises(InvalidInputError, match="InMemoryEventStore"):
        compact(InMemoryEventStore(), older_than=timedelta(0))
    unopened = AsyncPostgresEventStore(postgres_dsn, schema=new_schema_name())
    with pytest.raises(InvalidInputError, match="give it a PostgresEventStore"):
        compact(unopened, older_than=timedelta(0))
