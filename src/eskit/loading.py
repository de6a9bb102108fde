"""How repositories load, time-travel and snapshot aggregates, written once for sync and async.

Every decision lives here as a *plan*: a generator that yields the I/O it needs
(:class:`ReadStream`, :class:`FindVersion`, :class:`HeadVersion`,
:class:`ReadSnapshot`, :class:`WriteSnapshot`) and receives each result, or has the I/O's exception
thrown into it at the ``yield``. :class:`eskit.Repository` runs a plan with
:func:`run`, :class:`eskit.aio.AsyncRepository` with :func:`run_async`; the
two differ only in how a request is carried out. So which snapshot is used,
when one is distrusted, what a version beyond the head means and when a
snapshot is due are the same code in both front ends.

The rules, in one place:

* Loading the current state starts from the cached copy if there is one, else
  from the newest usable snapshot, else from the first event. A snapshot is
  used only if its state decodes for today's class, and the stream holds the
  very event it was taken after (``version`` and ``event_id``). The snapshot and
  the events to replay with it come in one request (one statement, one round
  trip, on PostgreSQL), starting at the snapshot's own event so that checking it
  costs one extra row, not one extra query; without a snapshot that same
  request returns the whole stream.
* Without a snapshot store, events are read and applied a page
  (:data:`HISTORY_PAGE` versions) at a time, so loading a long stream holds one
  page, not the stream. (The snapshot request above still returns its tail whole.)
* Time travel to ``version=N`` reads events only up to N, from the newest usable
  snapshot at or below N; fewer than N events is :class:`~eskit.VersionNotFound`.
  ``as_of`` first finds the version of the last event recorded at or before it.
* After a save, and after loading the current state, the class's policy is asked
  whether a snapshot is due; taking it is best effort: a failure is counted in
  :data:`eskit.snapshots.snapshot_failures`, logged once on ``eskit.snapshots``,
  and the next save or load asks again.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eskit.aggregate import Aggregate
from eskit.errors import (
    AggregateNotFound,
    EskitError,
    InvalidInputError,
    StreamTruncatedError,
    VersionNotFound,
)
from eskit.events import Event, StreamId
from eskit.snapshots import (
    Snapshot,
    SnapshotPolicy,
    aggregate_type_name,
    capture,
    check_saved,
    decode_state,
    logger,
    restore,
    snapshot_failures,
)
from eskit.stores.arguments import check_as_of, check_version_arg
from eskit.stores.model import AppendResult

__all__: list[str] = []

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

HISTORY_PAGE = 1000
"""Events read per page by ``history``."""

_MARK = "_eskit_snapshot_at"
"""The instance attribute holding the version of the aggregate's newest known snapshot."""


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class ReadStream:
    """``event_store.read_stream(stream_id, from_version, to_version)`` -> list of events.

    Loading asks for pages (:data:`HISTORY_PAGE` versions each), never a whole stream.
    """

    stream_id: StreamId
    from_version: int
    to_version: int | None


@dataclass(frozen=True, slots=True)
class FindVersion:
    """``event_store.version_at(stream_id, as_of)`` -> int."""

    stream_id: StreamId
    as_of: datetime


@dataclass(frozen=True, slots=True)
class HeadVersion:
    """``event_store.head_version(stream_id)`` -> int."""

    stream_id: StreamId


@dataclass(frozen=True, slots=True)
class ReadSnapshot:
    """``snapshots.latest_with_tail(stream_id, aggregate_type, max_version, events=...)``.

    -> (the newest snapshot at or below ``max_version`` or ``None``, the events to
    replay with it: from the snapshot's own version, or from the first).
    """

    stream_id: StreamId
    aggregate_type: str
    max_version: int | None


@dataclass(frozen=True, slots=True)
class WriteSnapshot:
    """``snapshots.save(snapshot)`` -> None."""

    snapshot: Snapshot


Request = ReadStream | FindVersion | HeadVersion | ReadSnapshot | WriteSnapshot
Plan = Generator[Request, Any, T]


def run(plan: Plan[T], perform: Callable[[Request], Any]) -> T:
    """Carry out ``plan`` with a blocking ``perform``; return its result."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            request = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            result = perform(request)
        except Exception as exc:  # handed to the plan, which decides
            error = exc


async def run_async(plan: Plan[T], perform: Callable[[Request], Awaitable[Any]]) -> T:
    """Carry out ``plan`` with an awaitable ``perform``; return its result."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            request = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            result = await perform(request)
        except Exception as exc:
            error = exc


# --------------------------------------------------------------------------- arguments


def check_target(version: object, as_of: object) -> tuple[int | None, datetime | None]:
    """Validate ``get``'s time-travel arguments (at most one of the two)."""
    if version is not None and as_of is not None:
        raise InvalidInputError("pass version or as_of, not both")
    if version is not None:
        check_version_arg("version", version)
        if version == 0:
            raise InvalidInputError("version must be >= 1: version 0 is before the first event")
        return version, None  # type: ignore[return-value]
    if as_of is not None:
        return None, check_as_of(as_of)
    return None, None


def check_history_args(from_version: object, to_version: object) -> None:
    check_version_arg("from_version", from_version)
    check_version_arg("to_version", to_version, allow_none=True)
    if to_version is not None and to_version < from_version:  # type: ignore[operator]
        raise InvalidInputError(
            f"to_version ({to_version}) must not be below from_version ({from_version})"
        )


# --------------------------------------------------------------------------- loading


@dataclass(slots=True)
class Loaded:
    aggregate: Aggregate
    last_event_id: UUID | None
    """The id of the event at the aggregate's version, when the load saw it."""


def get(
    aggregate_id: StreamId,
    aggregate_class: type[A],
    *,
    version: int | None,
    as_of: datetime | None,
    cached: A | None,
    policy: SnapshotPolicy | None,
) -> Plan[A]:
    """Load an aggregate: its current state, or its state at ``version`` / ``as_of``.

    ``policy`` is ``None`` when the repository has no snapshot store.
    """
    if as_of is not None:
        version = yield from find_version(aggregate_id, aggregate_class, as_of)
    loaded = yield from load(
        aggregate_id, aggregate_class, to_version=version, cached=cached,
        snapshots=policy is not None and policy.loads,
    )
    aggregate: A = loaded.aggregate  # type: ignore[assignment]
    due = (
        policy is not None and version is None and loaded.last_event_id is not None
        and policy.due(aggregate.version, getattr(aggregate, _MARK, 0))
    )
    if due and loaded.last_event_id is not None:
        yield from write_snapshot(aggregate, loaded.last_event_id)
    return aggregate


def find_version(aggregate_id: StreamId, aggregate_class: type, as_of: datetime) -> Plan[int]:
    version: int = yield FindVersion(aggregate_id, as_of)
    if version == 0:
        raise AggregateNotFound(
            aggregate_id, aggregate_class,
            reason=f"the stream has no events recorded at or before {as_of.isoformat()}",
        )
    return version


def load(
    aggregate_id: StreamId,
    aggregate_class: type[A],
    *,
    to_version: int | None,
    cached: A | None = None,
    snapshots: bool,
) -> Plan[Loaded]:
    if cached is not None and to_version is None:
        last = yield from _replay_pages(cached, aggregate_id, cached.version, None)
        return Loaded(cached, last.event_id if last is not None else None)
    if snapshots:
        loaded = yield from _load_via_snapshot(aggregate_id, aggregate_class, to_version)
        if loaded is not None:
            return loaded
    aggregate = aggregate_class.create_blank(aggregate_id)
    last = yield from _replay_pages(aggregate, aggregate_id, 0, to_version)
    return _from_first_event(aggregate, last, to_version, snapshots)


def _replay_pages(
    aggregate: A, aggregate_id: StreamId, after: int, to_version: int | None
) -> Plan[Event | None]:
    """Apply the events after version ``after`` (up to ``to_version``) a page at a time.

    Returns the last event applied, ``None`` if there was none. One page of
    events is held at a time, so loading a long stream keeps memory flat; a
    stream shorter than a page still costs one read.
    """
    last: Event | None = None
    request = next_page(aggregate_id, after, to_version)
    while request is not None:
        page: list[Event] = yield request
        if after == 0 and last is None:
            _check_starts_at_one(aggregate_id, page)
        _replay(aggregate, page)
        if not page:
            return last
        last = page[-1]
        assert request.to_version is not None, "pages always end at a version"
        if len(page) < request.to_version - request.from_version:
            return last  # a short page: the stream ends here
        request = next_page(aggregate_id, last.version, to_version)
    return last


def _from_first_event(
    aggregate: A, last: Event | None, to_version: int | None, snapshots: bool
) -> Loaded:
    if last is None:
        raise AggregateNotFound(aggregate.aggregate_id, type(aggregate))
    if snapshots:
        setattr(aggregate, _MARK, 0)
    _check_reached(aggregate, to_version)
    return Loaded(aggregate, last.event_id)


def _load_via_snapshot(
    aggregate_id: StreamId, aggregate_class: type[A], to_version: int | None
) -> Plan[Loaded | None]:
    """Load from the newest usable snapshot; ``None`` means "read every event instead"."""

    def distrust(snapshot: Snapshot | None, why: object) -> None:
        where = f" at version {snapshot.version}" if snapshot is not None else ""
        logger.warning(
            "ignoring the snapshot of %s %r%s: %s; replaying its events instead",
            aggregate_class.__name__, str(aggregate_id), where, why,
        )

    # One request (one statement on PostgreSQL): the snapshot and the events from its
    # own version, or every event when there is no snapshot.
    try:
        snapshot, events = yield ReadSnapshot(
            aggregate_id, aggregate_type_name(aggregate_class), to_version
        )
    except InvalidInputError:
        raise  # a bad snapshot_name or argument is the caller's to fix
    except EskitError as exc:
        distrust(None, f"it could not be read with its events ({exc})")
        return None
    if snapshot is None:
        _check_starts_at_one(aggregate_id, events)
        aggregate = _replay(aggregate_class.create_blank(aggregate_id), events)
        return _from_first_event(aggregate, events[-1] if events else None, to_version, True)
    try:
        state = decode_state(aggregate_class, snapshot, to_version)
    except EskitError as exc:
        distrust(snapshot, exc)
        return None
    # The first event must be the very event the snapshot was taken after: that proves
    # it is not above the head and belongs to this history.
    if not events or events[0].version != snapshot.version:
        distrust(snapshot, "it is above the stream's head")
        return None
    if events[0].event_id != snapshot.event_id:
        distrust(snapshot, f"the stream holds another event at version {snapshot.version}")
        return None
    try:
        aggregate = restore(aggregate_class, aggregate_id, snapshot, state)
    except Exception as exc:  # a user hook: any failure means "do not trust it"
        distrust(snapshot, f"restoring it failed ({exc!r})")
        return None
    # The state holds every event up to the snapshot's version, all parts of a split
    # stored event included (they share its version): replay only what follows.
    tail = 1
    while tail < len(events) and events[tail].version == snapshot.version:
        tail += 1
    _replay(aggregate, events[tail:])
    setattr(aggregate, _MARK, snapshot.version)
    _check_reached(aggregate, to_version)
    return Loaded(aggregate, events[-1].event_id)


def _check_starts_at_one(aggregate_id: StreamId, events: list[Event]) -> None:
    """A replay from the first event must start at version 1: truncate_stream may
    have removed the start, and part of a history must never pass for all of it."""
    if events and events[0].version != 1:
        first = events[0].version
        raise StreamTruncatedError(
            f"stream {str(aggregate_id)!r} starts at version {first} (its older events "
            "were truncated) and no usable snapshot covers them",
            stream_id=aggregate_id, first_version=first,
        )


def _replay(aggregate: A, events: Iterable[Event]) -> A:
    for event in events:
        aggregate.apply_event(event)
    return aggregate


def _check_reached(aggregate: Aggregate, to_version: int | None) -> None:
    if to_version is not None and aggregate.version < to_version:
        raise VersionNotFound(aggregate.aggregate_id, to_version, aggregate.version)


# --------------------------------------------------------------------------- snapshots


def after_save(
    aggregate: Aggregate, result: AppendResult, expected: int, policy: SnapshotPolicy
) -> Plan[None]:
    """Take a snapshot after a save if the policy says one is due. Never raises."""
    if not result.events or result.version != aggregate.version:
        return
    since = getattr(aggregate, _MARK, None)
    if since is None:
        # Not loaded through a repository with snapshots: a new aggregate has none,
        # of an old one we know nothing, so count from where it was loaded.
        since = expected
        setattr(aggregate, _MARK, since)
    if policy.due(aggregate.version, since):
        yield from write_snapshot(aggregate, result.events[-1].event_id)


def write_snapshot(aggregate: Aggregate, event_id: UUID) -> Plan[None]:
    """Capture and store a snapshot; log a failure instead of raising it."""
    cls = type(aggregate)
    try:
        snapshot = capture(aggregate, event_id)
        yield WriteSnapshot(snapshot)
    except EskitError as exc:
        snapshot_failures.record(aggregate, exc, traceback=False)
        return
    except Exception as exc:  # a user hook failed: keep the traceback for its author
        snapshot_failures.record(aggregate, exc, traceback=True)
        return
    snapshot_failures.succeeded(cls)
    setattr(aggregate, _MARK, aggregate.version)


def take_snapshot(aggregate: Aggregate, policy: SnapshotPolicy) -> Plan[Snapshot]:
    """Snapshot ``aggregate`` on demand; errors are raised to the caller."""
    cls = type(aggregate)
    if not policy.on_demand:
        raise InvalidInputError(f"snapshots are switched off for {cls.__name__} (NoSnapshots)")
    check_saved(aggregate)
    if aggregate.version < 1:
        raise InvalidInputError(f"{cls.__name__} {str(aggregate.aggregate_id)!r} has no events")
    events: list[Event] = yield ReadStream(
        aggregate.aggregate_id, aggregate.version - 1, aggregate.version
    )
    if not events:
        head: int = yield HeadVersion(aggregate.aggregate_id)
        raise VersionNotFound(aggregate.aggregate_id, aggregate.version, head)
    snapshot = capture(aggregate, events[0].event_id)
    yield WriteSnapshot(snapshot)
    setattr(aggregate, _MARK, aggregate.version)
    return snapshot


# --------------------------------------------------------------------------- history


def history_steps(aggregate: A, events: Iterable[Event]) -> Iterator[tuple[Event, A]]:
    """Apply ``events`` one by one, yielding each with a copy of the state after it."""
    for event in events:
        aggregate.apply_event(event)
        yield event, copy.deepcopy(aggregate)


def history_start(
    aggregate_id: StreamId,
    aggregate_class: type[A],
    from_version: int,
    to_version: int | None,
    policy: SnapshotPolicy | None,
) -> Plan[tuple[A, list[Event]]]:
    """The state at ``from_version`` and the first page of events after it.

    Checks both bounds against the head first, so that a bad range fails at
    the call rather than halfway through the iteration.
    """
    checked = from_version > 0 or to_version is not None
    if checked:
        head: int = yield HeadVersion(aggregate_id)
        if head == 0:
            raise AggregateNotFound(aggregate_id, aggregate_class)
        for bound in (from_version, to_version):
            if bound is not None and bound > head:
                raise VersionNotFound(aggregate_id, bound, head)
    if from_version == 0:
        aggregate = aggregate_class.create_blank(aggregate_id)
    else:
        loaded = yield from load(
            aggregate_id, aggregate_class, to_version=from_version,
            snapshots=policy is not None and policy.loads,
        )
        aggregate = loaded.aggregate  # type: ignore[assignment]
    events: list[Event] = yield ReadStream(
        aggregate_id, from_version, _page_end(from_version, to_version)
    )
    if not checked and not events:
        raise AggregateNotFound(aggregate_id, aggregate_class)
    return aggregate, events


def next_page(aggregate_id: StreamId, last: int, to_version: int | None) -> ReadStream | None:
    """The read for the page after version ``last``, or ``None`` when done."""
    if to_version is not None and last >= to_version:
        return None
    return ReadStream(aggregate_id, last, _page_end(last, to_version))


def _page_end(after: int, to_version: int | None) -> int:
    end = after + HISTORY_PAGE
    return end if to_version is None else min(end, to_version)


# --------------------------------------------------------------------------- observing a load


class ReplayStats(Protocol):
    """Where :func:`counting` adds up what a load replayed (eskit.observability's Load)."""

    events: int
    snapshot_version: int | None


def count(stats: ReplayStats, request: Request, result: Any) -> None:
    """Add what one request of a load's plan returned to ``stats``."""
    if isinstance(request, ReadSnapshot):
        snapshot, events = result
        if snapshot is None:
            stats.events += len(events)
        else:  # the tail starts at the snapshot's own event, which is not replayed
            stats.snapshot_version = snapshot.version
            stats.events += sum(1 for e in events if e.version > snapshot.version)
    elif isinstance(request, ReadStream):
        if request.from_version == 0 and stats.snapshot_version is not None:
            stats.snapshot_version, stats.events = None, 0  # distrusted: replayed from 0
        stats.events += len(result)


def counting(perform: Callable[[Request], Any], stats: ReplayStats) -> Callable[[Request], Any]:
    """``perform`` (a repository's), counting into ``stats`` what the load replays."""
    def counted(request: Request) -> Any:
        result = perform(request)
        count(stats, request, result)
        return result
    return counted


def counting_async(
    perform: Callable[[Request], Awaitable[Any]], stats: ReplayStats
) -> Callable[[Request], Awaitable[Any]]:
    """:func:`counting` for an async repository's ``perform``."""
    async def counted(request: Request) -> Any:
        result = await perform(request)
        count(stats, request, result)
        return result
    return counted
