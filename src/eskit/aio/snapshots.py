"""Snapshot stores for asyncio: the same stores and guarantees, awaited.

:class:`AsyncSnapshotStore` is :class:`eskit.SnapshotStore` with ``async``
methods and the same contract (see :mod:`eskit.snapshots`): a snapshot is
stored only if the event it follows is stored, saving at the same version
replaces, ``latest`` returns the newest at or below a version. Validation is
the sync store's own functions, run before anything is awaited.

The in-memory and SQLite snapshot stores wrap the sync ones, like their event
stores do: memory is called directly, SQLite in a worker thread. The
PostgreSQL one is in :mod:`eskit.aio.postgres_snapshots` (it needs psycopg).
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Self, TypeVar

from eskit.aio.memory import AsyncInMemoryEventStore
from eskit.aio.sqlite import AsyncSQLiteEventStore
from eskit.aio.store import AsyncEventStore
from eskit.errors import StoreError
from eskit.events import Event, StreamId
from eskit.snapshots import (
    DEFAULT_KEEP,
    DEFAULT_PRUNE_BATCH,
    AggregateKey,
    PruneProgress,
    Snapshot,
    SnapshotStore,
    check_batch_size,
    check_keep,
    check_latest_args,
    check_snapshot,
)
from eskit.stores.memory_snapshots import InMemorySnapshotStore
from eskit.stores.sqlite_snapshots import SQLiteSnapshotStore

__all__ = ["AsyncInMemorySnapshotStore", "AsyncSQLiteSnapshotStore", "AsyncSnapshotStore"]

T = TypeVar("T")


class AsyncSnapshotStore(ABC):
    """Where snapshots are kept, for asyncio; mirrors :class:`eskit.SnapshotStore`."""

    event_store: AsyncEventStore | None = None
    """The async event store it sits beside."""
    keep: int | None = None
    """Snapshots per aggregate each save keeps (``None``: saves never prune)."""

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one at the same version.

        :class:`~eskit.InvalidInputError` (nothing stored) if the stream has no
        event with the snapshot's ``event_id`` at its ``version``.
        """
        stream, snapshot = check_snapshot(snapshot)
        await self._save(stream, snapshot)

    async def latest(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of the aggregate at or below ``max_version`` (``None``: any)."""
        stream = check_latest_args(aggregate_id, aggregate_type, max_version)
        return await self._latest(aggregate_id, stream, aggregate_type, max_version)

    async def latest_with_tail(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None, *,
        events: AsyncEventStore,
    ) -> tuple[Snapshot | None, list[Event]]:
        """The newest snapshot at or below ``max_version`` and the events to replay with it.

        Same contract as :meth:`eskit.SnapshotStore.latest_with_tail`: one
        round trip when ``events`` is the store this one sits beside and the
        backend can, two calls otherwise.
        """
        stream = check_latest_args(aggregate_id, aggregate_type, max_version)
        if events is self.event_store:
            found = await self._latest_with_tail(aggregate_id, stream, aggregate_type, max_version)
            if found is not None:
                return found
        snapshot = await self._latest(aggregate_id, stream, aggregate_type, max_version)
        start = 0 if snapshot is None else snapshot.version - 1
        return snapshot, await events.read_stream(aggregate_id, start, max_version)

    async def prune(
        self, keep: int = DEFAULT_KEEP, *, batch_size: int = DEFAULT_PRUNE_BATCH,
        progress: Callable[[PruneProgress], object] | None = None,
    ) -> int:
        """Delete every aggregate's snapshots below its ``keep`` newest; return how many.

        Same contract as :meth:`eskit.SnapshotStore.prune`.
        """
        keep = check_keep(keep)
        batch_size = check_batch_size(batch_size)
        total = await self._count_aggregates() if progress is not None else None
        after: AggregateKey | None = None
        seen = deleted = 0
        while keys := await self._aggregates_after(after, batch_size):
            deleted += await self._prune_aggregates(keys, keep)
            seen += len(keys)
            after = keys[-1]
            if progress is not None:
                progress(PruneProgress(seen, deleted, total))
        return deleted

    async def close(self) -> None:  # noqa: B027 - snapshot stores borrow the event store's connections
        """Release what the snapshot store holds (not the event store's connections)."""

    async def _aggregates_after(self, after: AggregateKey | None, limit: int
                                ) -> list[AggregateKey]:
        raise StoreError(f"{type(self).__name__} does not support pruning")

    async def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        raise StoreError(f"{type(self).__name__} does not support pruning")

    async def _count_aggregates(self) -> int | None:
        return None

    async def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]] | None:
        return None

    @abstractmethod
    async def _save(self, stream: str, snapshot: Snapshot) -> None: ...

    @abstractmethod
    async def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None: ...


class _SyncBackedSnapshotStore(AsyncSnapshotStore):
    """An async snapshot store over a sync one; subclasses say how a call is run."""

    sync_snapshots: SnapshotStore

    @abstractmethod
    async def _call(self, function: Callable[..., T], *args: object) -> T: ...

    async def save(self, snapshot: Snapshot) -> None:
        await self._call(self.sync_snapshots.save, snapshot)

    async def prune(
        self, keep: int = DEFAULT_KEEP, *, batch_size: int = DEFAULT_PRUNE_BATCH,
        progress: Callable[[PruneProgress], object] | None = None,
    ) -> int:
        """Same contract as :meth:`eskit.SnapshotStore.prune`, run by the sync store.

        For SQLite the pass runs in one worker thread, and so does ``progress``.
        """
        keep = check_keep(keep)
        batch_size = check_batch_size(batch_size)
        return await self._call(
            functools.partial(self.sync_snapshots.prune, keep, batch_size=batch_size,
                              progress=progress)
        )

    async def latest(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None
    ) -> Snapshot | None:
        return await self._call(self.sync_snapshots.latest, aggregate_id, aggregate_type,
                                max_version)

    async def _save(self, stream: str, snapshot: Snapshot) -> None:
        await self._call(self.sync_snapshots._save, stream, snapshot)

    async def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]]:
        # One call of the sync store: one thread hop for SQLite, not two.
        sync = self.sync_snapshots
        assert sync.event_store is not None
        return await self._call(
            functools.partial(sync.latest_with_tail, events=sync.event_store),
            aggregate_id, aggregate_type, max_version,
        )

    async def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        return await self._call(
            self.sync_snapshots._latest, aggregate_id, stream, aggregate_type, max_version
        )

    # The pruning primitives, for what walks the aggregates itself (an erasure, a
    # store wrapping this one); prune above runs the sync store's whole pass instead.

    async def _aggregates_after(self, after: AggregateKey | None, limit: int
                                ) -> list[AggregateKey]:
        return await self._call(self.sync_snapshots._aggregates_after, after, limit)

    async def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        return await self._call(self.sync_snapshots._prune_aggregates, keys, keep)

    async def _count_aggregates(self) -> int | None:
        return await self._call(self.sync_snapshots._count_aggregates)


class AsyncInMemorySnapshotStore(_SyncBackedSnapshotStore):
    """Snapshots in process memory beside an :class:`~eskit.aio.AsyncInMemoryEventStore`."""

    event_store: AsyncInMemoryEventStore

    def __init__(self, event_store: AsyncInMemoryEventStore, *, keep: int | None = None
                 ) -> None:
        if not isinstance(event_store, AsyncInMemoryEventStore):
            raise StoreError(
                "AsyncInMemorySnapshotStore needs an AsyncInMemoryEventStore, "
                f"got {type(event_store).__name__}"
            )
        self.event_store = event_store
        self.sync_snapshots = InMemorySnapshotStore(event_store.sync_store, keep=keep)
        self.keep = self.sync_snapshots.keep

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return function(*args)


class AsyncSQLiteSnapshotStore(_SyncBackedSnapshotStore):
    """Snapshots in the SQLite file of an :class:`~eskit.aio.AsyncSQLiteEventStore`.

    Each call runs in a worker thread. The constructor checks the table exists,
    blocking briefly; inside a running loop prefer ``await
    AsyncSQLiteSnapshotStore.open(event_store)``.
    """

    event_store: AsyncSQLiteEventStore

    def __init__(
        self, event_store: AsyncSQLiteEventStore, *, lock_timeout: float = 1.0,
        keep: int | None = None,
    ) -> None:
        if not isinstance(event_store, AsyncSQLiteEventStore):
            raise StoreError(
                "AsyncSQLiteSnapshotStore needs an AsyncSQLiteEventStore, "
                f"got {type(event_store).__name__}"
            )
        self.event_store = event_store
        self.sync_snapshots = SQLiteSnapshotStore(
            event_store.sync_store, lock_timeout=lock_timeout, keep=keep
        )
        self.keep = self.sync_snapshots.keep

    @classmethod
    async def open(
        cls, event_store: AsyncSQLiteEventStore, *, lock_timeout: float = 1.0,
        keep: int | None = None,
    ) -> Self:
        """The snapshot store, its table checked in a worker thread."""
        return await asyncio.to_thread(cls, event_store, lock_timeout=lock_timeout, keep=keep)

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(function, *args)
