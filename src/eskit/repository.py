"""The repository: loads aggregates by replaying their events and saves new ones.

Unlike the seed tutorial's repository, this one never hands out stale state:
its optional cache keeps a private copy of each aggregate and, on every
``get``, reads the events stored after the cached version before returning a
fresh copy. Two repositories (or two processes) can therefore share a store.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from eskit.aggregate import Aggregate
from eskit.errors import AggregateNotFound, InvalidInputError
from eskit.events import Event, StreamId
from eskit.stores.base import AppendResult, EventStore, stream_key

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


# The pure parts of a repository, shared by the sync and async front ends: what to
# append at which expected version, how to replay, and a cache that hands out copies.


def pending_events(
    aggregate: Aggregate, metadata: Mapping[str, Any] | None
) -> tuple[list[Event], int]:
    """The aggregate's uncommitted events (``metadata`` merged in) and the version to expect.

    Keys an event already has in its metadata win over ``metadata``.
    """
    events = aggregate.get_uncommitted_events()
    if metadata:
        events = [replace(e, metadata={**metadata, **e.metadata}) for e in events]
    return events, aggregate.version - len(events)


def replay(aggregate: A, events: Iterable[Event]) -> A:
    for event in events:
        aggregate.apply_event(event)
    return aggregate


class AggregateCache:
    """A bounded LRU of private aggregate copies, safe for threads (internal).

    It never returns its own objects, only deep copies, so a caller changing an
    aggregate cannot change what the next caller gets.
    """

    def __init__(self, size: int) -> None:
        if type(size) is not int or size < 0:
            raise InvalidInputError("cache_size must be an int >= 0")
        self.size = size
        self._entries: OrderedDict[tuple[type, str], Aggregate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, aggregate_class: type[A], aggregate_id: StreamId) -> A | None:
        if not self.size:
            return None
        key = (aggregate_class, stream_key(aggregate_id))
        with self._lock:
            cached = self._entries.get(key)
            if cached is None:
                return None
            self._entries.move_to_end(key)
        return copy.deepcopy(cached)  # type: ignore[return-value]

    def remember(self, aggregate: Aggregate) -> None:
        if not self.size:
            return
        key = (type(aggregate), stream_key(aggregate.aggregate_id))
        snapshot = copy.deepcopy(aggregate)
        with self._lock:
            self._entries[key] = snapshot
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class Repository:
    """Saves and loads aggregates through an :class:`~eskit.EventStore`.

    ``cache_size`` > 0 keeps that many recently used aggregates in memory; a
    cached aggregate is always brought up to date with the store before it is
    returned, so the cache saves replay time but never returns old state.
    """

    def __init__(self, event_store: EventStore, *, cache_size: int = 0) -> None:
        self._cache = AggregateCache(cache_size)
        self.event_store = event_store

    def save(
        self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | None:
        """Append the aggregate's uncommitted events, expecting its loaded version.

        ``metadata`` (correlation id, user, ...) is added to every event; keys
        the event already has win. Returns ``None`` if there was nothing to
        save. Raises :class:`~eskit.ConcurrencyError` if another writer saved
        the aggregate first; the events then stay uncommitted so the caller can
        reload and retry the command.
        """
        events, expected = pending_events(aggregate, metadata)
        if not events:
            return None
        result = self.event_store.append(aggregate.aggregate_id, events, expected)
        aggregate.mark_events_as_committed()
        self._cache.remember(aggregate)
        return result

    def get(self, aggregate_id: StreamId, aggregate_class: type[A]) -> A:
        """Load an aggregate by replaying its events.

        Raises :class:`~eskit.AggregateNotFound` if its stream has no events.
        """
        aggregate = self._cache.get(aggregate_class, aggregate_id)
        if aggregate is None:
            events = self.event_store.read_stream(aggregate_id)
            if not events:
                raise AggregateNotFound(aggregate_id, aggregate_class)
            aggregate = aggregate_class.create_blank(aggregate_id)
        else:
            events = self.event_store.read_stream(aggregate_id, aggregate.version)
        replay(aggregate, events)
        self._cache.remember(aggregate)
        return aggregate
