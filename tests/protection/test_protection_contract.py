"""The data-protection and envelope contracts, run for every store (memory, SQLite,
PostgreSQL; sync and async)."""

from pathlib import Path
from typing import Any

import pytest

from eskit import EventStore, InMemoryEventStore, NewEvent, SQLiteEventStore
from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from eskit.events import Event
from eskit.protection import Erasure, LocalKeyProvider, protect
from eskit.protection import aio as protection_aio
from eskit.protection.envelope import DataKey
from eskit.testing.envelope_contract import EnvelopeContract
from eskit.testing.protection_contract import (
    PayloadEncryptionContract,
    ProtectionContract,
    SyncProtected,
)
from tests.aio.test_async_contract import LoopThread, SyncFacade
from tests.conftest import new_schema_name


class SyncStores(ProtectionContract, PayloadEncryptionContract, EnvelopeContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError

    def open_protected(self, tmp_path: Path, provider: LocalKeyProvider, **options: Any) -> Any:
        return SyncProtected(protect(self.create_store(tmp_path), provider, **options))


class TestMemory(SyncStores):
    def create_store(self, tmp_path: Path) -> EventStore:
        return InMemoryEventStore()


class TestSQLite(SyncStores):
    def create_store(self, tmp_path: Path) -> EventStore:
        tmp_path.mkdir(parents=True, exist_ok=True)
        return SQLiteEventStore(tmp_path / "events.db")


class TestPostgres(SyncStores):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(self.dsn, schema=new_schema_name(), pool_size=2)


# -- asyncio: the async protected store driven through a sync facade -------------------------


class AsyncProtected:
    def __init__(self, loop: LoopThread, facade: SyncFacade) -> None:
        self._loop = loop
        self.store: EventStore = facade
        self._protected: protection_aio.AsyncProtectedEventStore = facade.inner  # type: ignore[assignment]

    def raw(self, stream_id: str) -> list[Event]:
        return self._loop.run(self._protected.inner.read_stream(stream_id))

    def export(self, subject: str) -> list[Event]:
        async def collect() -> list[Event]:
            return [e async for e in self._protected.export_subject(subject)]

        return self._loop.run(collect())

    def erase(self, subject: str, **options: Any) -> Erasure:
        return self._loop.run(self._protected.erase_subject(subject, **options))

    def rewrap(self, **options: Any) -> int:
        return self._loop.run(self._protected.rewrap(**options))

    def set_provider(self, provider: LocalKeyProvider) -> None:
        self._protected.provider = provider

    def append_stored(self, stream_id: str, events: list[NewEvent]) -> None:
        self._loop.run(self._protected.inner.append(stream_id, events))

    def data_key(self, subject: str) -> DataKey:
        return self._loop.run(self._protected._keys_for([subject]))[subject]

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module")
def loop_thread() -> Any:
    loop = LoopThread()
    yield loop
    loop.stop()


class AsyncStores(ProtectionContract, PayloadEncryptionContract, EnvelopeContract):
    @pytest.fixture(autouse=True)
    def _loop(self, loop_thread: LoopThread) -> None:
        self.loop = loop_thread

    async def open_inner(self, tmp_path: Path) -> AsyncEventStore:
        raise NotImplementedError

    def open_protected(self, tmp_path: Path, provider: LocalKeyProvider, **options: Any) -> Any:
        async def opened() -> AsyncEventStore:
            return await protection_aio.protect(await self.open_inner(tmp_path), provider,
                                                **options)

        return AsyncProtected(self.loop, SyncFacade(self.loop, opened))


class TestAsyncMemory(AsyncStores):
    async def open_inner(self, tmp_path: Path) -> AsyncEventStore:
        return AsyncInMemoryEventStore()


class TestAsyncSQLite(AsyncStores):
    async def open_inner(self, tmp_path: Path) -> AsyncEventStore:
        tmp_path.mkdir(parents=True, exist_ok=True)
        return await AsyncSQLiteEventStore.open(tmp_path / "events.db")


class TestAsyncPostgres(AsyncStores):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    async def open_inner(self, tmp_path: Path) -> AsyncEventStore:
        from eskit.aio import AsyncPostgresEventStore

        return await AsyncPostgresEventStore.open(self.dsn, schema=new_schema_name())

