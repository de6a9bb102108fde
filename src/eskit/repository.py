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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from eskit.aggregate import Aggregate
from eskit.errors import AggregateNotFound, InvalidInputError
from eskit.events import StreamId
from eskit.stores.base import AppendResult, EventStore, stream_key

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


class Repository:
    """Saves and loads aggregates through an :class:`~eskit.EventStore`.

    ``cache_size`` > 0 keeps that many recently used aggregates in memory; a
    cached aggregate is always brought up to date with the store before it is
    returned, so the cache saves replay time but never returns old state.
    """

    def __init__(self, event_store: EventStore, *, cache_size: int = 0) -> None:
        if type(cache_size) is not int or cache_size < 0:
            raise InvalidInputError("cache_size must be an int >= 0")
        self.event_store = event_store
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[type, str], Aggregate] = OrderedDict()
        self._lock = threading.Lock()

    def save(
        self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | None:
        """Append the aggregate's uncommitted events, expecting its loaded version.

        ``metadata`` (correlation id, user, ...) is added to every event; keys
        the event already has win. Raises :class:`~eskit.ConcurrencyError` if
        another writer saved the aggregate first; the events then stay
        uncommitted so the caller can reload and retry the command.
        """
        events = aggregate.get_uncommitted_events()
        if not events:
            return None
        if metadata:
            events = [replace(e, metadata={**metadata, **e.metadata}) for e in events]
        expected = aggregate.version - len(events)
        result = self.event_store.append(aggregate.aggregate_id, events, expected)
        aggregate.mark_events_as_committed()
        if self._cache_size:
            self._remember(aggregate)
        return result

    def get(self, aggregate_id: StreamId, aggregate_class: type[A]) -> A:
        """Load an aggregate by replaying its events.

        Raises :class:`~eskit.AggregateNotFound` if its stream has no events.
        """
        key = (aggregate_class, stream_key(aggregate_id))
        aggregate: A | None = None
        if self._cache_size:
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    aggregate = copy.deepcopy(cached)  # type: ignore[assignment]
        if aggregate is None:
            events = self.event_store.read_stream(aggregate_id)
            if not events:
                raise AggregateNotFound(aggregate_id, aggregate_class)
            aggregate = aggregate_class.create_blank(aggregate_id)
        else:
            events = self.event_store.read_stream(aggregate_id, aggregate.version)
        for event in events:
            aggregate.apply_event(event)
        if self._cache_size:
            self._remember(aggregate)
        return aggregate

    def _remember(self, aggregate: Aggregate) -> None:
        key = (type(aggregate), stream_key(aggregate.aggregate_id))
        snapshot = copy.deepcopy(aggregate)
        with self._lock:
            self._cache[key] = snapshot
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
