"""Snapshots in the schema of an :class:`~eskit.aio.AsyncPostgresEventStore`.

The async twin of :class:`eskit.stores.postgres_snapshots.PostgresSnapshotStore`:
the same statements (:class:`~eskit.stores.postgres_snapshots.SnapshotStatements`,
whose insert checks the event it follows is stored, in the same statement), on
the async store's pool. psycopg errors become :class:`~eskit.StoreError`.
"""

from __future__ import annotations

from typing import Self

from eskit.aio.postgres import AsyncPostgresEventStore
from eskit.aio.snapshots import AsyncSnapshotStore
from eskit.errors import StoreError
from eskit.events import Event, StreamId
from eskit.snapshots import AggregateKey, Snapshot, check_keep, no_event_there
from eskit.stores.postgres_snapshots import (
    SnapshotStatements,
    keys_query,
    latest_params,
    latest_with_tail_params,
    missing_table,
    prune_batch_statement,
    save_keeping_params,
    save_params,
    snapshot_from,
    split_rows,
    tail_statement,
)

__all__ = ["AsyncPostgresSnapshotStore"]


class AsyncPostgresSnapshotStore(AsyncSnapshotStore):
    """Snapshots in the same PostgreSQL schema as ``event_store``'s events, for asyncio.

    ``__init__`` does no I/O; ``await AsyncPostgresSnapshotStore.open(event_store)``
    also checks that the schema has the snapshot table (a schema created by an
    older eskit needs ``setup()`` or ``eskit migrate`` first). ``keep=N``: each
    save also deletes, in its transaction, that aggregate's snapshots below its
    N newest.
    """

    event_store: AsyncPostgresEventStore

    def __init__(self, event_store: AsyncPostgresEventStore, *, keep: int | None = None
                 ) -> None:
        if not isinstance(event_store, AsyncPostgresEventStore):
            raise StoreError(
                "AsyncPostgresSnapshotStore needs an AsyncPostgresEventStore, "
                f"got {type(event_store).__name__}"
            )
        self.keep = None if keep is None else check_keep(keep, minimum=1)
        self.event_store = event_store
        self.sql = SnapshotStatements(event_store.schema)

    @classmethod
    async def open(cls, event_store: AsyncPostgresEventStore, *, keep: int | None = None
                   ) -> Self:
        """The snapshot store, after checking the schema has its table."""
        store = cls(event_store, keep=keep)
        row = await event_store._fetchone(store.sql.table_exists)
        if not row or row[0] is None:
            raise missing_table(event_store.schema)
        return store

    async def _save(self, stream: str, snapshot: Snapshot) -> None:
        async with self.event_store._connection() as conn:
            if self.keep is None:
                cursor = await conn.execute(self.sql.save, save_params(stream, snapshot))
                stored = cursor.rowcount == 1
            else:
                cursor = await conn.execute(
                    self.sql.save_keeping, save_keeping_params(stream, snapshot, self.keep))
                row = await cursor.fetchone()
                stored = bool(row and row[0])
        if not stored:
            raise no_event_there(snapshot)

    async def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]]:
        statement = tail_statement(self.sql, self.event_store.sql.version)
        # A read: retried on a fresh connection if this one dropped.
        rows = await self.event_store._fetchall(
            statement, latest_with_tail_params(stream, aggregate_type, max_version)
        )
        snapshot, events = split_rows(aggregate_id, aggregate_type, rows,
                                      tagged=statement is self.sql.latest_with_tail_tagged)
        # Exactly what read_stream returns: stored events pass the registry's rules.
        return snapshot, self.event_store.registry.upcast(events)

    async def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        row = await self.event_store._fetchone(
            self.sql.latest, latest_params(stream, aggregate_type, max_version)
        )
        return snapshot_from(aggregate_id, aggregate_type, row)

    async def _aggregates_after(self, after: AggregateKey | None, limit: int
                                ) -> list[AggregateKey]:
        rows = await self.event_store._fetchall(*keys_query(self.sql, after, limit))
        return [(stream, kind) for stream, kind in rows]

    async def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        async with self.event_store._connection() as conn:
            cursor = await conn.execute(*prune_batch_statement(self.sql, keys, keep))
            return cursor.rowcount

    async def _count_aggregates(self) -> int:
        row = await self.event_store._fetchone(self.sql.count_keys)
        return int(row[0])
