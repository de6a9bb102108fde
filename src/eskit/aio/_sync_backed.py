"""Async stores that delegate to a sync store (internal).

The in-memory and SQLite stores already do everything a store does; their
async faces only decide how a call is run from a coroutine: directly when it
does no I/O (memory), in a worker thread when it blocks (SQLite). Each public
method calls the sync store's public method, so validation, encoding, conflict
resolution and whatever else the sync store does on an append (waking its
subscribers, for instance) is the very same code. Only ``read_all`` and
``iter_stream`` page here, through the sync store's ``_read_all_page`` and
``_read_stream``, so that each page is one call rather than one per event.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic, Self, TypeVar
from uuid import UUID

from eskit.aio.store import AsyncEventStore
from eskit.aio.subscription import AsyncWaiter, LocalAsyncWaiter
from eskit.dcb import AppendCondition, Query, ReadResult
from eskit.events import Event, StreamId
from eskit.stores.base import EventStore
from eskit.stores.filtered import ReadFilter
from eskit.stores.model import (
    ANY,
    AppendInput,
    AppendResult,
    Expected,
    PendingEvent,
    StreamAppend,
    StreamInfo,
)
from eskit.stores.multi import PreparedAppend

__all__: list[str] = []

S = TypeVar("S", bound=EventStore)
T = TypeVar("T")


class SyncBackedStore(AsyncEventStore, Generic[S]):
    """An async store over a sync one; subclasses say how a sync call is run."""

    def __init__(self, sync_store: S) -> None:
        self.sync_store: S = sync_store
        """The wrapped sync store: the same events, for sync code such as the CLI."""
        self.registry = sync_store.registry
        self.max_event_bytes = sync_store.max_event_bytes

    @classmethod
    def from_sync(cls, sync_store: S) -> Self:
        """An async store over an open ``sync_store``: both see the same events.

        Closing either closes both.
        """
        self = cls.__new__(cls)
        SyncBackedStore.__init__(self, sync_store)
        return self

    @abstractmethod
    async def _call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run one call of the sync store."""

    # -- the public API: the sync store's own methods -----------------------------------

    async def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        return await self._call(
            self.sync_store.append, stream_id, events, expected_version, condition=condition
        )

    async def read_events(
        self, query: Query, after: int = 0, limit: int | None = None
    ) -> ReadResult:
        return await self._call(self.sync_store.read_events, query, after, limit)

    async def append_many(
        self, appends: Sequence[StreamAppend], *, condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        return await self._call(self.sync_store.append_many, appends, condition=condition)

    def _accepts_prepared(self) -> bool:
        return (type(self).append is SyncBackedStore.append
                and type(self).append_many is SyncBackedStore.append_many
                and self.sync_store._accepts_prepared())

    async def _append_prepared(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition | None,
    ) -> AppendResult:
        return await self._call(
            self.sync_store._append_prepared, stream_id, stream, expected, batch, condition
        )

    async def _append_many_prepared(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        return await self._call(self.sync_store._append_many_prepared, prepared, condition)

    async def read_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Event]:
        return await self._call(
            self.sync_store.read_stream, stream_id, from_version, to_version,
            backwards=backwards, limit=limit,
        )

    async def head_version(self, stream_id: StreamId) -> int:
        return await self._call(self.sync_store.head_version, stream_id)

    async def version_at(self, stream_id: StreamId, as_of: datetime) -> int:
        return await self._call(self.sync_store.version_at, stream_id, as_of)

    async def head_position(self) -> int:
        return await self._call(self.sync_store.head_position)

    async def list_streams(self) -> list[StreamInfo]:
        return await self._call(self.sync_store.list_streams)

    async def locate_event(self, event_id: UUID | str) -> tuple[StreamId, int] | None:
        return await self._call(self.sync_store.locate_event, event_id)

    async def list_streams_page(
        self, prefix: str = "", after: StreamId | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        return await self._call(self.sync_store.list_streams_page, prefix, after, limit)

    async def delete_stream(
        self, stream_id: StreamId, expected_version: Expected = ANY, *, hard: bool = False
    ) -> int:
        return await self._call(self.sync_store.delete_stream, stream_id, expected_version,
                                hard=hard)

    async def restore_stream(self, stream_id: StreamId) -> bool:
        return await self._call(self.sync_store.restore_stream, stream_id)

    async def truncate_stream(
        self, stream_id: StreamId, before_version: int, *, expected_version: Expected = ANY,
        force: bool = False,
    ) -> int:
        return await self._call(self.sync_store.truncate_stream, stream_id, before_version,
                                expected_version=expected_version, force=force)

    async def close(self) -> None:
        await self._call(self.sync_store.close)

    async def _new_waiter(self) -> AsyncWaiter:
        # Appends through the sync store (this store's own, or sync code's) wake it.
        return LocalAsyncWaiter(self.sync_store)

    # -- the primitives (read_all pages through _read_all_page) -------------------------

    async def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        return await self._call(self.sync_store._append, stream_id, stream, expected, batch)

    async def _append_many(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        if condition is None:
            return await self._call(self.sync_store._append_many, prepared)
        return await self._call(self.sync_store._append_many, prepared, condition)

    async def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        return await self._call(
            self.sync_store._read_stream, stream_id, stream, from_version, to_version,
            backwards, limit,
        )

    async def _append_if(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition,
    ) -> AppendResult:
        return await self._call(
            self.sync_store._append_if, stream_id, stream, expected, batch, condition
        )

    async def _read_events(
        self, query: Query, after: int, limit: int | None
    ) -> tuple[list[Event], int]:
        return await self._call(self.sync_store._read_events, query, after, limit)

    async def _read_all_page(self, after: int, limit: int) -> list[Event]:
        return await self._call(self.sync_store._read_all_page, after, limit)

    async def _read_filtered_page(
        self, after: int, upto: int, limit: int, wanted: ReadFilter
    ) -> list[Event]:
        return await self._call(self.sync_store._read_filtered_page, after, upto, limit, wanted)

    async def _head_version(self, stream: str) -> int:
        return await self._call(self.sync_store._head_version, stream)

    async def _version_at(self, stream: str, as_of: datetime) -> int:
        return await self._call(self.sync_store.version_at, stream, as_of)

    async def _head_position(self) -> int:
        return await self._call(self.sync_store._head_position)

    async def _list_streams(self) -> list[StreamInfo]:
        return await self._call(self.sync_store._list_streams)
