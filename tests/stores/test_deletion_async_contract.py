"""The deletion contract on the async stores, through the async contract's sync facade."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import ANY, Event, EventStore, OnDemand, StreamId
from eskit.aio import (
    AsyncInMemoryEventStore,
    AsyncInMemorySnapshotStore,
    AsyncSQLiteEventStore,
    AsyncSQLiteSnapshotStore,
)
from eskit.testing.deletion_contract import DeletionContract, Loader, Taker, Tally
from tests.aio.test_async_contract import LoopThread, SyncFacade
from tests.conftest import new_schema_name


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


@pytest.fixture(scope="module")
def shared_pool(loop_thread: LoopThread, postgres_dsn: str) -> Iterator[Any]:
    """An autocommit pool that every test's store borrows (each in its own new schema)."""
    from psycopg_pool import AsyncConnectionPool

    async def open_pool() -> AsyncConnectionPool[Any]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True, timeout=10)
        return pool

    pool = loop_thread.run(open_pool())
    yield pool
    loop_thread.run(pool.close())


class _DeletingFacade(SyncFacade):
    """The facade plus the two deletion methods, forwarded unchanged."""

    def delete_stream(self, stream_id: StreamId, expected_version: Any = ANY, *,
                      hard: Any = False) -> int:
        return self._loop.run(self.inner.delete_stream(stream_id, expected_version, hard=hard))

    def restore_stream(self, stream_id: StreamId) -> bool:
        return self._loop.run(self.inner.restore_stream(stream_id))

    def truncate_stream(self, stream_id: StreamId, before_version: Any, *,
                        expected_version: Any = ANY, force: Any = False) -> int:
        return self._loop.run(self.inner.truncate_stream(
            stream_id, before_version, expected_version=expected_version, force=force))


class _AsyncLoader:
    """An AsyncRepository with the async snapshot store beside the store, on the loop."""

    def __init__(self, loop: LoopThread, store: _DeletingFacade) -> None:
        from eskit.aio import (
            AsyncPostgresEventStore,
            AsyncPostgresSnapshotStore,
            AsyncRepository,
            AsyncSnapshotStore,
        )

        inner = store.inner
        snapshots: AsyncSnapshotStore
        if isinstance(inner, AsyncInMemoryEventStore):
            snapshots = AsyncInMemorySnapshotStore(inner)
        elif isinstance(inner, AsyncSQLiteEventStore):
            snapshots = AsyncSQLiteSnapshotStore(inner)
        else:
            assert isinstance(inner, AsyncPostgresEventStore)
            snapshots = AsyncPostgresSnapshotStore(inner)
        self._loop = loop
        self._repository = AsyncRepository(inner, snapshots=snapshots,
                                           snapshot_policy=OnDemand())

    def get(self, aggregate_id: Any, aggregate_class: type[Tally]) -> Tally:
        return self._loop.run(self._repository.get(aggregate_id, aggregate_class))

    def take_snapshot(self, aggregate: Tally) -> Any:
        return self._loop.run(self._repository.take_snapshot(aggregate))


class _AsyncTaker:
    """An AsyncSubscription, one ``__anext__`` per event, on the loop thread."""

    def __init__(self, loop: LoopThread, store: _DeletingFacade) -> None:
        self._loop = loop
        self._sub = store.inner.subscribe(poll_interval=0.01, page_size=1)
        self._events: AsyncIterator[Event] = aiter(self._sub)

    def take(self, count: int) -> list[Event]:
        async def take() -> list[Event]:
            return [await anext(self._events) for _ in range(count)]

        return self._loop.run(take())

    def stop(self) -> None:
        self._sub.stop()


class _AsyncHooks(DeletionContract):
    @pytest.fixture(autouse=True)
    def _loop(self, loop_thread: LoopThread) -> None:
        self.loop = loop_thread

    def subscription(self, store: EventStore) -> Taker:
        assert isinstance(store, _DeletingFacade)
        return _AsyncTaker(self.loop, store)

    def repository(self, store: EventStore) -> Loader:
        assert isinstance(store, _DeletingFacade)
        return _AsyncLoader(self.loop, store)


class TestAsyncInMemoryDeletion(_AsyncHooks):
    def create_store(self, tmp_path: Path) -> EventStore:
        async def open_store() -> AsyncInMemoryEventStore:
            return AsyncInMemoryEventStore()

        return _DeletingFacade(self.loop, open_store)


class TestAsyncSQLiteDeletion(_AsyncHooks):
    def create_store(self, tmp_path: Path) -> EventStore:
        return _DeletingFacade(
            self.loop, lambda: AsyncSQLiteEventStore.open(tmp_path / "events.db")
        )


class TestAsyncPostgresDeletion(_AsyncHooks):
    @pytest.fixture(autouse=True)
    def _pool(self, shared_pool: Any) -> None:
        self.pool = shared_pool

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.aio import AsyncPostgresEventStore

        return _DeletingFacade(
            self.loop,
            lambda: AsyncPostgresEventStore.open(pool=self.pool, schema=new_schema_name()),
        )
