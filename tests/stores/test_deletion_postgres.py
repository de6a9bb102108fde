"""Stream deletion on PostgreSQL beyond the contract: the triggers and old schemas."""

from __future__ import annotations

import psycopg
import pytest

from eskit import NewEvent, StoreError
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_deletion import DELETING
from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from eskit.stores.postgres_schema import Statements
from tests.conftest import new_schema_name


def _e(n: int) -> NewEvent:
    return NewEvent("Numbered", {"n": n})


def test_raw_sql_cannot_remove_events_or_tombstones(postgres_dsn: str) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("live", [_e(1)])
        store.append("soft", [_e(2)])
        store.append("gone", [_e(3)])
        store.delete_stream("soft")
        store.delete_stream("gone", hard=True)
    events, deleted = f'"{schema}".eskit_events', f'"{schema}".eskit_deleted_streams'
    refused = [
        (False, f"DELETE FROM {events} WHERE stream_id = 'live'", "append-only"),
        # The flag alone is not enough: the stream must have a tombstone.
        (True, f"DELETE FROM {events} WHERE stream_id = 'live'", "hard-deleted"),
        (True, f"DELETE FROM {events} WHERE stream_id = 'soft'", "hard-deleted"),
        (False, f"DELETE FROM {deleted} WHERE stream_id = 'gone'", "permanent"),
        (False, f"UPDATE {deleted} SET hard = false WHERE stream_id = 'gone'", "permanent"),
    ]
    with psycopg.connect(postgres_dsn) as conn:
        for flag, statement, message in refused:
            if flag:
                conn.execute("SELECT set_config(%s, 'on', true)", (DELETING,))
            with pytest.raises(psycopg.errors.RaiseException, match=message):
                conn.execute(statement)
            conn.rollback()
        count = conn.execute(f"SELECT count(*) FROM {events}").fetchone()
    assert count == (2,)


def test_a_store_of_schema_5_refuses_to_delete_until_migrated(postgres_dsn: str) -> None:
    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for migration in statements.migrations[:5]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(statements.write_schema_version, ("5",))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        old.append("s", [_e(1)], 0)
        assert [e.version for e in old.read_all()] == [1]
        with pytest.raises(StoreError, match="eskit migrate"):
            old.delete_stream("s", hard=True)
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == POSTGRES_SCHEMA_VERSION
        store.delete_stream("s", 1, hard=True)
        assert list(store.read_all()) == []
        assert store.head_position() > 0
