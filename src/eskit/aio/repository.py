"""The repository for asyncio: loads aggregates by replaying events, saves new ones.

Same semantics as :class:`eskit.Repository`, awaited: ``get`` replays the
aggregate's stream (:class:`~eskit.AggregateNotFound` if it has no events),
``save`` appends its uncommitted events expecting the version it was loaded at
(:class:`~eskit.ConcurrencyError` if another writer got there first; the
events then stay uncommitted so the command can be retried on a fresh copy).
The optional cache is never stale: a cached aggregate is brought up to date
with the store on every ``get``, and callers always receive their own copy.

Aggregates are the ordinary :class:`eskit.Aggregate` classes: they do no I/O,
so one domain model serves the sync and the async front ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from eskit.aggregate import Aggregate
from eskit.aio.store import AsyncEventStore
from eskit.errors import AggregateNotFound
from eskit.events import StreamId
from eskit.repository import AggregateCache, pending_events, replay
from eskit.stores.base import AppendResult

__all__ = ["AsyncRepository"]

A = TypeVar("A", bound=Aggregate)


class AsyncRepository:
    """Saves and loads aggregates through an :class:`~eskit.aio.AsyncEventStore`.

    ``cache_size`` > 0 keeps that many recently used aggregates in memory; a
    cached aggregate is always brought up to date with the store before it is
    returned, so the cache saves replay time but never returns old state.
    """

    def __init__(self, event_store: AsyncEventStore, *, cache_size: int = 0) -> None:
        self._cache = AggregateCache(cache_size)
        self.event_store = event_store

    async def save(
        self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | None:
        """Append the aggregate's uncommitted events, expecting its loaded version.

        ``metadata`` (correlation id, user, ...) is added to every event; keys
        the event already has win. Returns ``None`` if there was nothing to
        save. Raises :class:`~eskit.ConcurrencyError` if another writer saved
        the aggregate first; the events then stay uncommitted.
        """
        events, expected = pending_events(aggregate, metadata)
        if not events:
            return None
        result = await self.event_store.append(aggregate.aggregate_id, events, expected)
        aggregate.mark_events_as_committed()
        self._cache.remember(aggregate)
        return result

    async def get(self, aggregate_id: StreamId, aggregate_class: type[A]) -> A:
        """Load an aggregate by replaying its events.

        Raises :class:`~eskit.AggregateNotFound` if its stream has no events.
        """
        aggregate = self._cache.get(aggregate_class, aggregate_id)
        if aggregate is None:
            events = await self.event_store.read_stream(aggregate_id)
            if not events:
                raise AggregateNotFound(aggregate_id, aggregate_class)
            aggregate = aggregate_class.create_blank(aggregate_id)
        else:
            events = await self.event_store.read_stream(aggregate_id, aggregate.version)
        replay(aggregate, events)
        self._cache.remember(aggregate)
        return aggregate
