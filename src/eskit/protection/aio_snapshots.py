"""Sealed snapshots for asyncio: :class:`AsyncSealedSnapshotStore`.

The twin of :class:`eskit.protection.snapshots.SealedSnapshotStore` over any
:class:`~eskit.aio.AsyncSnapshotStore`, with the same guarantees, because it
makes the same decisions (:func:`~eskit.protection.snapshots.seal_snapshot`,
:func:`~eskit.protection.snapshots.sealed_body`,
:func:`~eskit.protection.snapshots.open_snapshot`); only the key look-ups and the
wrapped store's calls are awaited. Each stream's snapshots are sealed under the
key of the reserved subject ``$snapshot:<stream>``, in the protected store's key
table, which :meth:`~eskit.protection.aio.AsyncProtectedEventStore.erase_subject`
deletes with the snapshots of the streams that held the subject's data.

Guaranteed: the state never reaches the wrapped store in clear; a sealed state is
bound to its stream, aggregate type, version, state version and event id (moved or
changed, it raises :class:`~eskit.protection.DecryptionError`); a snapshot whose key
was erased reads as no snapshot, so the aggregate loads from its events. A snapshot
sealed by one front end opens in the other (the same key table, the same envelope).

Not guaranteed: anything about snapshots saved in clear before the wrapper was used
(they are still read as they are: prune them, or erase the subject, to remove them).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from eskit.aio.snapshots import AsyncSnapshotStore
from eskit.aio.store import AsyncEventStore
from eskit.events import Event, StreamId
from eskit.protection.envelope import DataKey
from eskit.protection.snapshots import (
    open_snapshot,
    seal_snapshot,
    sealed_body,
    snapshot_subject,
)
from eskit.snapshots import AggregateKey, Snapshot

__all__ = ["AsyncSealedSnapshotStore"]


class AsyncKeySource(Protocol):
    """What the sealed store needs of the async protected store: its keys (fetched
    every time, as for events, so an erasure takes effect at once)."""

    async def _keys_for(self, subjects: Collection[str]) -> dict[str, DataKey]: ...

    async def _keys_by_id(self, key_ids: Collection[str]) -> dict[str, DataKey]: ...


class AsyncSealedSnapshotStore(AsyncSnapshotStore):
    """``inner`` with every saved state sealed under its stream's snapshot key.

    Made by :meth:`eskit.protection.aio.AsyncProtectedEventStore.sealed_snapshots`;
    pass it to the :class:`~eskit.aio.AsyncRepository` of the protected store.
    Pruning goes to ``inner``.
    """

    def __init__(self, protected: AsyncKeySource, inner: AsyncSnapshotStore) -> None:
        self.protected = protected
        self.inner = inner
        self.event_store = protected if isinstance(protected, AsyncEventStore) else None
        self.keep = inner.keep

    async def _save(self, stream: str, snapshot: Snapshot) -> None:
        subject = snapshot_subject(stream)
        keys = await self.protected._keys_for([subject])
        await self.inner.save(seal_snapshot(snapshot, keys[subject]))

    async def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        found = await self.inner.latest(aggregate_id, aggregate_type, max_version)
        if found is None or (envelope := sealed_body(found)) is None:
            return found
        body, key_id = envelope
        keys = await self.protected._keys_by_id([key_id])
        return open_snapshot(found, stream, body, keys.get(key_id))

    async def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]] | None:
        return None  # two calls: the snapshot here, the events through the protected store

    async def _aggregates_after(self, after: AggregateKey | None, limit: int
                                ) -> list[AggregateKey]:
        return await self.inner._aggregates_after(after, limit)

    async def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        return await self.inner._prune_aggregates(keys, keep)

    async def _count_aggregates(self) -> int | None:
        return await self.inner._count_aggregates()

    async def close(self) -> None:
        await self.inner.close()
