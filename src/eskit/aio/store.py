"""The asyncio event store contract: the same store, awaited.

:class:`AsyncEventStore` is :class:`eskit.EventStore` with ``async`` methods. It
gives exactly the same guarantees (optimistic concurrency, atomic batches,
idempotent retries, a stable global order, append only; see
:mod:`eskit.stores.base`) and passes the same contract suite, through a sync
facade in eskit's tests.

Only I/O differs between the two front ends. Argument checks, encoding,
expected-version logic and retry detection are the pure functions of
:mod:`eskit.stores.base` (``stream_key``, ``check_expected``, ``prepare_batch``,
``check_version_arg``, ``check_position``, ``check_limit``,
``resolve_conflict``), called here exactly as the sync base calls them, so the
same bad input raises the same error, before anything is awaited.

A backend implements six ``async`` primitives (``_append``, ``_read_stream``,
``_read_all_page``, ``_head_version``, ``_head_position``, ``_list_streams``)
with the same meaning as the sync ones. The in-memory and SQLite stores go
further: they wrap the sync store and call its public methods, so for them
even the order of the checks is the sync store's own code.

Not guaranteed: a store is bound to the event loop it was opened in (the
PostgreSQL pool belongs to that loop); share it between tasks of that loop,
not between loops or threads. Cancelling an ``append`` after it was sent leaves
it either fully stored or not stored at all; retry it with the same events (same
event ids) to find out which, the retry is recognised and returns
``duplicate=True``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, overload
from uuid import UUID

from eskit.aio.subscription import AsyncPollingWaiter, AsyncSubscription, AsyncWaiter
from eskit.dcb import (
    AppendCondition,
    Query,
    ReadResult,
    check_condition,
    check_query,
    read_result,
)
from eskit.errors import DecodingError, InvalidInputError
from eskit.events import Event, EventRegistry, StreamId, default_registry
from eskit.observability import _hooks
from eskit.stores.arguments import (
    VERSION_AT_PAGE,
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
    prepare_batch,
    stream_key,
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
    tolerant_items,
    undecodable_page,
)
from eskit.stores.stream_listing import check_listing_args, page_of_streams
from eskit.stores.truncation import check_truncate_args

__all__ = ["AsyncEventStore"]


class AsyncEventStore(ABC):
    """An append-only event store with optimistic locking, for asyncio.

    The methods mirror :class:`eskit.EventStore` one for one; read that class
    for the full contract. ``read_all`` returns an async iterator (use
    ``async for``); everything else is awaited.
    """

    registry: EventRegistry = default_registry
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    db_system: str = "other_sql"
    """OpenTelemetry's ``db.system.name`` for this store's spans and metrics."""

    # -- the modern API ---------------------------------------------------------------

    async def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` if the stream is at ``expected_version``.

        Same contract as :meth:`eskit.EventStore.append`: the batch is stored
        whole or not at all; :class:`~eskit.ConcurrencyError` if the stream has
        moved, :class:`~eskit.DuplicateEventError` if an event id is stored
        elsewhere, :class:`~eskit.InvalidInputError` for bad input (raised
        before any I/O). Repeating the same events at the same place returns
        the first result with ``duplicate=True``. ``condition``: as for the sync
        store, see :mod:`eskit.dcb` (:class:`~eskit.AppendConditionFailed`).
        """
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        batch = prepare_batch(
            stream, events, registry=self.registry, max_event_bytes=self.max_event_bytes
        )
        return await self._append_prepared(stream_id, stream, expected, batch, condition)

    def _accepts_prepared(self) -> bool:
        """As :meth:`eskit.EventStore._accepts_prepared` (internal)."""
        cls = type(self)
        return (cls.append is AsyncEventStore.append
                and cls.append_many is AsyncEventStore.append_many)

    async def _append_prepared(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition | None,
    ) -> AppendResult:
        """:meth:`append` after its checks: ``batch`` already validated and encoded
        (internal; for wrappers such as the protected store, which would otherwise
        encode every event twice). Only valid where ``append`` is not overridden."""
        if condition is not None:
            if (observer := _hooks.active) is None:
                return await self._append_if(stream_id, stream, expected, batch, condition)
            with observer.append(self, stream, batch):
                return await self._append_if(stream_id, stream, expected, batch, condition)
        if (observer := _hooks.active) is None:
            return await self._append(stream_id, stream, expected, batch)
        with observer.append(self, stream, batch):  # a span; its context into metadata
            return await self._append(stream_id, stream, expected, batch)

    async def read_events(
        self, query: Query, after: int = 0, limit: int | None = None
    ) -> ReadResult:
        """The events matching ``query`` after ``after``, and the position the read is
        consistent with: see :meth:`eskit.EventStore.read_events`."""
        check_query(query)
        check_position(after)
        check_limit(limit)
        if limit == 0:
            return ReadResult((), after)
        events, head = await self._read_events(query, after, limit)
        return read_result(events, head, after, limit, self.registry.upcast)

    async def append_many(
        self, appends: Sequence[StreamAppend], *, condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        """Append to several streams in one transaction: all of them or none.

        Same contract as :meth:`eskit.EventStore.append_many`: one result per
        stream in the order given, :class:`~eskit.MultiStreamConcurrencyError`
        naming every stream that moved, bad input refused before anything is
        awaited, and a repeated call returns its results with ``duplicate=True``;
        ``condition`` as there (:class:`~eskit.AppendConditionFailed`).
        """
        check_condition(condition)
        prepared = prepare_appends(
            appends, registry=self.registry, max_event_bytes=self.max_event_bytes
        )
        return await self._append_many_prepared(prepared, condition)

    async def _append_many_prepared(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        """:meth:`append_many` after its checks (internal; for wrappers that encoded
        the batches already). Only valid where ``append_many`` is not overridden."""
        if (observer := _hooks.active) is None:
            return await self._append_many_checked(prepared, condition)
        with observer.append(self, *observed(prepared)):  # one span; its context into metadata
            return await self._append_many_checked(prepared, condition)

    async def _append_many_checked(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None
    ) -> list[AppendResult]:
        if condition is None:  # the hook as it always was called (see the sync store)
            return await self._append_many(prepared)
        return await self._append_many(prepared, condition)

    async def read_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Event]:
        """The events of one stream with ``from_version < version <= to_version``.

        Same contract as :meth:`eskit.EventStore.read_stream`: ``from_version``
        is exclusive, ``to_version=None`` reads to the head, ``backwards=True``
        returns newest first, ``limit`` keeps that many from the start of the
        returned order; an unknown stream reads as empty. Read in pages of
        1,000 events, like the sync store.
        """
        stream = stream_key(stream_id)
        if not check_read_stream_args(from_version, to_version, backwards, limit):
            return []
        return [
            event async for event in self._iter_stream(
                stream_id, stream, from_version, to_version, backwards, limit
            )
        ]

    def iter_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[Event]:
        """The events :meth:`read_stream` returns, fetched lazily in pages (``async for``).

        Same contract as :meth:`eskit.EventStore.iter_stream`: one page (1,000
        events) in memory at a time; bad arguments raise here, at the call.
        """
        stream = stream_key(stream_id)
        if not check_read_stream_args(from_version, to_version, backwards, limit):
            return _no_events()
        return self._iter_stream(stream_id, stream, from_version, to_version, backwards, limit)

    async def _iter_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> AsyncIterator[Event]:
        # The paging decision is the sync store's (StreamPages); only the reads are awaited.
        pages = StreamPages(from_version, to_version, backwards, limit)
        while (args := pages.next()) is not None:
            page = await self._read_stream(stream_id, stream, *args)
            pages.advance(page)
            for event in self.registry.upcast(page):
                yield event

    @overload
    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: Literal["raise"] | Callable[[UndecodableEvent], object] = "raise",
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> AsyncIterator[Event]: ...

    @overload
    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: Literal["yield"],
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> AsyncIterator[Event | UndecodableEvent]: ...

    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: OnUndecodable = "raise",
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> AsyncIterator[Any]:
        """Every event with ``position > from_position``, in global order (``async for``).

        Same contract as :meth:`eskit.EventStore.read_all`: ``from_position`` is
        exclusive (pass a checkpoint back unchanged), pages are fetched lazily
        as the loop advances, and the order is stable, so a reader continuing
        from its checkpoint never skips an event. Bad arguments raise here, at
        the call, not at the first iteration. ``on_undecodable`` is the same too
        (a callback is a plain function, called without awaiting), and so are
        ``event_types`` and ``stream_prefixes``, filtered in the database.
        """
        check_position(from_position)
        check_limit(limit)
        check_on_undecodable(on_undecodable)
        wanted = read_filter(event_types, stream_prefixes)
        if wanted is not None:
            return self._iter_filtered(from_position, limit, wanted, on_undecodable)
        if on_undecodable == "raise":
            return self._iter_all(from_position, limit)
        return self._iter_tolerant(from_position, limit, on_undecodable)

    async def _iter_tolerant(
        self, after: int, limit: int | None, on_undecodable: OnUndecodable
    ) -> AsyncIterator[Any]:
        # eskit.stores.rows.iter_tolerant with an awaited page read: the same decisions.
        remaining = limit
        read_page = _hooks.async_page_reader(self, self._read_all_page)
        while remaining is None or remaining > 0:
            size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
            try:
                page: list[Event | UndecodableEvent] = list(await read_page(after, size))
                more = len(page) == size
            except DecodingError as exc:
                cut = undecodable_page(exc)
                if cut is None:
                    raise
                page, more = cut, True
            for item in tolerant_items(self.registry, page, on_undecodable):
                yield item
            if not more:
                return
            after = page[-1].position or after
            if remaining is not None:
                remaining -= len(page)

    async def _iter_all(self, after: int, limit: int | None) -> AsyncIterator[Event]:
        # Same paging as EventStore._iter_all: continue after the last position seen,
        # stop at the first short page.
        remaining = limit
        read_page = _hooks.async_page_reader(self, self._read_all_page)
        while remaining is None or remaining > 0:
            size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
            page = await read_page(after, size)
            for event in self.registry.upcast(page):
                yield event
            if len(page) < size:
                return
            after = page[-1].position or after
            if remaining is not None:
                remaining -= len(page)

    async def _iter_filtered(
        self, after: int, limit: int | None, wanted: ReadFilter, on_undecodable: OnUndecodable
    ) -> AsyncIterator[Any]:
        # EventStore._iter_filtered with awaited pages: the same decisions.
        remaining = limit
        tolerant = on_undecodable != "raise"
        while remaining is None or remaining > 0:
            size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
            items, after, more, count = await self._filtered_page(after, size, wanted, tolerant)
            for item in report_undecodable(items, on_undecodable):
                yield item
            if not more:
                return
            if remaining is not None:
                remaining -= count

    async def _filtered_page(
        self, after: int, limit: int, wanted: ReadFilter, tolerant: bool
    ) -> FilteredPage:
        """:meth:`eskit.EventStore._filtered_page`, awaited."""
        head = await self._head_position()
        if head <= after or wanted.is_empty:
            return [], max(head, after), False, 0
        stored = wanted.stored(self.registry)

        async def read(a: int, n: int) -> list[Event]:
            return await self._read_filtered_page(a, head, n, stored)

        try:
            page: list[Any] = await _hooks.async_page_reader(self, read)(after, limit)
        except DecodingError as exc:
            return cut_page(self.registry, wanted, exc, after, tolerant)
        return finished_page(self.registry, wanted, page, limit, head, tolerant)

    async def _read_filtered_page(
        self, after: int, upto: int, limit: int, wanted: ReadFilter
    ) -> list[Event]:
        """See :meth:`eskit.EventStore._read_filtered_page`; this fallback pages
        through ``_read_all_page`` and tests each event."""
        found: list[Event] = []
        while len(found) < limit:
            page = await self._read_all_page(after, READ_ALL_PAGE_SIZE)
            if take_matching(found, page, upto, wanted, limit) or len(page) < READ_ALL_PAGE_SIZE:
                break
            after = page[-1].position or after
        return found

    def subscribe(
        self,
        from_position: int = 0,
        *,
        page_size: int = 500,
        poll_interval: float = 1.0,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
        on_undecodable: OnUndecodable = "raise",
    ) -> AsyncSubscription:
        """Every event after ``from_position``: history first, then live, until stopped.

        Same contract as :meth:`eskit.EventStore.subscribe`; see
        :class:`~eskit.aio.AsyncSubscription` (``async for event in
        store.subscribe(): ...``). New events wake it at once when the store can
        signal them (PostgreSQL LISTEN/NOTIFY; appends through this store object;
        SQLite commits by other processes within about 50 ms); otherwise it polls
        every ``poll_interval`` seconds. Bad arguments raise here, before any I/O.
        """
        return AsyncSubscription(
            self, from_position, page_size=page_size, poll_interval=poll_interval,
            event_types=event_types, stream_prefixes=stream_prefixes,
            on_undecodable=on_undecodable,
        )

    @property
    def _reads_ahead(self) -> bool:
        """As :attr:`eskit.EventStore._reads_ahead`: whether a projection runner should
        read its next page while it handles a batch (eskit.projections.pages)."""
        return False

    async def _new_waiter(self) -> AsyncWaiter:
        """What a subscription waits on between reads; a store that can signal overrides it."""
        return AsyncPollingWaiter()

    async def head_version(self, stream_id: StreamId) -> int:
        """The version of the stream's last event; ``0`` if the stream has none."""
        return await self._head_version(stream_key(stream_id))

    async def version_at(self, stream_id: StreamId, as_of: datetime) -> int:
        """The version of the stream's last event recorded at or before ``as_of``; ``0`` if none.

        Same contract as :meth:`eskit.EventStore.version_at`: the highest
        version whose timestamp is at or before ``as_of`` (timezone-aware).
        """
        stream = stream_key(stream_id)
        moment = check_as_of(as_of)
        return await self._version_at(stream, moment)

    async def head_position(self) -> int:
        """The position of the newest visible event in the store; ``0`` if empty."""
        return await self._head_position()

    async def wait_for(self, position: int, timeout: float = 10.0) -> bool:
        """Wait until :meth:`read_all` returns the event at ``position``: read your writes.

        Same contract as :meth:`eskit.EventStore.wait_for`: ``True`` as soon as
        :meth:`head_position` has reached ``position``, ``False`` after
        ``timeout`` seconds; polls without blocking the loop.
        """
        limit = check_wait_for_args(position, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        delay = WAIT_FOR_FIRST_DELAY
        while await self.head_position() < position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(2 * delay, WAIT_FOR_MAX_DELAY)
        return True

    async def list_streams(self) -> list[StreamInfo]:
        """Every stream in the store, in order of its first event."""
        return await self._list_streams()

    async def locate_event(self, event_id: UUID | str) -> tuple[StreamId, int] | None:
        """Where the stored event with this id is: ``(stream id, version)``, or ``None``.
        As :meth:`eskit.EventStore.locate_event`."""
        return await self._locate_event(check_event_id(event_id))

    async def list_streams_page(
        self, prefix: str = "", after: StreamId | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Up to ``limit`` streams whose id starts with ``prefix``, ordered by id, after
        ``after`` (a cursor). As :meth:`eskit.EventStore.list_streams_page`."""
        checked = check_listing_args(prefix, after, limit)
        if checked[2] == 0:
            return []
        return await self._list_streams_page(*checked)

    async def delete_stream(
        self, stream_id: StreamId, expected_version: Expected = ANY, *, hard: bool = False
    ) -> int:
        """Delete a stream (soft: hidden, restorable; hard: a tombstone); returns the
        version it had. As :meth:`eskit.EventStore.delete_stream`."""
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        if type(hard) is not bool:
            raise InvalidInputError("hard must be True or False")
        return await self._delete_stream(stream_id, stream, expected, hard)

    async def restore_stream(self, stream_id: StreamId) -> bool:
        """Undo a soft delete. As :meth:`eskit.EventStore.restore_stream`."""
        return await self._restore_stream(stream_id, stream_key(stream_id))

    async def truncate_stream(
        self, stream_id: StreamId, before_version: int, *, expected_version: Expected = ANY,
        force: bool = False,
    ) -> int:
        """Remove the stream's events below ``before_version`` (the newest stays);
        returns how many went. As :meth:`eskit.EventStore.truncate_stream`."""
        stream = stream_key(stream_id)
        before = check_truncate_args(before_version, force)
        expected = check_expected(expected_version)
        return await self._truncate_stream(stream_id, stream, before, expected, force)

    async def _delete_stream(self, stream_id: StreamId, stream: str, expected: Expected,
                             hard: bool) -> int:
        raise NotImplementedError(f"{type(self).__name__} cannot delete streams")

    async def _restore_stream(self, stream_id: StreamId, stream: str) -> bool:
        raise NotImplementedError(f"{type(self).__name__} cannot restore streams")

    async def _truncate_stream(self, stream_id: StreamId, stream: str, before: int,
                               expected: Expected, force: bool) -> int:
        raise NotImplementedError(f"{type(self).__name__} cannot truncate streams")

    async def close(self) -> None:  # noqa: B027 - stores without connections need not override
        """Release connections. The store must not be used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the seed tutorial's API ------------------------------------------------------

    async def save_events(
        self, aggregate_id: StreamId, events: Sequence[AppendInput], expected_version: int
    ) -> AppendResult:
        """Save events for an aggregate with optimistic locking (seed API name).

        Raises :class:`~eskit.ConcurrencyError`, a ``ValueError``, when the
        aggregate's stream is not at ``expected_version``.
        """
        return await self.append(aggregate_id, events, expected_version)

    async def get_events(self, aggregate_id: StreamId, from_version: int = 0) -> list[Event]:
        """The aggregate's events after ``from_version`` (seed API name)."""
        return await self.read_stream(aggregate_id, from_version)

    # -- what a backend implements ----------------------------------------------------

    @abstractmethod
    async def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult: ...

    async def _append_many(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        # No fallback that appends stream by stream: it would not be atomic.
        raise NotImplementedError(
            f"{type(self).__name__} cannot append to several streams in one transaction"
        )

    @abstractmethod
    async def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]: ...

    @abstractmethod
    async def _read_all_page(self, after: int, limit: int) -> list[Event]: ...

    async def _append_if(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition,
    ) -> AppendResult:
        raise NotImplementedError(f"{type(self).__name__} does not support append conditions")

    async def _read_events(
        self, query: Query, after: int, limit: int | None
    ) -> tuple[list[Event], int]:
        raise NotImplementedError(f"{type(self).__name__} does not support read_events")

    @abstractmethod
    async def _head_version(self, stream: str) -> int: ...

    async def _version_at(self, stream: str, as_of: datetime) -> int:
        # Stores without a query of their own page back from the head, like the sync base.
        to_version: int | None = None
        while True:
            page = await self.read_stream(
                stream, 0, to_version, backwards=True, limit=VERSION_AT_PAGE
            )
            for event in page:
                if event.timestamp <= as_of:
                    return event.version
            if len(page) < VERSION_AT_PAGE:
                return 0
            to_version = page[-1].version - 1

    @abstractmethod
    async def _head_position(self) -> int: ...

    @abstractmethod
    async def _list_streams(self) -> list[StreamInfo]: ...

    async def _locate_event(self, event_id: UUID) -> tuple[StreamId, int] | None:
        async for event in self.read_all(on_undecodable="yield"):
            if event.event_id == event_id:
                return event.aggregate_id, event.version
        return None

    async def _list_streams_page(
        self, prefix: str, after: str | None, limit: int
    ) -> list[StreamInfo]:
        # Stores without an index of their own cut the page from the whole list.
        return page_of_streams(await self._list_streams(), prefix, after, limit)


async def _no_events() -> AsyncIterator[Event]:
    return
    yield  # an async generator that yields nothing
