"""Every event store passes the one contract suite; a new backend is a new class here."""

from pathlib import Path

import pytest

from eskit import EventStore, InMemoryEventStore, SQLiteEventStore
from eskit.testing import EventStoreContract
from tests.conftest import new_schema_name


class TestInMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestSQLiteMemoryEventStore(EventStoreContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(":memory:")


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name())
