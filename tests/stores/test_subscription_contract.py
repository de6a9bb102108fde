"""Every sync store's subscriptions pass the one contract suite; a new backend is one class."""

from pathlib import Path

import pytest

from eskit import EventStore, InMemoryEventStore, SQLiteEventStore
from eskit.testing import SubscriptionContract
from tests.conftest import new_schema_name


class TestInMemorySubscriptions(SubscriptionContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileSubscriptions(SubscriptionContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestSQLiteMemorySubscriptions(SubscriptionContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(":memory:")


class TestPostgresSubscriptions(SubscriptionContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name())
