"""Fixtures for the asyncio front end: one async store factory per backend.

pytest-asyncio is not used: each test runs its coroutine with ``asyncio.run``,
and the factories below are awaited inside it, so a PostgreSQL pool is always
opened in the loop that uses it.
"""

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from tests.conftest import new_schema_name

OpenStore = Callable[[], Awaitable[AsyncEventStore]]


def store_opener(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> OpenStore:
    if kind == "memory":
        async def open_memory() -> AsyncEventStore:
            return AsyncInMemoryEventStore()

        return open_memory
    if kind == "sqlite":
        path = tmp_path / "events.db"
        return lambda: AsyncSQLiteEventStore.open(path)
    assert kind == "postgres"
    dsn = request.getfixturevalue("postgres_dsn")
    schema = new_schema_name()

    async def open_postgres() -> AsyncEventStore:
        from eskit.aio import AsyncPostgresEventStore

        return await AsyncPostgresEventStore.open(dsn, schema=schema)

    return open_postgres


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Opens a fresh, empty async store of each kind (awaited inside the test's loop)."""
    return store_opener(request.param, tmp_path, request)


@pytest.fixture(params=["sqlite", "postgres"])
def open_durable_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """The stores that do real I/O, where tasks truly interleave with the database."""
    return store_opener(request.param, tmp_path, request)
