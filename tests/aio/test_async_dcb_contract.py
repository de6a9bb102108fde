"""The async stores pass the DCB contract, through the sync facade of the store contract.

The facade forwards ``append(..., condition=...)`` and ``read_events`` to the async
store's own coroutines; the contract's race cases become concurrent tasks on one loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from eskit import ANY, AppendResult, EventStore, Query, ReadResult, StreamId
from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from eskit.testing.dcb_contract import DCBContract
from tests.aio.test_async_contract import LoopThread, SyncFacade, loop_thread, shared_pool
from tests.conftest import new_schema_name

__all__ = ["loop_thread", "shared_pool"]  # fixtures, imported for pytest to find


class DCBFacade(SyncFacade):
    def __init__(
        self, loop: LoopThread, open_store: Callable[[], Awaitable[AsyncEventStore]]
    ) -> None:
        super().__init__(loop, open_store)

    def append(  # type: ignore[override]
        self, stream_id: StreamId, events: Sequence[Any], expected_version: Any = ANY,
        *, condition: Any = None,
    ) -> AppendResult:
        return self._loop.run(
            self.inner.append(stream_id, events, expected_version, condition=condition)
        )

    def read_events(self, query: Query, after: int = 0, limit: int | None = None) -> ReadResult:
        return self._loop.run(self.inner.read_events(query, after, limit))

    def delete_stream(self, stream_id: StreamId, expected_version: Any = ANY, *,
                      hard: bool = False) -> int:
        return self._loop.run(self.inner.delete_stream(stream_id, expected_version, hard=hard))

    def restore_stream(self, stream_id: StreamId) -> bool:
        return self._loop.run(self.inner.restore_stream(stream_id))


class AsyncDCB(DCBContract):
    @pytest.fixture(autouse=True)
    def _loop(self, loop_thread: LoopThread) -> None:
        self.loop = loop_thread


class TestAsyncInMemoryDCB(AsyncDCB):
    def create_store(self, tmp_path: Path) -> EventStore:
        async def open_store() -> AsyncEventStore:
            return AsyncInMemoryEventStore()

        return DCBFacade(self.loop, open_store)


class TestAsyncSQLiteFileDCB(AsyncDCB):
    def create_store(self, tmp_path: Path) -> EventStore:
        return DCBFacade(self.loop, lambda: AsyncSQLiteEventStore.open(tmp_path / "events.db"))


class TestAsyncPostgresDCB(AsyncDCB):
    @pytest.fixture(autouse=True)
    def _pool(self, shared_pool: Any) -> None:
        self.pool = shared_pool

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.aio import AsyncPostgresEventStore

        return DCBFacade(
            self.loop,
            lambda: AsyncPostgresEventStore.open(pool=self.pool, schema=new_schema_name()),
        )
