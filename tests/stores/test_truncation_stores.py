"""Truncation on SQLite and PostgreSQL beyond the contract: the triggers that guard the
kept events and the truncation record, and stores of the schema before truncation."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from eskit import NewEvent, SQLiteEventStore, StoreError
from eskit.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.conftest import new_schema_name


def _events(count: int) -> list[NewEvent]:
    return [NewEvent("Numbered", {"n": n}) for n in range(1, count + 1)]


def test_sqlite_raw_sql_cannot_remove_kept_events_or_undo_a_truncation(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("t", _events(4))
        store.truncate_stream("t", 3, force=True)
    with closing(sqlite3.connect(path)) as conn:
        for sql, message in (
            ("DELETE FROM eskit_events WHERE stream_id = 't'", "append-only"),
            ("DELETE FROM eskit_truncated_streams", "permanent"),
            ("UPDATE eskit_truncated_streams SET first_version = 1", "permanent"),
        ):
            with pytest.raises(sqlite3.IntegrityError, match=message):
                conn.execute(sql)
        conn.rollback()
        assert conn.execute("SELECT version FROM eskit_events").fetchall() == [(3,), (4,)]


def test_a_sqlite_store_of_schema_5_reads_refuses_to_truncate_and_migrates_on_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("s", _events(3))
    with closing(sqlite3.connect(path)) as conn, conn:  # back to schema 5
        for name in ("eskit_truncations_stay", "eskit_truncations_only_grow",
                     "eskit_events_no_delete"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE eskit_truncated_streams")
        conn.execute("""CREATE TRIGGER eskit_events_no_delete BEFORE DELETE ON eskit_events
                        WHEN NOT EXISTS (SELECT 1 FROM eskit_deleted_streams d
                                         WHERE d.stream_id = OLD.stream_id AND d.hard = 1)
                         AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams a
                                         WHERE a.stream_id = OLD.stream_id)
                        BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""")
        conn.execute("UPDATE eskit_meta SET value = '5' WHERE key = 'schema_version'")
    with SQLiteEventStore(path, create=False) as old:
        assert [e.version for e in old.read_stream("s")] == [1, 2, 3]
        with pytest.raises(StoreError, match="before truncation"):
            old.truncate_stream("s", 3, force=True)
    with SQLiteEventStore(path) as store:
        assert store.schema_version() == SQLITE_SCHEMA_VERSION
        assert store.truncate_stream("s", 3, force=True) == 2
        assert [e.version for e in store.read_stream("s")] == [3]


def test_postgres_raw_sql_cannot_remove_kept_events_or_undo_a_truncation(
    postgres_dsn: str,
) -> None:
    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_deletion import DELETING

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("t", _events(4))
        store.truncate_stream("t", 3, force=True)
    events, truncated = f'"{schema}".eskit_events', f'"{schema}".eskit_truncated_streams'
    with psycopg.connect(postgres_dsn) as conn:
        for statement in (f"DELETE FROM {events} WHERE stream_id = 't'",
                          f"DELETE FROM {truncated}",
                          f"UPDATE {truncated} SET first_version = 1"):
            conn.execute("SELECT set_config(%s, 'on', true)", (DELETING,))  # even so
            with pytest.raises(psycopg.errors.RaiseException):
                conn.execute(statement)
            conn.rollback()
        rows = conn.execute(f"SELECT version FROM {events} ORDER BY version").fetchall()
    assert rows == [(3,), (4,)]


def test_a_postgres_store_of_schema_6_refuses_to_truncate_until_migrated(
    postgres_dsn: str,
) -> None:
    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_schema import SCHEMA_VERSION, Statements
    from eskit.stores.postgres_truncation import TRUNCATION_SCHEMA

    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for migration in statements.migrations[: TRUNCATION_SCHEMA - 1]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(statements.write_schema_version, (str(TRUNCATION_SCHEMA - 1),))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        old.append("s", _events(3), 0)
        with pytest.raises(StoreError, match="eskit migrate"):
            old.truncate_stream("s", 3, force=True)
        old.delete_stream("gone", hard=True)  # deleting still works on schema 6
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.truncate_stream("s", 3, force=True) == 2
        assert [e.version for e in store.read_stream("s")] == [3]
