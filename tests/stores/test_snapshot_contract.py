"""Every snapshot store passes the one snapshot contract suite; a backend is a class here."""

from collections.abc import Callable
from pathlib import Path

import pytest

from eskit import (
    EventStore,
    InMemoryEventStore,
    InMemorySnapshotStore,
    SnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
)
from eskit.testing import SnapshotStoreContract
from eskit.testing.snapshot_contract import Stores
from tests.conftest import new_schema_name


def _beside(events: EventStore, make: Callable[[], SnapshotStore]) -> Stores:
    """The snapshot store ``make`` builds beside ``events``; ``events`` closed if it fails."""
    try:
        return events, make()
    except BaseException:
        events.close()
        raise


class TestInMemorySnapshotStore(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        events = InMemoryEventStore()
        return _beside(events, lambda: InMemorySnapshotStore(events, keep=keep))


class TestInMemorySnapshotsBesideSQLite(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        tmp_path.mkdir(parents=True, exist_ok=True)
        events = SQLiteEventStore(tmp_path / "events.db")
        return _beside(events, lambda: InMemorySnapshotStore(events, keep=keep))


class TestSQLiteFileSnapshotStore(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        tmp_path.mkdir(parents=True, exist_ok=True)
        events = SQLiteEventStore(tmp_path / "events.db")
        return _beside(events, lambda: SQLiteSnapshotStore(events, keep=keep))


class TestSQLiteMemorySnapshotStore(SnapshotStoreContract):
    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        events = SQLiteEventStore(":memory:")
        return _beside(events, lambda: SQLiteSnapshotStore(events, keep=keep))


class TestPostgresSnapshotStore(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        from eskit import PostgresEventStore, PostgresSnapshotStore

        events = PostgresEventStore(self.dsn, schema=new_schema_name())
        return _beside(events, lambda: PostgresSnapshotStore(events, keep=keep))
