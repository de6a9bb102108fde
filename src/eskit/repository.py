"""The repository: loads aggregates by replaying their events and saves new ones.

Unlike the seed tutorial's repository, this one never hands out stale state:
its optional cache keeps a private copy of each aggregate and, on every
``get``, reads the events stored after the cached version before returning a
fresh copy. Two repositories (or two processes) can therefore share a store.

With a snapshot store (:mod:`eskit.snapshots`) it loads from the newest usable
snapshot and replays only the events after it, and takes snapshots as its
policy says. It also travels in time: ``get(..., version=N)`` and
``get(..., as_of=moment)`` give past states, ``history`` the state after each
event. How it decides is :mod:`eskit.loading`, shared with the async repository.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar, overload

from eskit import loading
from eskit.aggregate import Aggregate
from eskit.errors import ConcurrencyError, InvalidInputError, StoreError
from eskit.events import Event, StreamId
from eskit.loading import (
    FindVersion,
    HeadVersion,
    ReadSnapshot,
    ReadStream,
    Request,
    WriteSnapshot,
    check_history_args,
    check_target,
)
from eskit.observability import _hooks
from eskit.retry import DEFAULT_RETRY, Retry, check_retry
from eskit.snapshots import (
    DEFAULT_POLICY,
    Policies,
    PolicyChoice,
    Snapshot,
    SnapshotPolicy,
    SnapshotStore,
)
from eskit.stores.arguments import stream_key
from eskit.stores.base import EventStore
from eskit.stores.model import AppendResult, StreamAppend

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


# The pure parts of a repository, shared by the sync and async front ends: what to
# append at which expected version, and a cache that hands out copies (how to load is
# eskit.loading).


class SavePlan:
    """What saving several aggregates in one ``append_many`` call appends (internal).

    ``appends`` holds one :class:`StreamAppend` per aggregate with events to
    save, in the order given; ``results`` lays the call's results out again in
    the order of the aggregates, ``None`` for those with nothing to save.
    """

    __slots__ = ("aggregates", "appends", "expected", "saving")

    def __init__(self, aggregates: Sequence[Aggregate], metadata: Mapping[str, Any] | None):
        for a in aggregates:
            if not isinstance(a, Aggregate):
                raise InvalidInputError(f"save takes aggregates, got {type(a).__name__}")
        self.aggregates = aggregates
        self.appends: list[StreamAppend] = []
        self.expected: list[int | None] = []
        for a in aggregates:
            events, expected = pending_events(a, metadata)
            if events:
                self.appends.append(StreamAppend(a.aggregate_id, events, expected))
            self.expected.append(expected if events else None)

    def results(self, stored: Sequence[AppendResult]) -> list[AppendResult | None]:
        """The results in the order of the aggregates; marks the saved ones committed."""
        found = iter(stored)
        laid_out: list[AppendResult | None] = []
        for aggregate, expected in zip(self.aggregates, self.expected, strict=True):
            if expected is None:
                laid_out.append(None)
                continue
            laid_out.append(next(found))
            aggregate.mark_events_as_committed()
        return laid_out


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

    ``snapshots`` is an optional :class:`~eskit.SnapshotStore` beside the event
    store; ``snapshot_policy`` says when snapshots are taken: one
    :class:`~eskit.SnapshotPolicy` for every class (default
    ``EveryNEvents(100)``), or a mapping from aggregate classes to policies
    (searched along each class's MRO, so ``{Aggregate: ...}`` sets a default;
    classes it does not cover get ``OnDemand()``).
    """

    def __init__(
        self,
        event_store: EventStore,
        *,
        cache_size: int = 0,
        snapshots: SnapshotStore | None = None,
        snapshot_policy: PolicyChoice = DEFAULT_POLICY,
    ) -> None:
        self._cache = AggregateCache(cache_size)
        self.event_store = event_store
        if snapshots is not None and not isinstance(snapshots, SnapshotStore):
            raise InvalidInputError(
                f"snapshots must be a SnapshotStore, got {type(snapshots).__name__}"
            )
        self.snapshots = snapshots
        self._policies = Policies(snapshot_policy)

    @overload
    def save(
        self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | None: ...

    @overload
    def save(
        self, aggregate: Aggregate, second: Aggregate, /, *more: Aggregate,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[AppendResult | None]: ...

    def save(
        self, aggregate: Aggregate, *more: Aggregate, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | list[AppendResult | None] | None:
        """Append the aggregate's uncommitted events, expecting its loaded version.

        ``save(a, b, ...)`` saves several aggregates in one
        :meth:`~eskit.EventStore.append_many` call, each expecting its own loaded
        version: all of them or none (a
        :class:`~eskit.MultiStreamConcurrencyError` names every aggregate that
        moved; every aggregate's events then stay uncommitted). It returns a list
        in the order given, ``None`` for an aggregate with nothing to save.

        ``metadata`` (correlation id, user, ...) is added to every event; keys
        the event already has win. Returns ``None`` if there was nothing to
        save. Raises :class:`~eskit.ConcurrencyError` if another writer saved
        the aggregate first; the events then stay uncommitted so the caller can
        reload and retry the command.

        With a snapshot store, a snapshot is taken afterwards if the policy says
        one is due. The events are committed by then; taking the snapshot never
        raises (a failure is logged on ``eskit.snapshots`` and retried by the
        next save or load).
        """
        if more:
            return self._save_many(SavePlan([aggregate, *more], metadata))
        events, expected = pending_events(aggregate, metadata)
        if not events:
            return None
        result = self.event_store.append(aggregate.aggregate_id, events, expected)
        aggregate.mark_events_as_committed()
        self._cache.remember(aggregate)
        if self.snapshots is not None:
            policy = self._policies.for_class(type(aggregate))
            self._run(loading.after_save(aggregate, result, expected, policy))
        return result

    def _save_many(self, plan: SavePlan) -> list[AppendResult | None]:
        if not plan.appends:
            return [None] * len(plan.aggregates)
        results = plan.results(self.event_store.append_many(plan.appends))
        for aggregate, result, expected in zip(plan.aggregates, results, plan.expected,
                                               strict=True):
            if result is None or expected is None:
                continue
            self._cache.remember(aggregate)
            if self.snapshots is not None:  # per aggregate, once all are committed
                policy = self._policies.for_class(type(aggregate))
                self._run(loading.after_save(aggregate, result, expected, policy))
        return results

    def execute(
        self,
        aggregate_id: StreamId,
        aggregate_class: type[A],
        command: Callable[[A], object],
        *,
        retry: Retry = DEFAULT_RETRY,
        metadata: Mapping[str, Any] | None = None,
    ) -> A:
        """Run ``command`` on the current aggregate and save it, retrying on conflict.

        Each attempt loads the aggregate (:meth:`get`), calls
        ``command(aggregate)`` (which raises events or refuses with an error) and
        saves it (:meth:`save`, with ``metadata``). A
        :class:`~eskit.ConcurrencyError` from the save wrote nothing: the
        command runs again on a freshly loaded aggregate, as often as ``retry``
        allows, then :class:`~eskit.CommandRetriesExhausted`. Any other error
        (the command's own, :class:`~eskit.AggregateNotFound`) propagates at
        once. Returns the saved aggregate. ``command`` may run more than once:
        it must have no effect besides the events it raises.
        """
        policy = check_retry(retry)
        attempt = 1
        while True:
            try:
                aggregate = self.get(aggregate_id, aggregate_class)
                command(aggregate)
                self.save(aggregate, metadata=metadata)
                return aggregate
            except ConcurrencyError as conflict:
                wait = policy.after_conflict(attempt, conflict)
            if wait > 0:
                time.sleep(wait)
            attempt += 1

    def get(
        self,
        aggregate_id: StreamId,
        aggregate_class: type[A],
        *,
        version: int | None = None,
        as_of: datetime | None = None,
    ) -> A:
        """Load an aggregate: its current state, or its state in the past.

        ``version=N`` gives the state after the event at version N (a version
        beyond the stream's head raises :class:`~eskit.VersionNotFound`);
        ``as_of`` (a timezone-aware ``datetime``) the state after the last event
        *recorded* at or before that moment, events still applied in version
        order (see :meth:`~eskit.EventStore.version_at`). A past state is for
        reading: saving new events on it raises :class:`~eskit.ConcurrencyError`.

        Raises :class:`~eskit.AggregateNotFound` if the stream has no events
        (at ``as_of``: none recorded by then).
        """
        target, moment = check_target(version, as_of)
        current = target is None and moment is None
        cached = self._cache.get(aggregate_class, aggregate_id) if current else None
        plan = loading.get(
            aggregate_id, aggregate_class, version=target, as_of=moment, cached=cached,
            policy=self._policy(aggregate_class),
        )
        if (observer := _hooks.active) is None:
            aggregate = self._run(plan)
        else:  # a span and metrics, with the events replayed and the snapshot used
            with observer.load(self.event_store, aggregate_id, aggregate_class) as seen:
                aggregate = loading.run(plan, loading.counting(self._perform, seen))
        if current:
            self._cache.remember(aggregate)
        return aggregate

    def history(
        self,
        aggregate_id: StreamId,
        aggregate_class: type[A],
        *,
        from_version: int = 0,
        to_version: int | None = None,
    ) -> Iterator[tuple[Event, A]]:
        """The aggregate's story: each event with a copy of the state right after it.

        Yields ``(event, state)`` for the events with ``from_version < version
        <= to_version`` (``None``: to the head), oldest first; each state is a
        copy of its own, for debugging and audit. The state at
        ``from_version`` is loaded from a snapshot where one helps, and events
        are read in pages. Bounds beyond the head raise
        :class:`~eskit.VersionNotFound` here, at the call.
        """
        check_history_args(from_version, to_version)
        aggregate, events = self._run(loading.history_start(
            aggregate_id, aggregate_class, from_version, to_version,
            self._policy(aggregate_class),
        ))
        return self._history(aggregate, events, to_version)

    def _history(self, aggregate: A, events: list[Event], to_version: int | None) -> Iterator[
        tuple[Event, A]
    ]:
        while events:
            yield from loading.history_steps(aggregate, events)
            request = loading.next_page(aggregate.aggregate_id, events[-1].version, to_version)
            if request is None:
                return
            events = self._perform(request)

    def take_snapshot(self, aggregate: Aggregate) -> Snapshot:
        """Snapshot ``aggregate`` now, at its version, and return the snapshot.

        For the ``OnDemand`` policy, or any other. The aggregate must have no
        unsaved events. Unlike the snapshots a policy takes, this raises when it
        fails: :class:`~eskit.StoreError` without a snapshot store,
        :class:`~eskit.InvalidInputError` for ``NoSnapshots`` or unsaved events,
        :class:`~eskit.EncodingError` for state the codec cannot store.
        """
        if self.snapshots is None:
            raise StoreError("this repository has no snapshot store")
        policy = self._policies.for_class(type(aggregate))
        return self._run(loading.take_snapshot(aggregate, policy))

    # -- carrying out the plans of eskit.loading ----------------------------------------

    def _policy(self, aggregate_class: type) -> SnapshotPolicy | None:
        return None if self.snapshots is None else self._policies.for_class(aggregate_class)

    def _run(self, plan: loading.Plan[loading.T]) -> loading.T:
        return loading.run(plan, self._perform)

    def _perform(self, request: Request) -> Any:
        store = self.event_store
        if isinstance(request, ReadStream):
            return store.read_stream(
                request.stream_id, request.from_version, to_version=request.to_version
            )
        if isinstance(request, FindVersion):
            return store.version_at(request.stream_id, request.as_of)
        if isinstance(request, HeadVersion):
            return store.head_version(request.stream_id)
        snapshots = self.snapshots
        assert snapshots is not None, "plans ask for snapshots only when there is a store"
        if isinstance(request, ReadSnapshot):
            return snapshots.latest_with_tail(
                request.stream_id, request.aggregate_type, request.max_version, events=store
            )
        assert isinstance(request, WriteSnapshot)
        return snapshots.save(request.snapshot)
