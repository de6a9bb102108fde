"""The repository for asyncio: loads aggregates by replaying events, saves new ones.

Same semantics as :class:`eskit.Repository`, awaited: ``get`` replays the
aggregate's stream (:class:`~eskit.AggregateNotFound` if it has no events),
``save`` appends its uncommitted events expecting the version it was loaded at
(:class:`~eskit.ConcurrencyError` if another writer got there first; the
events then stay uncommitted so the command can be retried on a fresh copy).
The optional cache is never stale: a cached aggregate is brought up to date
with the store on every ``get``, and callers always receive their own copy.
Snapshots (an :class:`~eskit.aio.AsyncSnapshotStore` and a policy), time travel
(``get(..., version=N)``, ``get(..., as_of=moment)``) and ``history`` work as in
the sync repository: both run the same plans (:mod:`eskit.loading`), only the
I/O is awaited here.

Aggregates are the ordinary :class:`eskit.Aggregate` classes: they do no I/O,
so one domain model serves the sync and the async front ends.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, overload

from eskit import loading
from eskit.aggregate import Aggregate
from eskit.aio.snapshots import AsyncSnapshotStore
from eskit.aio.store import AsyncEventStore
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
from eskit.repository import AggregateCache, SavePlan, pending_events
from eskit.retry import DEFAULT_RETRY, Retry, check_retry
from eskit.snapshots import DEFAULT_POLICY, Policies, PolicyChoice, Snapshot, SnapshotPolicy
from eskit.stores.model import AppendResult

__all__ = ["AsyncRepository"]

A = TypeVar("A", bound=Aggregate)


class AsyncRepository:
    """Saves and loads aggregates through an :class:`~eskit.aio.AsyncEventStore`.

    ``cache_size`` > 0 keeps that many recently used aggregates in memory; a
    cached aggregate is always brought up to date with the store before it is
    returned, so the cache saves replay time but never returns old state.
    ``snapshots`` and ``snapshot_policy`` mean what they mean for
    :class:`eskit.Repository`.
    """

    def __init__(
        self,
        event_store: AsyncEventStore,
        *,
        cache_size: int = 0,
        snapshots: AsyncSnapshotStore | None = None,
        snapshot_policy: PolicyChoice = DEFAULT_POLICY,
    ) -> None:
        self._cache = AggregateCache(cache_size)
        self.event_store = event_store
        if snapshots is not None and not isinstance(snapshots, AsyncSnapshotStore):
            raise InvalidInputError(
                f"snapshots must be an AsyncSnapshotStore, got {type(snapshots).__name__}"
            )
        self.snapshots = snapshots
        self._policies = Policies(snapshot_policy)

    @overload
    async def save(
        self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | None: ...

    @overload
    async def save(
        self, aggregate: Aggregate, second: Aggregate, /, *more: Aggregate,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[AppendResult | None]: ...

    async def save(
        self, aggregate: Aggregate, *more: Aggregate, metadata: Mapping[str, Any] | None = None
    ) -> AppendResult | list[AppendResult | None] | None:
        """Append the aggregate's uncommitted events, expecting its loaded version.

        ``save(a, b, ...)`` saves several aggregates in one ``append_many`` call,
        all or none, and returns a list in the order given (``None`` for an
        aggregate with nothing to save), as :meth:`eskit.Repository.save` does.

        ``metadata`` (correlation id, user, ...) is added to every event; keys
        the event already has win. Returns ``None`` if there was nothing to
        save. Raises :class:`~eskit.ConcurrencyError` if another writer saved
        the aggregate first; the events then stay uncommitted. A snapshot the
        policy calls for is taken after the events are committed and never
        raises (failures are logged on ``eskit.snapshots``).
        """
        if more:
            return await self._save_many(SavePlan([aggregate, *more], metadata))
        events, expected = pending_events(aggregate, metadata)
        if not events:
            return None
        result = await self.event_store.append(aggregate.aggregate_id, events, expected)
        aggregate.mark_events_as_committed()
        self._cache.remember(aggregate)
        if self.snapshots is not None:
            policy = self._policies.for_class(type(aggregate))
            await self._run(loading.after_save(aggregate, result, expected, policy))
        return result

    async def _save_many(self, plan: SavePlan) -> list[AppendResult | None]:
        if not plan.appends:
            return [None] * len(plan.aggregates)
        results = plan.results(await self.event_store.append_many(plan.appends))
        for aggregate, result, expected in zip(plan.aggregates, results, plan.expected,
                                               strict=True):
            if result is None or expected is None:
                continue
            self._cache.remember(aggregate)
            if self.snapshots is not None:  # per aggregate, once all are committed
                policy = self._policies.for_class(type(aggregate))
                await self._run(loading.after_save(aggregate, result, expected, policy))
        return results

    async def execute(
        self,
        aggregate_id: StreamId,
        aggregate_class: type[A],
        command: Callable[[A], object],
        *,
        retry: Retry = DEFAULT_RETRY,
        metadata: Mapping[str, Any] | None = None,
    ) -> A:
        """Run ``command`` on the current aggregate and save it, retrying on conflict.

        Same contract as :meth:`eskit.Repository.execute`; ``command`` may also
        be a coroutine function (it is awaited), and the waits between attempts
        are ``asyncio.sleep``.
        """
        policy = check_retry(retry)
        attempt = 1
        while True:
            try:
                aggregate = await self.get(aggregate_id, aggregate_class)
                outcome = command(aggregate)
                if inspect.isawaitable(outcome):
                    await outcome
                await self.save(aggregate, metadata=metadata)
                return aggregate
            except ConcurrencyError as conflict:
                wait = policy.after_conflict(attempt, conflict)
            await asyncio.sleep(wait)  # also at 0: let the writer that won run
            attempt += 1

    async def get(
        self,
        aggregate_id: StreamId,
        aggregate_class: type[A],
        *,
        version: int | None = None,
        as_of: datetime | None = None,
    ) -> A:
        """Load an aggregate: its current state, or its state at ``version`` / ``as_of``.

        Same contract as :meth:`eskit.Repository.get`:
        :class:`~eskit.AggregateNotFound` for a stream without events,
        :class:`~eskit.VersionNotFound` for a version beyond the head.
        """
        target, moment = check_target(version, as_of)
        current = target is None and moment is None
        cached = self._cache.get(aggregate_class, aggregate_id) if current else None
        plan = loading.get(
            aggregate_id, aggregate_class, version=target, as_of=moment, cached=cached,
            policy=self._policy(aggregate_class),
        )
        if (observer := _hooks.active) is None:
            aggregate = await self._run(plan)
        else:  # a span and metrics, with the events replayed and the snapshot used
            with observer.load(self.event_store, aggregate_id, aggregate_class) as seen:
                aggregate = await loading.run_async(
                    plan, loading.counting_async(self._perform, seen)
                )
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
    ) -> AsyncIterator[tuple[Event, A]]:
        """Each event with a copy of the state after it (``async for``).

        Same contract as :meth:`eskit.Repository.history`. Bad arguments raise
        at the call; a missing stream or a bound beyond the head raises at the
        first iteration.
        """
        check_history_args(from_version, to_version)
        return self._history(aggregate_id, aggregate_class, from_version, to_version)

    async def _history(
        self, aggregate_id: StreamId, aggregate_class: type[A], from_version: int,
        to_version: int | None,
    ) -> AsyncIterator[tuple[Event, A]]:
        aggregate, events = await self._run(loading.history_start(
            aggregate_id, aggregate_class, from_version, to_version,
            self._policy(aggregate_class),
        ))
        while events:
            for step in loading.history_steps(aggregate, events):
                yield step
            request = loading.next_page(aggregate_id, events[-1].version, to_version)
            if request is None:
                return
            events = await self._perform(request)

    async def take_snapshot(self, aggregate: Aggregate) -> Snapshot:
        """Snapshot ``aggregate`` now; same contract as :meth:`eskit.Repository.take_snapshot`."""
        if self.snapshots is None:
            raise StoreError("this repository has no snapshot store")
        policy = self._policies.for_class(type(aggregate))
        return await self._run(loading.take_snapshot(aggregate, policy))

    # -- carrying out the plans of eskit.loading ----------------------------------------

    def _policy(self, aggregate_class: type) -> SnapshotPolicy | None:
        return None if self.snapshots is None else self._policies.for_class(aggregate_class)

    async def _run(self, plan: loading.Plan[loading.T]) -> loading.T:
        return await loading.run_async(plan, self._perform)

    async def _perform(self, request: Request) -> Any:
        store = self.event_store
        if isinstance(request, ReadStream):
            return await store.read_stream(
                request.stream_id, request.from_version, to_version=request.to_version
            )
        if isinstance(request, FindVersion):
            return await store.version_at(request.stream_id, request.as_of)
        if isinstance(request, HeadVersion):
            return await store.head_version(request.stream_id)
        snapshots = self.snapshots
        assert snapshots is not None, "plans ask for snapshots only when there is a store"
        if isinstance(request, ReadSnapshot):
            return await snapshots.latest_with_tail(
                request.stream_id, request.aggregate_type, request.max_version, events=store
            )
        assert isinstance(request, WriteSnapshot)
        return await snapshots.save(request.snapshot)
