"""Every event store passes the one contract suite; a new backend is a new class here."""

from pathlib import Path

from eskit import EventStore, InMemoryEventStore, SQLiteEventStore
from eskit.testing import EventStoreContract


class TestInMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestSQLiteMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(":memory:")
