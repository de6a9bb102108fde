"""Every async store's subscriptions pass the one contract suite; a new backend is one class."""

from pathlib import Path

import pytest

from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from eskit.testing import AsyncSubscriptionContract
from tests.conftest import new_schema_name


class TestAsyncInMemorySubscriptions(AsyncSubscriptionContract):
    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        return AsyncInMemoryEventStore()


class TestAsyncSQLiteFileSubscriptions(AsyncSubscriptionContract):
    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        return await AsyncSQLiteEventStore.open(tmp_path / "events.db")


class TestAsyncSQLiteMemorySubscriptions(AsyncSubscriptionContract):
    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        return await AsyncSQLiteEventStore.open(":memory:")


class TestAsyncPostgresSubscriptions(AsyncSubscriptionContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        from eskit.aio import AsyncPostgresEventStore

        return await AsyncPostgresEventStore.open(self.dsn, schema=new_schema_name())
