"""Retention policies per stream category: which streams expire or lose old events.

A :class:`RetentionPolicy` names a category by stream-id prefix (``sensor-``) and
any of three rules:

* ``max_age``: a stream whose newest event is older than that is expired, and
  :func:`apply_retention` deletes it (hard by default: a tombstone) with
  :meth:`~eskit.EventStore.delete_stream`;
* ``max_events``: a stream lives on but keeps only its newest N events;
* ``truncate_before_version``: a stream lives on without its events below that
  version (its newest event always stays).

The two truncating rules go through :meth:`~eskit.EventStore.truncate_stream`,
which needs a snapshot at or above the cut (in the store's own snapshot table)
unless forced; given a :class:`~eskit.Repository` and the aggregate class of the
category, :func:`apply_retention` takes that snapshot first. Each change is its
own transaction expecting the version :func:`plan_retention` saw, so a stream
that received an event since is skipped, never over-truncated; a truncation
removes at most :data:`TRUNCATE_STEP` events per transaction. Interrupting loses
nothing and a rerun plans again from what is stored. See docs/storage.md.

:func:`plan_retention_async` and :func:`apply_retention_async` do the same on an
:class:`~eskit.aio.AsyncEventStore` (with an :class:`~eskit.aio.AsyncRepository`):
the plan and every decision are the same code, written once as generators that
yield each store or repository call they need (:class:`_Call`); a sync and an
async driver run those calls and send back the result, or throw in the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eskit.aggregate import Aggregate
from eskit.codec import encode
from eskit.errors import (
    ConcurrencyError,
    EskitError,
    InvalidInputError,
    StreamDeletedError,
    StreamTruncatedError,
    TruncationRefusedError,
)
from eskit.maintenance.retention_policy import (
    RetentionPolicy,
    checked_policies,
    load_policies,
    parse_age,
    policy_for,
)

__all__ = [
    "CategoryPlan", "RetentionPlan", "RetentionPolicy", "RetentionResult", "Truncation",
    "apply_retention", "apply_retention_async", "load_policies", "parse_age",
    "plan_retention", "plan_retention_async",
]

_log = logging.getLogger("eskit.retention")

DEFAULT_BATCH = 100
MAX_BATCH = 10_000
TRUNCATE_STEP = 10_000
"""Events one truncating transaction removes at most (a long cut takes several)."""

Progress = Callable[[int, int], object]
"""Called after each batch with (streams handled so far, streams to handle)."""


@dataclass(slots=True)
class CategoryPlan:
    """What a policy would remove from its category."""

    policy: RetentionPolicy
    streams: int = 0
    """Expired streams, to delete."""
    events: int = 0
    bytes: int = 0
    """Encoded bytes of the expired events' data and metadata (JSON, before compression)."""
    truncated_streams: int = 0
    """Streams that live on but lose their oldest events."""
    truncated_events: int = 0
    truncated_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Truncation:
    """One planned truncation: ``stream_id`` at ``version`` to start at ``cut``
    (it starts at ``first`` now)."""

    stream_id: Any
    version: int
    first: int
    cut: int
    policy: RetentionPolicy


@dataclass(slots=True)
class RetentionPlan:
    """What the policies remove, per category; nothing written.

    ``targets``: the streams to delete, as (stream, version, policy);
    ``truncations``: the streams to truncate.
    """

    categories: list[CategoryPlan]
    targets: list[tuple[Any, int, RetentionPolicy]] = field(default_factory=list)
    truncations: list[Truncation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :func:`apply_retention` did."""

    deleted_streams: int
    deleted_events: int
    skipped: int
    """Streams that received an event (or were deleted) after the plan: left alone."""
    batches: int
    truncated_streams: int = 0
    truncated_events: int = 0
    refused: int = 0
    """Truncations left undone for want of a snapshot (no repository given for the
    category, and not ``force``): see :meth:`~eskit.EventStore.truncate_stream`."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One call the decision code needs made: ``target`` is ``store`` or
    ``repository``; method ``size`` means the encoded bytes of the stream's events
    up to ``to_version`` (read page by page)."""

    target: str
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_Steps = Generator[_Call, Any, Any]


def _size(events: Iterable[Any]) -> int:
    return sum(len(encode(e.event_data)) + len(encode(e.metadata)) for e in events)


def _checked_now(now: datetime | None) -> datetime:
    moment = now if now is not None else datetime.now(UTC)
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise InvalidInputError("now must be an aware datetime (UTC)")
    return moment


def _plan_steps(chosen: Sequence[RetentionPolicy], moment: datetime,
                count_bytes: bool) -> _Steps:
    """The plan: the decision per stream, shared by the sync and async front ends."""
    plans = {p.prefix: CategoryPlan(p) for p in chosen}
    plan = RetentionPlan(list(plans.values()))
    for info in (yield _Call("store", "list_streams")):
        policy = policy_for(str(info.stream_id), chosen)
        if policy is None:
            continue
        category = plans[policy.prefix]
        if policy.max_age is not None and info.last_timestamp <= moment - policy.max_age:
            first_events = yield _Call("store", "read_stream", (info.stream_id,), {"limit": 1})
            first = first_events[0].version if first_events else info.version
            category.streams += 1
            category.events += info.version - first + 1
            if count_bytes:
                category.bytes += yield _Call("store", "size", (info.stream_id, info.version))
            plan.targets.append((info.stream_id, info.version, policy))
            continue
        cut = policy.cut(info.version)
        if cut == 1:
            continue
        first_events = yield _Call("store", "read_stream", (info.stream_id,), {"limit": 1})
        first = first_events[0].version if first_events else cut
        if cut <= first:
            continue  # truncated that far already
        category.truncated_streams += 1
        category.truncated_events += cut - first
        if count_bytes:
            category.truncated_bytes += yield _Call("store", "size", (info.stream_id, cut - 1))
        plan.truncations.append(Truncation(info.stream_id, info.version, first, cut, policy))
    return plan


def _apply_steps(chosen: Sequence[RetentionPolicy], moment: datetime, batch_size: int,
                 progress: Progress | None, classes: Mapping[str, type[Aggregate]],
                 force: bool) -> _Steps:
    """Plan, then delete and truncate in batches; shared by both front ends."""
    plan = yield from _plan_steps(chosen, moment, False)
    work: list[tuple[Any, int, RetentionPolicy] | Truncation] = [
        *plan.targets, *plan.truncations]
    total = len(work)
    deleted = events = skipped = batches = truncated = removed = refused = 0
    for start in range(0, total, batch_size):
        for item in work[start : start + batch_size]:
            if isinstance(item, Truncation):
                outcome = yield from _truncate_steps(item, classes, force)
                if outcome is None:
                    skipped += 1
                elif outcome < 0:
                    refused += 1
                else:
                    truncated += 1
                    removed += outcome
                continue
            stream_id, version, policy = item
            try:
                yield _Call("store", "delete_stream", (stream_id, version), {"hard": policy.hard})
            except ConcurrencyError:  # an event arrived since the plan: not expired now
                skipped += 1
                continue
            deleted += 1
            events += version
        batches += 1
        _log.info("retention batch %d: %d streams deleted, %d truncated (%d events) so far, "
                  "%d skipped, %d refused", batches, deleted, truncated, removed, skipped,
                  refused)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return RetentionResult(deleted, events, skipped, batches, truncated, removed, refused)


def _truncate_steps(target: Truncation, classes: Mapping[str, type[Aggregate]],
                    force: bool) -> _Steps:
    """Events removed; ``None``: the stream moved (skipped); -1: refused (no snapshot)."""
    removed = 0
    first = target.first
    snapshotted = False
    while first < target.cut:
        step = min(target.cut, first + TRUNCATE_STEP)
        try:
            removed += yield _Call("store", "truncate_stream", (target.stream_id, step),
                                   {"expected_version": target.version, "force": force})
        except (ConcurrencyError, StreamDeletedError):
            # Moved since the plan: what went stays gone (consistent), a rerun plans anew.
            return removed or None
        except TruncationRefusedError:
            cls = classes.get(target.policy.prefix)
            if cls is None or snapshotted:
                _log.warning("retention: not truncating %r: no snapshot at version %d or "
                             "above (give a repository, or force)", str(target.stream_id),
                             target.cut)
                return -1  # only the first step can be refused: the cut is the same
            try:
                aggregate = yield _Call("repository", "get", (target.stream_id, cls))
                if aggregate.version != target.version:
                    return None
                yield _Call("repository", "take_snapshot", (aggregate,))
            except StreamTruncatedError:  # forced once before, no snapshot: cannot load
                return -1
            except EskitError as exc:  # e.g. a state the codec cannot store
                _log.warning("retention: not truncating %r: taking its snapshot failed: %s",
                             str(target.stream_id), exc)
                return -1
            snapshotted = True
            continue
        first = step
    return removed


# --------------------------------------------------------------------------- drivers


def _run(steps: _Steps, store: Any, repository: Any) -> Any:
    """Make each call ``steps`` yields, synchronously; its return value."""
    targets = {"store": store, "repository": repository}
    try:
        call = next(steps)
        while True:
            try:
                if call.method == "size":
                    stream_id, to_version = call.args
                    result: Any = _size(store.iter_stream(stream_id, to_version=to_version))
                else:
                    result = getattr(targets[call.target], call.method)(
                        *call.args, **call.kwargs)
            except Exception as exc:  # the decision code handles it, or it propagates
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as done:
        return done.value


async def _run_async(steps: _Steps, store: Any, repository: Any) -> Any:
    """:func:`_run` with every call awaited."""
    targets = {"store": store, "repository": repository}
    try:
        call = next(steps)
        while True:
            try:
                if call.method == "size":
                    stream_id, to_version = call.args
                    result: Any = 0
                    async for event in store.iter_stream(stream_id, to_version=to_version):
                        result += _size([event])
                else:
                    result = await getattr(targets[call.target], call.method)(
                        *call.args, **call.kwargs)
            except Exception as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as done:
        return done.value


# --------------------------------------------------------------------------- front ends


def _check_apply(batch_size: object, force: object, policies: Iterable[RetentionPolicy],
                 repository: Any, aggregates: Mapping[str, type[Aggregate]] | None,
                 repository_type: type) -> tuple[list[RetentionPolicy], dict[str, type[Aggregate]]]:
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInputError(f"batch_size must be an int from 1 to {MAX_BATCH}")
    if type(force) is not bool:
        raise InvalidInputError("force must be True or False")
    chosen = checked_policies(policies)
    if aggregates is None:
        if repository is not None:
            raise InvalidInputError("a repository needs aggregates: {prefix: class}")
        return chosen, {}
    snapshots = getattr(repository, "snapshots", None)
    if not isinstance(repository, repository_type) or snapshots is None:
        raise InvalidInputError(
            f"aggregates need a {repository_type.__name__} with a snapshot store")
    prefixes = {p.prefix for p in chosen}
    classes = dict(aggregates)
    for prefix, cls in classes.items():
        if prefix not in prefixes:
            raise InvalidInputError(f"aggregates names {prefix!r}, which no policy has")
        if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
            raise InvalidInputError(f"aggregates[{prefix!r}] must be an Aggregate subclass")
    return chosen, classes


def _sync_only(store: Any, name: str) -> None:
    from eskit.aio.store import AsyncEventStore

    if isinstance(store, AsyncEventStore):
        raise InvalidInputError(f"{type(store).__name__} is async: use {name}_async")


def _async_only(store: Any, name: str) -> None:
    from eskit.aio.store import AsyncEventStore

    if not isinstance(store, AsyncEventStore):
        raise InvalidInputError(f"{name}_async needs an AsyncEventStore, got "
                                f"{type(store).__name__}: use {name}")


def plan_retention(store: Any, policies: Iterable[RetentionPolicy], *,
                   now: datetime | None = None, count_bytes: bool = True) -> RetentionPlan:
    """What ``policies`` remove now; reads only. ``count_bytes`` reads the events
    to remove to sum their bytes (else only counts are given)."""
    chosen = checked_policies(policies)
    moment = _checked_now(now)
    _sync_only(store, "plan_retention")
    plan: RetentionPlan = _run(_plan_steps(chosen, moment, count_bytes), store, None)
    return plan


async def plan_retention_async(store: Any, policies: Iterable[RetentionPolicy], *,
                               now: datetime | None = None,
                               count_bytes: bool = True) -> RetentionPlan:
    """:func:`plan_retention` on an :class:`~eskit.aio.AsyncEventStore`: the same plan."""
    chosen = checked_policies(policies)
    moment = _checked_now(now)
    _async_only(store, "plan_retention")
    plan: RetentionPlan = await _run_async(_plan_steps(chosen, moment, count_bytes),
                                           store, None)
    return plan


def apply_retention(store: Any, policies: Iterable[RetentionPolicy], *,
                    batch_size: int = DEFAULT_BATCH, now: datetime | None = None,
                    progress: Progress | None = None, repository: Any = None,
                    aggregates: Mapping[str, type[Aggregate]] | None = None,
                    force: bool = False) -> RetentionResult:
    """Delete the streams ``policies`` expire and truncate the ones they shorten,
    ``batch_size`` streams between progress reports.

    Each change is its own transaction (a truncation of more than
    :data:`TRUNCATE_STEP` events several), so an interrupted run loses nothing
    and a rerun continues. A truncation the store refuses for want of a snapshot
    is, given ``repository`` (whose snapshot store must be the store's own) and
    ``aggregates`` (policy prefix -> aggregate class), retried after taking one;
    otherwise it is counted in ``refused``. ``force=True`` truncates without a
    snapshot: such aggregates can no longer be loaded. Bad arguments raise
    before any I/O.
    """
    from eskit.repository import Repository

    chosen, classes = _check_apply(batch_size, force, policies, repository, aggregates,
                                   Repository)
    moment = _checked_now(now)
    _sync_only(store, "apply_retention")
    result: RetentionResult = _run(
        _apply_steps(chosen, moment, batch_size, progress, classes, force), store, repository)
    return result


async def apply_retention_async(
    store: Any, policies: Iterable[RetentionPolicy], *, batch_size: int = DEFAULT_BATCH,
    now: datetime | None = None, progress: Progress | None = None, repository: Any = None,
    aggregates: Mapping[str, type[Aggregate]] | None = None, force: bool = False,
) -> RetentionResult:
    """:func:`apply_retention` on an :class:`~eskit.aio.AsyncEventStore`, with an
    :class:`~eskit.aio.AsyncRepository` for the snapshots: the same plan, the same
    decisions and guarantees (each change its own transaction; a rerun continues).
    ``progress`` is called on the event loop: keep it quick."""
    from eskit.aio.repository import AsyncRepository

    chosen, classes = _check_apply(batch_size, force, policies, repository, aggregates,
                                   AsyncRepository)
    moment = _checked_now(now)
    _async_only(store, "apply_retention")
    result: RetentionResult = await _run_async(
        _apply_steps(chosen, moment, batch_size, progress, classes, force), store, repository)
    return result
