"""AsyncCommandHandler and AsyncRepository.execute keep their guarantees on every async store."""

from pathlib import Path

import pytest

from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from eskit.testing import AsyncCommandHandlerContract
from tests.conftest import new_schema_name


class TestAsyncInMemoryCommands(AsyncCommandHandlerContract):
    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        return AsyncInMemoryEventStore()


class TestAsyncSQLiteFileCommands(AsyncCommandHandlerContract):
    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        return await AsyncSQLiteEventStore.open(tmp_path / "events.db")


class TestAsyncPostgresCommands(AsyncCommandHandlerContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        from eskit.aio import AsyncPostgresEventStore

        return await AsyncPostgresEventStore.open(self.dsn, schema=new_schema_name())
