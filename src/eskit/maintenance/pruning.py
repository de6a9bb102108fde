"""Snapshot pruning as a maintenance pass: :func:`prune_snapshots` and its async twin.

Both take either a snapshot store or the event store it sits beside (then the
matching snapshot store is opened for the pass: SQLite and PostgreSQL keep their
snapshots in the same database). The pass itself is
:meth:`eskit.SnapshotStore.prune`: per (aggregate, type), in key order,
``batch_size`` aggregates per transaction, safe beside live saves and loads and
safe to interrupt (rerun to finish).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from eskit.errors import InvalidInputError
from eskit.snapshots import (
    DEFAULT_KEEP,
    DEFAULT_PRUNE_BATCH,
    PruneProgress,
    SnapshotStore,
    check_batch_size,
    check_keep,
)
from eskit.stores.base import EventStore
from eskit.stores.sqlite import SQLiteEventStore

if TYPE_CHECKING:
    from eskit.aio.snapshots import AsyncSnapshotStore
    from eskit.aio.store import AsyncEventStore

__all__ = [
    "prune_snapshots", "prune_snapshots_async", "snapshot_store_beside",
    "snapshot_store_beside_async",
]

Progress = Callable[[PruneProgress], object]


def snapshot_store_beside(store: EventStore) -> SnapshotStore:
    """The snapshot store in ``store``'s own database (SQLite or PostgreSQL).

    :class:`~eskit.InvalidInputError` for a store that keeps no snapshots of
    its own (in memory, snapshots live in an :class:`~eskit.InMemorySnapshotStore`
    object: pass that instead).
    """
    if isinstance(store, SQLiteEventStore):
        from eskit.stores.sqlite_snapshots import SQLiteSnapshotStore

        return SQLiteSnapshotStore(store)
    loaded = sys.modules.get("eskit.stores.postgres")
    if loaded is not None and isinstance(store, loaded.PostgresEventStore):
        from eskit.stores.postgres_snapshots import PostgresSnapshotStore

        return PostgresSnapshotStore(store)
    raise InvalidInputError(
        f"a {type(store).__name__} keeps no snapshots of its own: pass its snapshot store"
    )


def prune_snapshots(
    store: SnapshotStore | EventStore, keep: int = DEFAULT_KEEP, *,
    batch_size: int = DEFAULT_PRUNE_BATCH, progress: Progress | None = None,
) -> int:
    """Keep each aggregate's ``keep`` newest snapshots, delete the rest; return how many.

    ``keep=0`` deletes every snapshot (loading then replays the events). Bad
    arguments raise :class:`~eskit.InvalidInputError` before any I/O.
    """
    keep = check_keep(keep)
    batch_size = check_batch_size(batch_size)
    if isinstance(store, SnapshotStore):
        return store.prune(keep, batch_size=batch_size, progress=progress)
    if not isinstance(store, EventStore):
        raise InvalidInputError(
            f"prune_snapshots needs a SnapshotStore or an EventStore, got {type(store).__name__}"
        )
    snapshots = snapshot_store_beside(store)
    try:
        return snapshots.prune(keep, batch_size=batch_size, progress=progress)
    finally:
        snapshots.close()


async def snapshot_store_beside_async(store: AsyncEventStore) -> AsyncSnapshotStore:
    """:func:`snapshot_store_beside` for asyncio stores (SQLite or PostgreSQL), its
    table checked without blocking the loop."""
    from eskit.aio.snapshots import AsyncSQLiteSnapshotStore
    from eskit.aio.sqlite import AsyncSQLiteEventStore

    if isinstance(store, AsyncSQLiteEventStore):
        return await AsyncSQLiteSnapshotStore.open(store)
    loaded = sys.modules.get("eskit.aio.postgres")
    if loaded is not None and isinstance(store, loaded.AsyncPostgresEventStore):
        from eskit.aio.postgres_snapshots import AsyncPostgresSnapshotStore

        return await AsyncPostgresSnapshotStore.open(store)
    raise InvalidInputError(
        f"a {type(store).__name__} keeps no snapshots of its own: pass its snapshot store"
    )


async def prune_snapshots_async(
    store: AsyncSnapshotStore | AsyncEventStore, keep: int = DEFAULT_KEEP, *,
    batch_size: int = DEFAULT_PRUNE_BATCH, progress: Progress | None = None,
) -> int:
    """:func:`prune_snapshots` for asyncio stores: the same pass, awaited."""
    from eskit.aio.snapshots import AsyncSnapshotStore

    keep = check_keep(keep)
    batch_size = check_batch_size(batch_size)
    if isinstance(store, AsyncSnapshotStore):
        return await store.prune(keep, batch_size=batch_size, progress=progress)
    snapshots = await snapshot_store_beside_async(store)
    try:
        return await snapshots.prune(keep, batch_size=batch_size, progress=progress)
    finally:
        await snapshots.close()
