"""The event store contract: :class:`EventStore`, which every backend subclasses.

A backend implements four primitives (``_append``, ``_read_stream``,
``_read_all_page``, ``_find_events``) plus a few queries. The logic they share
is written once, with no I/O, beside this module: the contract's values in
:mod:`eskit.stores.model`, argument checks and append decisions in
:mod:`eskit.stores.arguments`, row decoding in :mod:`eskit.stores.rows`.

Guarantees every store gives (checked by :mod:`eskit.testing.contract`):

* **Optimistic concurrency.** An append names the version it expects the stream
  to be at; if the stream has moved, :class:`~eskit.errors.ConcurrencyError` is
  raised and nothing is written.
* **Atomic batches.** The events of one append are stored all together, at
  consecutive versions, or not at all.
* **Idempotent retries.** Appending the same events (same event ids, types and
  data; data compared with the keys of its objects sorted, see
  :func:`same_payload`) again at the same place succeeds without storing them
  twice; the result says ``duplicate=True``. As in KurrentDB, "the same place" means every event
  of the batch is already stored, consecutively, where this append would have put
  it, so retrying a consecutive part of an earlier batch is also accepted. A batch
  that mixes stored and new events, an id reused elsewhere, or an id reused for a
  different event is a :class:`~eskit.errors.DuplicateEventError`. (Stores written
  for the seed API only detect ids already in the same stream.)
* **A stable global order.** Every stored event gets a ``position``;
  :meth:`EventStore.read_all` returns events by increasing position, and an
  event visible at some position never moves and is never preceded later by a
  newly visible event. Positions may have gaps.
* **Append only.** Nothing in this API updates an event; the one path that
  removes events is :meth:`EventStore.delete_stream` with ``hard=True``, which
  leaves a tombstone, and :meth:`EventStore.truncate_stream`, which removes a
  stream's oldest events (see docs/storage.md, "Deleting streams and retention").

What is *not* guaranteed: timestamps are informative and may go backwards along
positions (clocks move); positions are not dense (a failed append may use up
numbers); positions are comparable only within one store.

Every store accepts the same input, checked here before any I/O: names (stream
ids, event types, metadata keys) of valid Unicode up to
:data:`~eskit.events.MAX_NAME_BYTES` bytes of UTF-8; versions from 0 to
``2**63 - 1``; positions from 0 to ``2**128 - 1``; any limit >= 0.
"""

from __future__ import annotations

import threading
import time
from abc import ABC
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, overload
from uuid import UUID

from eskit.dcb import (
    AppendCondition,
    Query,
    ReadResult,
    check_condition,
    check_query,
    read_result,
)
from eskit.errors import DecodingError, InvalidInputError
from eskit.events import (
    Event,
    EventRegistry,
    StreamId,
    default_registry,
)
from eskit.observability import _hooks
from eskit.stores.arguments import (
    WAIT_FOR_FIRST_DELAY,
    WAIT_FOR_MAX_DELAY,
    StreamPages,
    check_as_of,
    check_event_id,
    check_expected,
    check_limit,
    check_position,
    check_read_stream_args,
    check_wait_for_args,
    expected_matches,
    prepare_batch,
    resolve_conflict,
    stream_key,
    version_at_by_paging,
)
from eskit.stores.filtered import (
    FilteredPage,
    ReadFilter,
    cut_page,
    finished_page,
    read_filter,
    report_undecodable,
    take_matching,
)
from eskit.stores.model import (
    ANY,
    DEFAULT_MAX_EVENT_BYTES,
    READ_ALL_PAGE_SIZE,
    AppendInput,
    AppendResult,
    Expected,
    PendingEvent,
    StreamAppend,
    StreamInfo,
)
from eskit.stores.multi import PreparedAppend, observed, prepare_appends
from eskit.stores.rows import (
    OnUndecodable,
    UndecodableEvent,
    check_on_undecodable,
    iter_tolerant,
)
from eskit.stores.stream_listing import check_listing_args, page_of_streams
from eskit.stores.truncation import check_truncate_args
from eskit.subscription import PollingWaiter, Subscription, Waiter

__all__ = ["EventStore"]


# --------------------------------------------------------------------------- wake-ups

_WAITERS_LOCK = threading.Lock()


class _LocalWaiter(PollingWaiter):
    """Woken by appends through the same store object; polls for everything else."""

    def __init__(self, store: EventStore) -> None:
        super().__init__()
        self._store = store

    def close(self) -> None:
        super().close()
        self._store._forget_waiter(self)


# --------------------------------------------------------------------------- the contract


# No @abstractmethod: a seed-style subclass implements save_events/get_events, a
# modern backend the underscore primitives; either is enough (see _implements).
class EventStore(ABC):  # noqa: B024
    """An append-only event store with optimistic locking.

    The modern API is :meth:`append`, :meth:`read_stream`, :meth:`read_all`,
    :meth:`head_version`; the seed tutorial's :meth:`save_events` and
    :meth:`get_events` are thin wrappers over it. A class written for the seed
    tutorial that overrides only ``save_events`` and ``get_events`` still works
    with :class:`~eskit.Repository`: the modern methods then call those.
    """

    registry: EventRegistry = default_registry
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    db_system: str = "other_sql"
    """OpenTelemetry's ``db.system.name`` for this store's spans and metrics."""

    # -- the modern API ---------------------------------------------------------------

    def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` if the stream is at ``expected_version``.

        ``expected_version`` is an exact version (``0`` means the stream has no
        events yet), or :data:`ANY`, :data:`NO_STREAM`, :data:`STREAM_EXISTS`.
        The batch is stored whole or not at all. Raises
        :class:`~eskit.errors.ConcurrencyError` if the stream has moved,
        :class:`~eskit.errors.DuplicateEventError` if an event id is stored
        elsewhere, :class:`~eskit.errors.InvalidInputError` for bad input; in
        each case nothing is written.

        ``condition`` (an :class:`~eskit.AppendCondition`, see :mod:`eskit.dcb`):
        the append also requires that no event matching the condition's query is
        stored after its ``after`` position, checked atomically with the insert;
        else :class:`~eskit.AppendConditionFailed` and nothing is written. Both the
        condition and ``expected_version`` must hold. A retry of a conditional
        append that was stored (same event ids) returns ``duplicate=True``.
        """
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        batch = prepare_batch(
            stream, events, registry=self.registry, max_event_bytes=self.max_event_bytes
        )
        return self._append_prepared(stream_id, stream, expected, batch, condition)

    def _accepts_prepared(self) -> bool:
        """Whether :meth:`_append_prepared` and :meth:`_append_many_prepared` do what
        ``append`` and ``append_many`` do (internal): so unless a subclass overrides those."""
        cls = type(self)
        return cls.append is EventStore.append and cls.append_many is EventStore.append_many

    def _append_prepared(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition | None,
    ) -> AppendResult:
        """:meth:`append` after its checks: ``batch`` already validated and encoded
        (internal; for wrappers such as the protected store, which would otherwise
        encode every event twice). Only valid where ``append`` is not overridden."""
        if condition is not None:
            return self._append_with_condition(stream_id, stream, expected, batch, condition)
        if not self._implements("_append"):
            return self._append_via_seed_api(stream_id, batch, expected)
        if (observer := _hooks.active) is None:
            result = self._append(stream_id, stream, expected, batch)
        else:
            with observer.append(self, stream, batch):  # a span; its context into metadata
                result = self._append(stream_id, stream, expected, batch)
        if not result.duplicate:
            self._wake_waiters()
        return result

    def _append_with_condition(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition,
    ) -> AppendResult:
        if not self._implements("_append_if"):
            raise NotImplementedError(f"{type(self).__name__} does not support append conditions")
        if (observer := _hooks.active) is None:
            result = self._append_if(stream_id, stream, expected, batch, condition)
        else:
            with observer.append(self, stream, batch):
                result = self._append_if(stream_id, stream, expected, batch, condition)
        if not result.duplicate:
            self._wake_waiters()
        return result

    def read_events(
        self, query: Query, after: int = 0, limit: int | None = None
    ) -> ReadResult:
        """The events matching ``query`` with ``position > after``, in global order.

        Returns a :class:`~eskit.ReadResult`: the events (each with its ``tags``,
        upcast like every read) and the position the read is consistent with,
        to pass as ``AppendCondition(query, after=result.position)``. Queries match
        the *stored* event types and tags (an event type renamed by an alias is
        matched under its stored name). Events of deleted streams are left out,
        as in :meth:`read_all`. The whole result is held in memory: ``limit``
        bounds it.
        """
        check_query(query)
        check_position(after)
        check_limit(limit)
        if not self._implements("_read_events"):
            raise NotImplementedError(f"{type(self).__name__} does not support read_events")
        if limit == 0:
            return ReadResult((), after)
        events, head = self._read_events(query, after, limit)
        return read_result(events, head, after, limit, self.registry.upcast)

    def append_many(
        self, appends: Sequence[StreamAppend], *, condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        """Append to several streams in one transaction: all of them or none.

        ``appends`` is a non-empty list of :class:`~eskit.StreamAppend`, each stream
        named once and checked against its own ``expected_version``. Returns one
        :class:`AppendResult` per stream, in the order given; the events get
        increasing positions in that order. Raises
        :class:`~eskit.MultiStreamConcurrencyError` (a ``ConcurrencyError``) naming
        every stream that moved, :class:`~eskit.DuplicateEventError` as ``append``
        does, :class:`~eskit.InvalidInputError` for bad input (before any I/O); in
        each case nothing is written. Repeating a stored call (same event ids)
        writes nothing and returns its results with ``duplicate=True``.

        ``condition`` (an :class:`~eskit.AppendCondition`, see :mod:`eskit.dcb`): the
        whole call also requires that no event matching the condition's query was
        stored after its ``after`` position, checked atomically with the inserts;
        else :class:`~eskit.AppendConditionFailed` (``stream_id`` is the tuple of the
        call's streams) and nothing is written. Every stream's expectation is
        checked first: a stream that moved raises the
        ``MultiStreamConcurrencyError``, a stored retry returns its results.
        """
        check_condition(condition)
        prepared = prepare_appends(
            appends, registry=self.registry, max_event_bytes=self.max_event_bytes
        )
        return self._append_many_prepared(prepared, condition)

    def _append_many_prepared(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        """:meth:`append_many` after its checks (internal; as :meth:`_append_prepared`,
        for wrappers that encoded the batches already). Only valid where
        ``append_many`` is not overridden."""
        if condition is not None and not self._implements("_append_if"):
            raise NotImplementedError(f"{type(self).__name__} does not support append conditions")
        if (observer := _hooks.active) is None:
            results = self._append_many_checked(prepared, condition)
        else:  # one span for the call; its context into every event's metadata
            with observer.append(self, *observed(prepared)):
                results = self._append_many_checked(prepared, condition)
        if not results[0].duplicate:
            self._wake_waiters()
        return results

    def read_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Event]:
        """The events of one stream with ``from_version < version <= to_version``.

        ``from_version`` is exclusive, like the seed's ``get_events``: ``0``
        reads from the first event, and passing the version you already have
        reads only what came after it. ``to_version=None`` reads to the head.
        ``backwards=True`` returns the same range newest first; ``limit`` keeps
        that many events from the start of the returned order (any int >= 0; a
        limit beyond the stream's length reads it all). An unknown stream reads
        as empty.

        The stream is read in pages of 1,000 events, so only the returned list
        grows with the stream; :meth:`iter_stream` does not hold it either.
        """
        stream = stream_key(stream_id)
        if not check_read_stream_args(from_version, to_version, backwards, limit):
            return []
        if not self._implements("_read_stream"):
            events = [
                e for e in self.get_events(stream_id, from_version)
                if to_version is None or e.version <= to_version
            ]
            if backwards:
                events.reverse()
            return self.registry.upcast(events if limit is None else events[:limit])
        return list(
            self._iter_stream(stream_id, stream, from_version, to_version, backwards, limit)
        )

    def iter_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The events :meth:`read_stream` returns, fetched lazily in pages.

        Memory holds one page (1,000 events), however long the stream: use this
        to fold a long stream (repositories load aggregates page by page too).
        Bad arguments raise here, at the call. The pages are separate reads:
        events appended while iterating may be included at the end (never in
        the middle, never twice), like a later :meth:`read_stream`.
        """
        stream = stream_key(stream_id)
        if not check_read_stream_args(from_version, to_version, backwards, limit):
            return iter(())
        if not self._implements("_read_stream"):
            return iter(self.read_stream(
                stream_id, from_version, to_version, backwards=backwards, limit=limit
            ))
        return self._iter_stream(stream_id, stream, from_version, to_version, backwards, limit)

    def _iter_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> Iterator[Event]:
        pages = StreamPages(from_version, to_version, backwards, limit)
        while (args := pages.next()) is not None:
            page = self._read_stream(stream_id, stream, *args)
            pages.advance(page)
            yield from self.registry.upcast(page)

    @overload
    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: Literal["raise"] | Callable[[UndecodableEvent], object] = "raise",
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> Iterator[Event]: ...

    @overload
    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: Literal["yield"],
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> Iterator[Event | UndecodableEvent]: ...

    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: OnUndecodable = "raise",
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> Iterator[Any]:
        """Every event with ``position > from_position``, in global order.

        ``from_position`` is exclusive: pass the position of the last event you
        processed (a checkpoint) unchanged to continue after it. Events are
        fetched lazily in pages, so reading a large store keeps memory flat.
        The order is stable: events become visible only in increasing position
        order, so a reader that continues from its checkpoint never skips one.

        A stored event that cannot be decoded or upcast raises
        :class:`~eskit.errors.DecodingError` (naming its stream, version, type and
        position; ``error.position`` is where to resume to pass it). With
        ``on_undecodable="yield"`` it is yielded instead, in its place, as an
        :class:`UndecodableEvent`; with a function, that function is called with the
        placeholder and reading goes on. Either way the reader keeps its place.

        ``event_types`` (event type names) and ``stream_prefixes`` (stream-id
        prefixes, "categories" such as ``"order-"``) keep only the events whose
        type is one of the types *and* whose stream id starts with one of the
        prefixes, still in global order; ``limit`` then counts those. The filter
        runs in the database, on an index, so reading a rare type reads only its
        rows (see docs/subscriptions.md, "Filtered reads"). An empty list matches
        nothing; an empty string is refused (pass ``None`` for no restriction).
        Types are those of the events as read: an old name aliased to a wanted
        type is found too.
        """
        check_position(from_position)
        check_limit(limit)
        check_on_undecodable(on_undecodable)
        wanted = read_filter(event_types, stream_prefixes)
        if not self._implements("_read_all_page"):
            raise NotImplementedError(
                f"{type(self).__name__} implements only the seed API and has no global order"
            )
        if wanted is not None:
            return self._iter_filtered(from_position, limit, wanted, on_undecodable)
        if on_undecodable == "raise":
            return self._iter_all(from_position, limit)
        # Page by page without any store's read-ahead: readers that pass undecodable
        # events (runners, subscriptions) read at most one page per call anyway.
        return iter_tolerant(
            _hooks.page_reader(self, self._read_all_page), self.registry, from_position, limit,
            on_undecodable,
        )

    def _iter_all(self, after: int, limit: int | None) -> Iterator[Event]:
        remaining = limit
        read_page = _hooks.page_reader(self, self._read_all_page)
        while remaining is None or remaining > 0:
            size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
            page = read_page(after, size)
            yield from self.registry.upcast(page)
            if len(page) < size:
                return
            after = page[-1].position or after
            if remaining is not None:
                remaining -= len(page)

    def _iter_filtered(
        self, after: int, limit: int | None, wanted: ReadFilter, on_undecodable: OnUndecodable
    ) -> Iterator[Any]:
        remaining = limit
        tolerant = on_undecodable != "raise"
        while remaining is None or remaining > 0:
            size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
            items, after, more, count = self._filtered_page(after, size, wanted, tolerant)
            yield from report_undecodable(items, on_undecodable)
            if not more:
                return
            if remaining is not None:
                remaining -= count

    def _filtered_page(
        self, after: int, limit: int, wanted: ReadFilter, tolerant: bool
    ) -> FilteredPage:
        """One filtered page: ``(events as read, checkpoint, more may follow, stored rows)``.

        The events are upcast and tested against ``wanted`` (placeholders for
        undecodable ones when ``tolerant``, else a DecodingError). The checkpoint
        is where the next page starts: past every event this page examined, also
        those that did not match (see eskit.stores.filtered).
        """
        head = self._head_position()
        if head <= after or wanted.is_empty:
            return [], max(head, after), False, 0
        stored = wanted.stored(self.registry)
        read_page = _hooks.page_reader(
            self, lambda a, n: self._read_filtered_page(a, head, n, stored)
        )
        try:
            page: list[Any] = read_page(after, limit)
        except DecodingError as exc:
            return cut_page(self.registry, wanted, exc, after, tolerant)
        return finished_page(self.registry, wanted, page, limit, head, tolerant)

    def subscribe(
        self,
        from_position: int = 0,
        *,
        page_size: int = 500,
        poll_interval: float = 1.0,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
        on_undecodable: OnUndecodable = "raise",
    ) -> Subscription:
        """Every event after ``from_position``: history first, then live, until stopped.

        See :class:`~eskit.Subscription`. New events wake the subscription at once
        when the store can signal them (PostgreSQL LISTEN/NOTIFY, appends through
        this store object, and on a SQLite file any commit to it within about
        :data:`~eskit.subscription.SQLITE_CHECK_INTERVAL` seconds); otherwise it
        polls every ``poll_interval`` seconds.
        ``event_types`` and ``stream_prefixes`` keep only matching events; the
        checkpoint still moves past the others. ``on_undecodable`` is as for
        :meth:`read_all`.
        """
        return Subscription(
            self, from_position, page_size=page_size, poll_interval=poll_interval,
            event_types=event_types, stream_prefixes=stream_prefixes,
            on_undecodable=on_undecodable,
        )

    @property
    def _reads_ahead(self) -> bool:
        """Whether a projection runner should read its next page while it handles a
        batch (see eskit.projections.pages): reads wait on a server, and a pool gives
        the read-ahead a connection of its own. Not for in-process databases."""
        return False

    def _new_waiter(self) -> Waiter:
        """A waiter woken by appends through this object, polling otherwise."""
        waiter = _LocalWaiter(self)
        self._add_waiter(waiter)
        return waiter

    def _add_waiter(self, waiter: Waiter) -> None:
        """Have appends through this object call ``waiter.wake()`` (from the appending
        thread) until :meth:`_forget_waiter`; the async stores register theirs here."""
        with _WAITERS_LOCK:
            self.__dict__.setdefault("_waiters", set()).add(waiter)

    def _forget_waiter(self, waiter: Waiter) -> None:
        with _WAITERS_LOCK:
            self.__dict__.get("_waiters", set()).discard(waiter)

    def _wake_waiters(self) -> None:
        waiters = self.__dict__.get("_waiters")
        if waiters:
            with _WAITERS_LOCK:
                current = list(waiters)
            for waiter in current:
                waiter.wake()

    def head_version(self, stream_id: StreamId) -> int:
        """The version of the stream's last event; ``0`` if the stream has none."""
        stream = stream_key(stream_id)
        if not self._implements("_head_version"):
            events = self.get_events(stream_id)
            return events[-1].version if events else 0
        return self._head_version(stream)

    def version_at(self, stream_id: StreamId, as_of: datetime) -> int:
        """The version of the stream's last event recorded at or before ``as_of``; ``0`` if none.

        "Last" goes by version: this is the highest version whose timestamp is
        at or before ``as_of`` (timezone-aware, else
        :class:`~eskit.InvalidInputError`). Timestamps are informative and may
        go backwards along a stream when clocks move, so an earlier version may
        carry a later timestamp; it is still part of the state at this version.
        """
        stream = stream_key(stream_id)
        moment = check_as_of(as_of)
        if not self._implements("_version_at"):
            return version_at_by_paging(self.read_stream, stream_id, moment)
        return self._version_at(stream, moment)

    def head_position(self) -> int:
        """The position of the newest visible event in the store; ``0`` if empty."""
        return self._head_position()

    def wait_for(self, position: int, timeout: float = 10.0) -> bool:
        """Wait until :meth:`read_all` returns the event at ``position``: read your writes.

        Pass the ``position`` of an :meth:`append` result (or of an event). Returns
        ``True`` as soon as :meth:`head_position` has reached it, so every reader
        of this store that starts now gets the event (a PostgreSQL reader can lag
        behind a commit while an older append is still open; see
        docs/postgres.md), and ``False`` if ``timeout`` seconds pass first. It
        polls, with pauses growing from 1 ms to 50 ms; it does not say whether
        an event exists at ``position``.
        """
        limit = check_wait_for_args(position, timeout)
        deadline = time.monotonic() + limit
        delay = WAIT_FOR_FIRST_DELAY
        while self.head_position() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, WAIT_FOR_MAX_DELAY)
        return True

    def list_streams(self) -> list[StreamInfo]:
        """Every stream in the store, in order of its first event (deleted ones left out)."""
        return self._list_streams()

    def list_streams_page(
        self, prefix: str = "", after: StreamId | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Up to ``limit`` streams whose id starts with ``prefix``, ordered by id, after ``after``.

        Pass the last stream id of a page as ``after`` to get the next one: a cursor,
        not an offset, so page 1,000 costs what page 1 does, and a page does not shift
        when streams are created before it. Ids compare in code-point order of their
        text (a UUID id as its canonical text). Deleted streams are left out, as in
        :meth:`list_streams`; each :class:`StreamInfo` is the one it would list.

        Not guaranteed: one snapshot across pages. A stream created behind the cursor
        while paging is not seen; one created ahead of it is.
        SQLite reads a range of its (stream id, version) index. PostgreSQL needs an
        index on ``stream_id COLLATE "C"`` for that (the category index of filtered
        reads); without one the query sorts every row, which costs about a second
        per million events. The in-memory store sorts its stream list.
        """
        checked = check_listing_args(prefix, after, limit)
        if checked[2] == 0:
            return []
        return self._list_streams_page(*checked)

    def locate_event(self, event_id: UUID | str) -> tuple[StreamId, int] | None:
        """Where the stored event with this id is: ``(stream id, version)``, or ``None``.

        ``None`` also for an event of a deleted stream (hidden, like every read of
        it). The event itself is one :meth:`read_stream` away (``version - 1`` to
        ``version``), read and upcast as every read is. SQLite and PostgreSQL look
        the id up in their unique index on event ids; a store without one of its own
        reads :meth:`read_all` until it finds the id.
        """
        return self._locate_event(check_event_id(event_id))

    def delete_stream(
        self, stream_id: StreamId, expected_version: Expected = ANY, *, hard: bool = False
    ) -> int:
        """Delete a stream; returns the version it had. Like KurrentDB's delete.

        Soft (``hard=False``): the events stay stored but are hidden: the stream
        reads as empty (:meth:`read_stream`, :meth:`head_version` 0) and is left out
        of :meth:`read_all`, subscriptions and :meth:`list_streams`, until
        :meth:`restore_stream` brings it back unchanged. Appending to it raises
        :class:`~eskit.StreamDeletedError` (``hard=False``): restore it first. Unlike
        KurrentDB an append never undeletes silently.

        Hard: the events are removed and a tombstone kept; every later append to
        the stream id raises :class:`~eskit.StreamDeletedError`, also a retry of
        events it held (never a "duplicate"), and it cannot be restored. Their
        positions stay holes in the global order that readers pass over.

        ``expected_version`` is checked against the stream's stored head
        (:class:`~eskit.ConcurrencyError` if it moved; nothing is deleted). Deleting
        again is a no-op, and so is a soft delete of a hard-deleted stream.
        """
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        if type(hard) is not bool:
            raise InvalidInputError("hard must be True or False")
        result = self._delete_stream(stream_id, stream, expected, hard)
        self._wake_waiters()
        return result

    def truncate_stream(
        self, stream_id: StreamId, before_version: int, *, expected_version: Expected = ANY,
        force: bool = False,
    ) -> int:
        """Remove the stream's events below ``before_version``; returns how many went.

        The newest event always stays (a ``before_version`` above the head removes
        all but it), so the stream keeps its head version: reads return the
        remaining events, appends go on at head + 1, and the removed positions are
        holes in the global order that readers and subscriptions pass over. The
        removed event ids are forgotten, as a hard delete's are: a retry of a
        removed event with ``expected_version=ANY`` would store it again (a retry
        that names the version it expected gets a ConcurrencyError instead).

        Unless ``force=True``, the stream must have a snapshot (in the store's own
        snapshot table; for the in-memory store, in an InMemorySnapshotStore beside
        it) at or above the first version kept, else
        :class:`~eskit.TruncationRefusedError`: the repository then loads the
        aggregate from that snapshot with the same state. Snapshots below the cut
        are removed with the events. Loading a truncated stream without a usable
        snapshot raises :class:`~eskit.StreamTruncatedError`, never a partial state.

        ``expected_version`` is checked against the stream's head
        (:class:`~eskit.ConcurrencyError` if it moved; nothing removed). Truncating
        as far again is a no-op (0). A deleted stream raises
        :class:`~eskit.StreamDeletedError`. One transaction: all or nothing.
        """
        stream = stream_key(stream_id)
        before = check_truncate_args(before_version, force)
        expected = check_expected(expected_version)
        removed = self._truncate_stream(stream_id, stream, before, expected, force)
        self._wake_waiters()
        return removed

    def restore_stream(self, stream_id: StreamId) -> bool:
        """Undo a soft :meth:`delete_stream`: the stream reads as before, its events
        back in their places in the global order. ``True`` if it was soft-deleted,
        ``False`` if it was not deleted. A hard-deleted stream raises
        :class:`~eskit.StreamDeletedError`. Not guaranteed: a subscription that
        passed the events while they were hidden does not go back for them.
        """
        stream = stream_key(stream_id)
        return self._restore_stream(stream_id, stream)

    def close(self) -> None:  # noqa: B027 - stores without connections need not override
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the seed tutorial's API ------------------------------------------------------

    def save_events(
        self, aggregate_id: StreamId, events: Sequence[AppendInput], expected_version: int
    ) -> AppendResult:
        """Save events for an aggregate with optimistic locking (seed API).

        Raises :class:`~eskit.errors.ConcurrencyError`, a ``ValueError``, when
        the aggregate's stream is not at ``expected_version``.
        """
        return self.append(aggregate_id, events, expected_version)

    def get_events(self, aggregate_id: StreamId, from_version: int = 0) -> list[Event]:
        """The aggregate's events after ``from_version`` (seed API)."""
        if not self._implements("_read_stream"):
            raise NotImplementedError(
                f"{type(self).__name__} must implement get_events or the modern API"
            )
        return self.read_stream(aggregate_id, from_version)

    # -- what a backend implements ----------------------------------------------------

    def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        raise NotImplementedError

    def _append_many_checked(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None
    ) -> list[AppendResult]:
        # Without a condition the hook is called as it always was, so a backend
        # written before conditions existed still works for plain calls.
        if condition is None:
            return self._append_many(prepared)
        return self._append_many(prepared, condition)

    def _append_many(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        # No fallback that appends stream by stream: it would not be atomic.
        raise NotImplementedError(
            f"{type(self).__name__} cannot append to several streams in one transaction"
        )

    def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        raise NotImplementedError

    def _append_if(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition,
    ) -> AppendResult:
        """An append that also requires the condition, checked atomically (eskit.dcb)."""
        raise NotImplementedError

    def _read_events(
        self, query: Query, after: int, limit: int | None
    ) -> tuple[list[Event], int]:
        """``(events, head)``: the matching events after ``after`` up to ``limit``, with
        their tags, all at or before ``head``, a position at which the store was
        settled (no event can later appear at or before it)."""
        raise NotImplementedError

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        raise NotImplementedError

    def _read_filtered_page(
        self, after: int, upto: int, limit: int, wanted: ReadFilter
    ) -> list[Event]:
        """Up to ``limit`` stored events matching ``wanted`` (by stored type and stream
        id) with ``after < position <= upto``, in order. Stores override this with a
        query on their indexes; this fallback pages through ``_read_all_page``."""
        found: list[Event] = []
        while len(found) < limit:
            page = self._read_all_page(after, READ_ALL_PAGE_SIZE)
            if take_matching(found, page, upto, wanted, limit) or len(page) < READ_ALL_PAGE_SIZE:
                break
            after = page[-1].position or after
        return found

    def _head_version(self, stream: str) -> int:
        raise NotImplementedError

    def _version_at(self, stream: str, as_of: datetime) -> int:
        raise NotImplementedError

    def _head_position(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} has no global order")

    def _list_streams(self) -> list[StreamInfo]:
        raise NotImplementedError(f"{type(self).__name__} cannot list streams")

    def _locate_event(self, event_id: UUID) -> tuple[StreamId, int] | None:
        for event in self.read_all(on_undecodable="yield"):
            if event.event_id == event_id:
                return event.aggregate_id, event.version
        return None

    def _list_streams_page(self, prefix: str, after: str | None, limit: int) -> list[StreamInfo]:
        # Stores without an index of their own cut the page from the whole list.
        return page_of_streams(self._list_streams(), prefix, after, limit)

    def _delete_stream(self, stream_id: StreamId, stream: str, expected: Expected,
                       hard: bool) -> int:
        raise NotImplementedError(f"{type(self).__name__} cannot delete streams")

    def _restore_stream(self, stream_id: StreamId, stream: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} cannot restore streams")

    def _truncate_stream(self, stream_id: StreamId, stream: str, before: int,
                         expected: Expected, force: bool) -> int:
        raise NotImplementedError(f"{type(self).__name__} cannot truncate streams")

    # -- compatibility with seed-style subclasses --------------------------------------

    def _implements(self, name: str) -> bool:
        return getattr(type(self), name) is not getattr(EventStore, name)

    def _append_via_seed_api(
        self, stream_id: StreamId, batch: list[PendingEvent], expected: Expected
    ) -> AppendResult:
        if not self._implements("save_events"):
            raise NotImplementedError(
                f"{type(self).__name__} must implement save_events or the modern API"
            )
        stored = self.get_events(stream_id)
        head = stored[-1].version if stored else 0
        ids = {p.event_id for p in batch}
        found = {e.event_id: e for e in stored if e.event_id in ids}
        if found or not expected_matches(expected, head):
            return resolve_conflict(stream_id, stream_key(stream_id), expected, head, batch, found)
        events = [p.recorded(stream_id, head + i + 1, 0) for i, p in enumerate(batch)]
        self.save_events(stream_id, events, head)
        return AppendResult(stream_id, head + len(events), 0, tuple(events))
