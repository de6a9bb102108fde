"""Every snapshot store passes the one snapshot contract suite; a backend is a class here."""

from pathlib import Path

import pytest

from eskit import (
    InMemoryEventStore,
    InMemorySnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
)
from eskit.testing import SnapshotStoreContract
from eskit.testing.snapshot_contract import Stores
from tests.conftest import new_schema_name


class TestInMemorySnapshotStore(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path) -> Stores:
        events = InMemoryEventStore()
        return events, InMemorySnapshotStore(events)


class TestInMemorySnapshotsBesideSQLite(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path) -> Stores:
        events = SQLiteEventStore(tmp_path / "events.db")
        return events, InMemorySnapshotStore(events)


class TestSQLiteFileSnapshotStore(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path) -> Stores:
        events = SQLiteEventStore(tmp_path / "events.db")
        return events, SQLiteSnapshotStore(events)


class TestSQLiteMemorySnapshotStore(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path) -> Stores:
        events = SQLiteEventStore(":memory:")
        return events, SQLiteSnapshotStore(events)


class TestPostgresSnapshotStore(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_stores(self, tmp_path: Path) -> Stores:
        from eskit import PostgresEventStore, PostgresSnapshotStore

        events = PostgresEventStore(self.dsn, schema=new_schema_name())
        return events, PostgresSnapshotStore(events)
