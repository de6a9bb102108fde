"""Subscriptions: read the global order from a checkpoint, then follow it live.

A :class:`Subscription` yields every event after its starting position, in
global order, first from history ("catch-up") and then as new events become
visible ("live"). It never skips or repeats an event: it only ever asks the store
for events after the last position it yielded, and stores make events visible in
position order only (see :meth:`eskit.EventStore.read_all`).

Between reads it waits for a wake-up from the store: LISTEN/NOTIFY on
PostgreSQL, a condition variable in memory, a short poll elsewhere. Every wait
also times out after ``poll_interval`` seconds, so a lost notification only
delays delivery, never loses an event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from eskit.errors import InvalidInputError
from eskit.events import Event

if TYPE_CHECKING:
    from eskit.stores.base import EventStore

__all__ = ["Subscription", "Waiter"]


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

    ``position`` is the checkpoint: the position of the last event yielded
    (``from_position`` until then). Pass it back unchanged to resume later.
    Call :meth:`stop` (from any thread) to end the iteration.
    """

    def __init__(
        self,
        store: EventStore,
        from_position: int = 0,
        *,
        page_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        if type(page_size) is not int or page_size < 1:
            raise InvalidInputError("page_size must be an int >= 1")
        if not poll_interval > 0:
            raise InvalidInputError("poll_interval must be > 0 seconds")
        self.store = store
        self.position = from_position
        self.page_size = page_size
        self.poll_interval = float(poll_interval)
        self._stopped = threading.Event()
        self._waiter: Waiter | None = None
        list(store.read_all(from_position, limit=0))  # validates from_position now

    def __iter__(self) -> Iterator[Event]:
        # Start listening before the first read so nothing committed in between is missed.
        self._waiter = self.store._new_waiter()
        try:
            while not self._stopped.is_set():
                got = 0
                for event in self.store.read_all(self.position, limit=self.page_size):
                    self.position = event.position or self.position
                    got += 1
                    yield event
                    if self._stopped.is_set():
                        return
                if got < self.page_size:
                    self._waiter.wait(self.poll_interval)
        finally:
            self._waiter.close()
            self._waiter = None

    def caught_up(self) -> bool:
        """Whether no visible event lies beyond the checkpoint."""
        return self.store.head_position() <= self.position

    def stop(self) -> None:
        """End the iteration; safe to call from another thread."""
        self._stopped.set()
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()
