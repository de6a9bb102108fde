"""The async snapshot stores pass the ONE snapshot contract suite, through sync facades.

The event store goes through :class:`SyncFacade` (see ``test_async_contract``);
the snapshot store through :class:`SyncSnapshotFacade`, which submits each call's
coroutine to the same loop thread and adds no logic of its own: bad input must
raise from the async store's own checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import Snapshot, SnapshotStore, StreamId
from eskit.aio import (
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncInMemorySnapshotStore,
    AsyncSnapshotStore,
    AsyncSQLiteEventStore,
    AsyncSQLiteSnapshotStore,
)
from eskit.testing import SnapshotStoreContract
from eskit.testing.snapshot_contract import ReadThrough, Stores
from tests.aio.test_async_contract import LoopThread, SyncFacade
from tests.conftest import new_schema_name


class SyncSnapshotFacade(SnapshotStore):
    """A sync SnapshotStore that forwards each public method to an async one."""

    def __init__(self, loop: LoopThread, inner: AsyncSnapshotStore) -> None:
        self._loop = loop
        self.inner = inner

    def save(self, snapshot: Snapshot) -> None:
        self._loop.run(self.inner.save(snapshot))

    def prune(self, keep: int = 3, **options: Any) -> int:  # type: ignore[override]
        return self._loop.run(self.inner.prune(keep, **options))

    def latest(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None
    ) -> Snapshot | None:
        return self._loop.run(self.inner.latest(aggregate_id, aggregate_type, max_version))

    def latest_with_tail(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None, *,
        events: Any,
    ) -> Any:
        if isinstance(events, ReadThrough):  # another store object: read through the same one
            inner: AsyncEventStore = AsyncReadThrough(events)
        else:
            inner = events.inner
        return self._loop.run(self.inner.latest_with_tail(
            aggregate_id, aggregate_type, max_version, events=inner
        ))

    def close(self) -> None:
        self._loop.run(self.inner.close())

    def _save(self, stream: str, snapshot: Snapshot) -> None:  # pragma: no cover - unused
        raise NotImplementedError

    def _latest(self, *args: Any) -> Snapshot | None:  # pragma: no cover - unused
        raise NotImplementedError


class AsyncReadThrough(AsyncEventStore):
    """The async side of :class:`ReadThrough`: forwards read_stream to the facade's store."""

    def __init__(self, through: ReadThrough) -> None:
        self.through = through
        self.target: AsyncEventStore = through.inner.inner  # type: ignore[attr-defined]

    async def read_stream(self, stream_id: Any, from_version: int = 0,  # type: ignore[override]
                          to_version: int | None = None, **options: Any) -> Any:
        self.through.reads.append((from_version, to_version))
        return await self.target.read_stream(stream_id, from_version, to_version, **options)

    async def _append(self, *args: Any) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    async def _read_stream(self, *args: Any) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    async def _read_all_page(self, *args: Any) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    async def _head_version(self, *args: Any) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    async def _head_position(self) -> Any:  # pragma: no cover - unused
        raise NotImplementedError

    async def _list_streams(self) -> Any:  # pragma: no cover - unused
        raise NotImplementedError


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


OpenBoth = Callable[[], Awaitable[tuple[AsyncEventStore, AsyncSnapshotStore]]]


class AsyncSnapshotContract(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    def _loop(self, loop_thread: LoopThread) -> None:
        self.loop = loop_thread

    def open_both(self, tmp_path: Path, keep: int | None) -> OpenBoth:
        raise NotImplementedError

    def create_stores(self, tmp_path: Path, *, keep: int | None = None) -> Stores:
        opened: list[AsyncSnapshotStore] = []
        tmp_path.mkdir(parents=True, exist_ok=True)
        open_both = self.open_both(tmp_path, keep)

        async def open_events() -> AsyncEventStore:
            events, snapshots = await open_both()
            opened.append(snapshots)
            return events

        events = SyncFacade(self.loop, open_events)
        return events, SyncSnapshotFacade(self.loop, opened[0])


class TestAsyncInMemorySnapshotStore(AsyncSnapshotContract):
    def open_both(self, tmp_path: Path, keep: int | None) -> OpenBoth:
        async def open_both() -> tuple[AsyncEventStore, AsyncSnapshotStore]:
            events = AsyncInMemoryEventStore()
            return events, AsyncInMemorySnapshotStore(events, keep=keep)

        return open_both


class TestAsyncSQLiteSnapshotStore(AsyncSnapshotContract):
    def open_both(self, tmp_path: Path, keep: int | None) -> OpenBoth:
        async def open_both() -> tuple[AsyncEventStore, AsyncSnapshotStore]:
            events = await AsyncSQLiteEventStore.open(tmp_path / "events.db")
            try:
                return events, await AsyncSQLiteSnapshotStore.open(events, keep=keep)
            except BaseException:
                await events.close()
                raise

        return open_both


class TestAsyncPostgresSnapshotStore(AsyncSnapshotContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def open_both(self, tmp_path: Path, keep: int | None) -> OpenBoth:
        async def open_both() -> tuple[AsyncEventStore, AsyncSnapshotStore]:
            from eskit.aio import AsyncPostgresEventStore, AsyncPostgresSnapshotStore

            events = await AsyncPostgresEventStore.open(
                self.dsn, schema=new_schema_name(), pool_size=4
            )
            try:
                return events, await AsyncPostgresSnapshotStore.open(events, keep=keep)
            except BaseException:
                await events.close()
                raise

        return open_both
