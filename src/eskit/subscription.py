"""Subscriptions: read the global order from a checkpoint, then follow it live.

A :class:`Subscription` yields every event after its starting position, in
global order, first from history ("catch-up") and then as new events become
visible ("live"). It never skips or repeats an event: it only ever asks the store
for events after the last position it yielded, and stores make events visible in
position order only (see :meth:`eskit.EventStore.read_all`).

Between reads it waits for a wake-up from the store: LISTEN/NOTIFY on
PostgreSQL, an append through the same store object in memory, and on a SQLite
file also a commit by any other connection or process (seen within about
:data:`SQLITE_CHECK_INTERVAL` seconds by watching ``PRAGMA data_version``). Every wait
also times out after ``poll_interval`` seconds, so a lost notification only
delays delivery, never loses an event.

Filters (``event_types``, ``stream_prefixes``) are passed to the store, which
filters in the database (:mod:`eskit.stores.filtered`): only matching rows are
read, yet the checkpoint still moves past the others (to the head position the
read was bounded by), so a filtered subscription resumes exactly where it
stopped and a subscription to a rare type does not re-read the log.

When the store becomes unreachable (:class:`~eskit.StoreUnavailableError`: the
connection dropped, the server restarted), the iteration does not end: it waits,
with a growing delay up to :data:`MAX_RETRY_DELAY`, and resumes after its
checkpoint, so nothing is skipped and nothing is yielded twice. It logs on
``logging.getLogger("eskit.subscription")``: one WARNING when an outage begins,
one INFO when reading works again; nothing is logged per event. Any other error
(a decoding failure, a missing schema) still ends the iteration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple, Protocol, overload

from eskit.errors import DecodingError, InvalidInputError, StoreUnavailableError
from eskit.events import Event
from eskit.stores.arguments import check_position
from eskit.stores.filtered import read_filter
from eskit.stores.rows import OnUndecodable, UndecodableEvent, check_on_undecodable
from eskit.upcasting import ends_stored_event

__all__ = [
    "MAX_RETRY_DELAY", "SQLITE_CHECK_INTERVAL", "EventFilter", "GlobalLog", "Subscription",
    "SubscriptionSteps", "Waiter", "reconnect_delay",
]

_log = logging.getLogger("eskit.subscription")

MAX_RETRY_DELAY = 5.0
"""Longest wait, in seconds, between two tries to reach an unavailable store."""

SQLITE_CHECK_INTERVAL = 0.05
"""Seconds between two looks at a SQLite file's ``PRAGMA data_version`` while a
subscription (sync or async) waits: how late it may see another process's commit."""


def reconnect_delay(failures: int) -> float:
    """Seconds a long-running reader waits after its ``failures``-th failed try in a row.

    0.1, 0.2, 0.4, ... up to :data:`MAX_RETRY_DELAY`; shared by subscriptions and
    projection runners.
    """
    return float(min(MAX_RETRY_DELAY, 0.1 * 2 ** min(failures - 1, 16)))


def check_subscription_args(
    from_position: object, page_size: object, poll_interval: object, on_undecodable: object
) -> float:
    """Check a subscription's arguments before any I/O (sync and async alike).

    Returns ``poll_interval`` as a float; raises :class:`~eskit.InvalidInputError`.
    """
    check_position(from_position)
    check_on_undecodable(on_undecodable)
    if type(page_size) is not int or page_size < 1:
        raise InvalidInputError("page_size must be an int >= 1")
    if type(poll_interval) not in (int, float) or not poll_interval > 0:  # type: ignore[operator]
        raise InvalidInputError("poll_interval must be > 0 seconds")
    return float(poll_interval)  # type: ignore[arg-type]


class EventFilter:
    """Which events a reader wants: by event type and by stream id prefix (category).

    ``None`` for either means "no restriction". A stream belongs to a category by a
    plain prefix test on its id as text (``"account-"`` matches ``"account-42"``;
    a UUID stream matches a prefix of its canonical text). An empty list matches
    nothing; an empty string, a bare string or a non-string is refused
    (:class:`~eskit.InvalidInputError`), as by ``read_all``.
    The decision is a pure function of the event, shared by every front end;
    stores run the same test in the database (:mod:`eskit.stores.filtered`).
    """

    __slots__ = ("event_types", "read_filter", "stream_prefixes")

    def __init__(
        self,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
    ) -> None:
        if event_types is not None and not isinstance(event_types, str | bytes):
            event_types = list(event_types)  # an iterator is read once, here
        if stream_prefixes is not None and not isinstance(stream_prefixes, str | bytes):
            stream_prefixes = list(stream_prefixes)
        self.read_filter = read_filter(event_types, stream_prefixes)
        """The checked filter the store is asked for; ``None`` for every event."""
        self.event_types = None if event_types is None else frozenset(event_types)
        self.stream_prefixes = None if stream_prefixes is None else frozenset(stream_prefixes)

    @property
    def is_everything(self) -> bool:
        return self.read_filter is None

    def matches(self, event: Event | UndecodableEvent) -> bool:
        return self.read_filter is None or self.read_filter.matches(event)

    def __repr__(self) -> str:
        return (
            f"EventFilter(event_types={self.event_types!r}, "
            f"stream_prefixes={self.stream_prefixes!r})"
        )


class PageRead(NamedTuple):
    """One read of a subscription (sync and async, internal)."""

    events: list[Event | UndecodableEvent]
    whole: bool
    """False when cut short before an undecodable event (read again at once)."""
    upto: int | None
    """Where a filtered read examined the log up to (the checkpoint may move there)."""
    more: bool
    """Whether more events may follow at once (a full page): read again without waiting."""


class SubscriptionSteps:
    """What a subscription does with each event it reads; no I/O (internal).

    Shared by :class:`Subscription` and :class:`eskit.aio.AsyncSubscription`, so
    the two cannot drift: how the checkpoint moves (past a split only at its last
    part, past filtered-out and reported events too), which events are given to
    the subscriber, and how the store is asked to read (``mode``).
    """

    __slots__ = ("filter", "mode", "report")

    def __init__(self, wanted: EventFilter, on_undecodable: OnUndecodable) -> None:
        self.filter = wanted
        self.report = on_undecodable
        # A placeholder for an undecodable event passes the filter like any event, so a
        # subscriber is told only of events it would have been given.
        self.mode: OnUndecodable = "raise" if on_undecodable == "raise" else "yield"

    def take(
        self, event: Event | UndecodableEvent, position: int
    ) -> tuple[int, Event | UndecodableEvent | None]:
        """The checkpoint after ``event``, and the event to yield (``None``: skip it)."""
        # The parts of a split share its position: move past it at the last.
        if ends_stored_event(event):
            position = event.position or position
        if not self.filter.matches(event):
            return position, None
        if callable(self.report) and not isinstance(event, Event):
            self.report(event)
            return position, None
        return position, event

    @staticmethod
    def decodable_prefix(
        page: list[Event | UndecodableEvent], error: DecodingError
    ) -> list[Event | UndecodableEvent]:
        """The events of ``page`` (read again with placeholders) before the first
        undecodable one; raises ``error`` if there are none.

        Why: in ``"raise"`` mode a page with an undecodable event fails as a whole,
        and the events before it would be withheld until it is fixed; they are
        delivered first, and the next read raises at the undecodable event itself.
        """
        prefix: list[Event | UndecodableEvent] = []
        for event in page:
            if not isinstance(event, Event):
                break
            prefix.append(event)
        if not prefix:
            raise error
        return prefix


class GlobalLog(Protocol):
    """What a subscription reads: a store's global order and its wake-ups.

    :class:`~eskit.EventStore` is one; the protocol keeps this module below the
    stores, which build subscriptions, rather than importing them back.
    """

    @overload
    def read_all(
        self, from_position: int = ..., limit: int | None = ..., *,
        on_undecodable: Literal["raise"] | Callable[[UndecodableEvent], object] = ...,
    ) -> Iterator[Event]: ...

    @overload
    def read_all(
        self, from_position: int = ..., limit: int | None = ..., *,
        on_undecodable: Literal["yield"],
    ) -> Iterator[Event | UndecodableEvent]: ...

    def head_position(self) -> int: ...

    def _new_waiter(self) -> Waiter: ...


class Waiter(Protocol):
    """Blocks until the store may have new events, or the timeout passes."""

    def wait(self, timeout: float) -> None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class PollingWaiter:
    """The fallback: sleep for the timeout, interruptible by :meth:`wake`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()


class Subscription:
    """Catch-up then live iteration over a store's global order.

    ``position`` is the checkpoint: the position of the last event read
    (``from_position`` until then); with filters it may be past the last event
    yielded, never before it. Pass it back unchanged to resume later. While
    the parts of a split event are yielded it stays before the split, and moves
    past it with the last part: a checkpoint saved mid-split repeats the earlier
    parts (same event ids) and never skips the later ones.
    Call :meth:`stop` (from any thread) to end the iteration.

    ``event_types`` and ``stream_prefixes`` restrict what is yielded (see
    :class:`EventFilter`); the store filters in the database, so only matching
    rows are read, and the checkpoint moves past the rest (to the head position
    each read was bounded by).

    ``on_undecodable`` is as for :meth:`eskit.EventStore.read_all`: by default an
    event that cannot be decoded raises :class:`~eskit.errors.DecodingError` and
    ``position`` stays before it; ``"yield"`` yields an
    :class:`~eskit.stores.rows.UndecodableEvent` in its place, a function is called
    with it; both move the checkpoint past it.
    """

    def __init__(
        self,
        store: GlobalLog,
        from_position: int = 0,
        *,
        page_size: int = 500,
        poll_interval: float = 1.0,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
        on_undecodable: OnUndecodable = "raise",
    ) -> None:
        self.poll_interval = check_subscription_args(
            from_position, page_size, poll_interval, on_undecodable
        )
        self.store = store
        self.position = from_position
        self.page_size = page_size
        self.filter = EventFilter(event_types, stream_prefixes)
        self.on_undecodable = on_undecodable
        self._stopped = threading.Event()
        self._waiter: Waiter | None = None

    def __iter__(self) -> Iterator[Event]:
        # Start listening before the first read so nothing committed in between is missed.
        self._waiter = self.store._new_waiter()
        steps = SubscriptionSteps(self.filter, self.on_undecodable)
        try:
            while not self._stopped.is_set():
                page, whole, upto, more = self._next_page(steps.mode)
                for event in page:
                    self.position, wanted = steps.take(event, self.position)
                    if wanted is None:
                        continue
                    yield wanted  # type: ignore[misc]  # an UndecodableEvent in "yield" mode
                    if self._stopped.is_set():
                        return
                if upto is not None:  # a filtered page examined the log up to there
                    self.position = max(self.position, upto)
                if whole and not more and not self._stopped.is_set():
                    self._waiter.wait(self.poll_interval)
        finally:
            self._waiter.close()
            self._waiter = None

    def _next_page(self, mode: OnUndecodable) -> PageRead:
        """The events after the checkpoint, one page; waits out an unavailable store.

        Why resume rather than raise: the checkpoint is exact, so reading again after
        it repeats and skips nothing. Empty if :meth:`stop` is called meanwhile.
        """
        failures = 0
        while True:
            try:
                page = self._read_page(mode)
            except StoreUnavailableError as exc:
                failures += 1
                if failures == 1:
                    _log.warning(
                        "eskit: subscription lost the store after position %s, retrying: %s",
                        self.position, exc,
                    )
                if self._stopped.wait(reconnect_delay(failures)):
                    return PageRead([], True, None, False)
                continue
            if failures:
                _log.info(
                    "eskit: subscription reconnected after %d failed reads, resuming after "
                    "position %s", failures, self.position,
                )
            return page

    def _read_page(self, mode: OnUndecodable) -> PageRead:
        wanted = self.filter.read_filter
        filtered = None if wanted is None else getattr(self.store, "_filtered_page", None)
        if filtered is not None:  # in the database (stores that are not EventStores: below)
            try:
                items, upto, more, _ = filtered(self.position, self.page_size, wanted,
                                                mode != "raise")
            except DecodingError as error:
                if mode != "raise":
                    raise
                items = filtered(self.position, self.page_size, wanted, True)[0]
                return PageRead(SubscriptionSteps.decodable_prefix(items, error), False, None,
                                True)
            return PageRead(items, True, upto, more)
        try:
            page = list(self.store.read_all(
                self.position, limit=self.page_size, on_undecodable=mode
            ))
        except DecodingError as error:
            if mode != "raise":
                raise
            return PageRead(SubscriptionSteps.decodable_prefix(list(self.store.read_all(
                self.position, limit=self.page_size, on_undecodable="yield"
            )), error), False, None, True)
        return PageRead(page, True, None, len(page) >= self.page_size)

    def caught_up(self) -> bool:
        """Whether no visible event lies beyond the checkpoint."""
        return self.store.head_position() <= self.position

    def stop(self) -> None:
        """End the iteration; safe to call from another thread."""
        self._stopped.set()
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()
