"""Command handlers and Repository.execute keep their guarantees on every sync store."""

from pathlib import Path

import pytest

from eskit import EventStore, InMemoryEventStore, SQLiteEventStore
from eskit.testing import CommandHandlerContract
from tests.conftest import new_schema_name


class TestInMemoryCommands(CommandHandlerContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLiteFileCommands(CommandHandlerContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SQLiteEventStore(tmp_path / "events.db")


class TestPostgresCommands(CommandHandlerContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name())
