"""The async stores pass the ONE contract suite, through a sync facade.

:class:`SyncFacade` is an :class:`eskit.EventStore` whose every public method
submits the matching coroutine of an async store to an event loop running in a
background thread and waits for the result. It adds no logic of its own, so
each contract test checks the async store's behaviour, not the facade's: bad
input must raise from the async store's own checks, ``read_all`` stays lazy
(one ``__anext__`` per ``next``), and threads of the contract's race tests
become concurrent tasks on the one loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eskit import ANY, AppendResult, Event, EventStore, StreamId, StreamInfo
from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from eskit.testing import EventStoreContract
from tests.conftest import new_schema_name

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it; safe to call from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncFacade(EventStore):
    """A sync EventStore that forwards each public method to an async store."""

    def __init__(
        self, loop: LoopThread, open_store: Callable[[], Awaitable[AsyncEventStore]]
    ) -> None:
        self._loop = loop
        self._closed = False

        async def opened() -> AsyncEventStore:
            return await open_store()

        self.inner = loop.run(opened())
        self.registry = self.inner.registry
        self.max_event_bytes = self.inner.max_event_bytes

    def append(
        self, stream_id: StreamId, events: Sequence[Any], expected_version: Any = ANY
    ) -> AppendResult:
        return self._loop.run(self.inner.append(stream_id, events, expected_version))

    def append_many(self, appends: Sequence[Any], *, condition: Any = None
                    ) -> list[AppendResult]:
        return self._loop.run(self.inner.append_many(appends, condition=condition))

    def read_stream(
        self, stream_id: StreamId, from_version: int = 0, to_version: int | None = None, *,
        backwards: bool = False, limit: int | None = None,
    ) -> list[Event]:
        return self._loop.run(self.inner.read_stream(
            stream_id, from_version, to_version, backwards=backwards, limit=limit
        ))

    def read_all(
        self, from_position: int = 0, limit: int | None = None, *, on_undecodable="raise",
        event_types: Any = None, stream_prefixes: Any = None,
    ) -> Iterator[Event]:
        # Called here, not in the generator: bad arguments must raise at the call.
        return self._iterate(self.inner.read_all(
            from_position, limit, on_undecodable=on_undecodable, event_types=event_types,
            stream_prefixes=stream_prefixes,
        ))

    def _filtered_page(self, after: int, limit: int, wanted: Any, tolerant: bool) -> Any:
        # What a partitioned (async) projection runner reads: the contract's partition cases.
        return self._loop.run(self.inner._filtered_page(after, limit, wanted, tolerant))

    def iter_stream(
        self, stream_id: StreamId, from_version: int = 0, to_version: int | None = None, *,
        backwards: bool = False, limit: int | None = None,
    ) -> Iterator[Event]:
        return self._iterate(self.inner.iter_stream(
            stream_id, from_version, to_version, backwards=backwards, limit=limit
        ))

    def _iterate(self, events: AsyncIterator[Event]) -> Iterator[Event]:
        async def step() -> tuple[bool, Event | None]:
            try:
                return True, await anext(events)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, event = self._loop.run(step())
                if not more:
                    return
                assert event is not None
                yield event
        finally:
            # Do not wait: a generator dropped early may be finalised on the loop's thread.
            aclose = getattr(events, "aclose", None)
            if aclose is not None and not self._closed:
                asyncio.run_coroutine_threadsafe(aclose(), self._loop.loop)

    def head_version(self, stream_id: StreamId) -> int:
        return self._loop.run(self.inner.head_version(stream_id))

    def head_position(self) -> int:
        return self._loop.run(self.inner.head_position())

    def wait_for(self, position: int, timeout: float = 10.0) -> bool:
        return self._loop.run(self.inner.wait_for(position, timeout))

    def version_at(self, stream_id: StreamId, as_of: Any) -> int:
        return self._loop.run(self.inner.version_at(stream_id, as_of))

    def list_streams(self) -> list[StreamInfo]:
        return self._loop.run(self.inner.list_streams())

    def locate_event(self, event_id: Any) -> tuple[StreamId, int] | None:
        return self._loop.run(self.inner.locate_event(event_id))

    def list_streams_page(
        self, prefix: str = "", after: StreamId | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        return self._loop.run(self.inner.list_streams_page(prefix, after, limit))

    def save_events(
        self, aggregate_id: StreamId, events: Sequence[Any], expected_version: int
    ) -> AppendResult:
        return self._loop.run(self.inner.save_events(aggregate_id, events, expected_version))

    def get_events(self, aggregate_id: StreamId, from_version: int = 0) -> list[Event]:
        return self._loop.run(self.inner.get_events(aggregate_id, from_version))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.run(self.inner.close())


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """One loop for the module: starting a thread and a pool per test would dominate."""
    loop = LoopThread()
    yield loop
    loop.stop()


class AsyncContract(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _loop(self, loop_thread: LoopThread) -> None:
        self.loop = loop_thread


class TestAsyncInMemoryEventStore(AsyncContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        async def open_store() -> AsyncEventStore:
            return AsyncInMemoryEventStore()

        return SyncFacade(self.loop, open_store)


class TestAsyncSQLiteFileEventStore(AsyncContract):
    def create_store(self, tmp_path: Path) -> EventStore:
        return SyncFacade(self.loop, lambda: AsyncSQLiteEventStore.open(tmp_path / "events.db"))


@pytest.fixture(scope="module")
def shared_pool(loop_thread: LoopThread, postgres_dsn: str) -> Iterator[Any]:
    """An autocommit pool that every test's store borrows (each in its own new schema)."""
    from psycopg_pool import AsyncConnectionPool

    async def open_pool() -> AsyncConnectionPool[Any]:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            postgres_dsn, min_size=2, max_size=10, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True, timeout=10)
        return pool

    pool = loop_thread.run(open_pool())
    yield pool
    loop_thread.run(pool.close())


class TestAsyncPostgresEventStore(AsyncContract):
    """Stores borrow one pool; eskit must then leave the pool open on close."""

    @pytest.fixture(autouse=True)
    def _pool(self, shared_pool: Any) -> None:
        self.pool = shared_pool

    def create_store(self, tmp_path: Path) -> EventStore:
        from eskit.aio import AsyncPostgresEventStore

        return SyncFacade(
            self.loop,
            lambda: AsyncPostgresEventStore.open(pool=self.pool, schema=new_schema_name()),
        )
