"""Async subscriptions: read the global order from a checkpoint, then follow it live.

:class:`AsyncSubscription` is :class:`eskit.Subscription` for ``async for``, with
the same guarantees: every event after the starting position, in global order,
history first and then live, never skipped and never repeated, because it only
ever asks the store for the events after the last position it read. What it does
with each event (how the checkpoint moves past splits, filters and undecodable
events) is :class:`eskit.subscription.SubscriptionSteps`, the sync subscription's
own code; only the reads and the waits are awaited.

Between reads it waits for a wake-up from the store, without blocking the loop:

- in memory and SQLite, an append through the same store object (or its
  :attr:`~eskit.aio.AsyncSQLiteEventStore.sync_store`, from any thread);
- SQLite files: a commit by any other connection or process, seen within about
  :data:`SQLITE_CHECK_INTERVAL` seconds by watching ``PRAGMA data_version`` on a
  connection of the subscription's own;
- PostgreSQL: LISTEN/NOTIFY on an ``AsyncConnection`` of the subscription's own.

Every wait also ends after ``poll_interval`` seconds, so a lost wake-up only
delays delivery, never loses an event. An unreachable store
(:class:`~eskit.StoreUnavailableError`) is waited out with the sync
subscription's growing delay (:func:`eskit.subscription.reconnect_delay`), and
reading resumes after the checkpoint; any other error ends the iteration.

Not guaranteed: a subscription belongs to the event loop it is iterated in;
call :meth:`AsyncSubscription.stop` from that loop (from another thread, use
``loop.call_soon_threadsafe(subscription.stop)``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Literal, Protocol, overload

from eskit.errors import DecodingError, StoreUnavailableError
from eskit.events import Event
from eskit.stores.rows import OnUndecodable, UndecodableEvent
from eskit.subscription import (
    SQLITE_CHECK_INTERVAL,
    EventFilter,
    PageRead,
    SubscriptionSteps,
    check_subscription_args,
    reconnect_delay,
)

if TYPE_CHECKING:
    from eskit.stores.base import EventStore

__all__ = ["SQLITE_CHECK_INTERVAL", "AsyncSubscription", "AsyncWaiter"]

_log = logging.getLogger("eskit.subscription")

# SQLITE_CHECK_INTERVAL (from eskit.subscription): seconds between two looks at a
# SQLite file's PRAGMA data_version while waiting, the same for sync and async.


class AsyncWaiter(Protocol):
    """Waits, without blocking the loop, until the store may have new events or the
    timeout passes (internal: a store's ``_new_waiter`` returns one)."""

    async def wait(self, timeout: float) -> None: ...

    def wake(self) -> None:
        """End the current (or next) wait early; called on the waiter's loop."""

    async def close(self) -> None: ...


class AsyncGlobalLog(Protocol):
    """What an async subscription reads: a store's global order and its wake-ups.

    :class:`~eskit.aio.AsyncEventStore` is one; the protocol keeps this module below
    the stores, which build subscriptions, rather than importing them back.
    """

    @overload
    def read_all(
        self, from_position: int = ..., limit: int | None = ..., *,
        on_undecodable: Literal["raise"] | Callable[[UndecodableEvent], object] = ...,
    ) -> AsyncIterator[Event]: ...

    @overload
    def read_all(
        self, from_position: int = ..., limit: int | None = ..., *,
        on_undecodable: Literal["yield"],
    ) -> AsyncIterator[Event | UndecodableEvent]: ...

    async def head_position(self) -> int: ...

    async def _new_waiter(self) -> AsyncWaiter: ...


class AsyncPollingWaiter:
    """The fallback: sleep for the timeout, interruptible by :meth:`wake`."""

    def __init__(self) -> None:
        self._woken = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

    async def close(self) -> None:
        self._woken.set()


class _ThreadsafeWake:
    """Registered with a sync store: its appends (from any thread) wake an async waiter."""

    def __init__(self, waiter: AsyncPollingWaiter) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiter = waiter

    def wake(self) -> None:
        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._waiter.wake)

    def wait(self, timeout: float) -> None:  # pragma: no cover - never waited on
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - closed through the async waiter
        pass


class LocalAsyncWaiter(AsyncPollingWaiter):
    """Woken by appends through a sync-backed store's sync store; polls otherwise."""

    def __init__(self, sync_store: EventStore) -> None:
        super().__init__()
        self._sync_store = sync_store
        self._registration = _ThreadsafeWake(self)
        sync_store._add_waiter(self._registration)

    async def close(self) -> None:
        self._sync_store._forget_waiter(self._registration)
        await super().close()


class AsyncSubscription:
    """Catch-up then live iteration over an async store's global order (``async for``).

    The same contract as :class:`eskit.Subscription`: ``position`` is the
    checkpoint (the position of the last event read, ``from_position`` until
    then), past the last event yielded when filters skip some, before a split
    event until its last part is read; pass it back unchanged to resume.
    ``event_types``, ``stream_prefixes`` and ``on_undecodable`` are as there (a
    callback is a plain function, called without awaiting). Bad arguments raise
    :class:`~eskit.InvalidInputError` here, before any I/O. Call :meth:`stop`
    to end the iteration; it may be iterated once at a time.
    """

    def __init__(
        self,
        store: AsyncGlobalLog,
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
        self._stopped = False
        self._waiter: AsyncWaiter | None = None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        # Start listening before the first read so nothing committed in between is missed.
        self._waiter = waiter = await self.store._new_waiter()
        steps = SubscriptionSteps(self.filter, self.on_undecodable)
        try:
            while not self._stopped:
                page, whole, upto, more = await self._next_page(steps.mode)
                for event in page:
                    self.position, wanted = steps.take(event, self.position)
                    if wanted is None:
                        continue
                    yield wanted  # type: ignore[misc]  # an UndecodableEvent in "yield" mode
                    if self._stopped:
                        return
                if upto is not None:  # a filtered page examined the log up to there
                    self.position = max(self.position, upto)
                if whole and not more and not self._stopped:
                    await waiter.wait(self.poll_interval)
        finally:
            self._waiter = None
            await waiter.close()

    async def _next_page(self, mode: OnUndecodable) -> PageRead:
        """The events after the checkpoint, one page; waits out an unavailable store.

        As in the sync subscription: the checkpoint is exact, so reading again after
        it repeats and skips nothing. Empty if :meth:`stop` is called meanwhile.
        """
        failures = 0
        while True:
            try:
                page = await self._read_page(mode)
            except StoreUnavailableError as exc:
                failures += 1
                if failures == 1:
                    _log.warning(
                        "eskit: subscription lost the store after position %s, retrying: %s",
                        self.position, exc,
                    )
                await self._sleep(reconnect_delay(failures))
                if self._stopped:
                    return PageRead([], True, None, False)
                continue
            if failures:
                _log.info(
                    "eskit: subscription reconnected after %d failed reads, resuming after "
                    "position %s", failures, self.position,
                )
            return page

    async def _read_page(self, mode: OnUndecodable) -> PageRead:
        # The sync subscription's _read_page, awaited.
        wanted = self.filter.read_filter
        filtered = None if wanted is None else getattr(self.store, "_filtered_page", None)
        if filtered is not None:
            try:
                items, upto, more, _ = await filtered(
                    self.position, self.page_size, wanted, mode != "raise"
                )
            except DecodingError as error:
                if mode != "raise":
                    raise
                items = (await filtered(self.position, self.page_size, wanted, True))[0]
                return PageRead(SubscriptionSteps.decodable_prefix(items, error), False, None,
                                True)
            return PageRead(items, True, upto, more)
        try:
            page: list[Event | UndecodableEvent] = [
                event async for event in self.store.read_all(
                    self.position, limit=self.page_size, on_undecodable=mode
                )
            ]
        except DecodingError as error:
            if mode != "raise":
                raise
            return PageRead(SubscriptionSteps.decodable_prefix([
                event async for event in self.store.read_all(
                    self.position, limit=self.page_size, on_undecodable="yield"
                )
            ], error), False, None, True)
        return PageRead(page, True, None, len(page) >= self.page_size)

    async def _sleep(self, seconds: float) -> None:
        waiter = self._waiter
        if waiter is None:
            await asyncio.sleep(seconds)
        else:  # stop() wakes the waiter, which ends this sleep early
            await waiter.wait(seconds)

    async def caught_up(self) -> bool:
        """Whether no visible event lies beyond the checkpoint."""
        return await self.store.head_position() <= self.position

    def stop(self) -> None:
        """End the iteration; call it from the subscription's event loop."""
        self._stopped = True
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()
