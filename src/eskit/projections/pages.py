"""What a projection batch reads, and reading the next page ahead (internal).

Shared by :class:`~eskit.projections.ProjectionRunner` and the asyncio runner.

**Reading ahead.** On a store whose reads wait on a server (PostgreSQL), a
runner that has just read a full page starts reading the page after it at once
(a helper thread in the sync runner, a task in the async one) while it handles
the batch, writes the read model and commits; the next batch then finds its
events already read. The page is read from where the checkpoint will be *if*
the batch commits whole (:func:`next_read`), and used only if the checkpoint,
read and locked by the next batch, is exactly there: after a failure, or when
another runner moved the checkpoint, it is dropped and the batch reads afresh.

Why a page read early is as good as one read later: every event up to a page's
end is final (the stores' ordering guarantee), so what it shows stays true; it
may only show less than a later read would, and the events it does not show are
read by the next batch. It is never taken for "caught up": read-ahead follows a
*full* page only, after which the runner goes on at once, and a page read ahead
of a short one would be what a live runner woke up to re-read.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from eskit.events import Event
from eskit.stores.rows import UndecodableEvent

__all__ = ["BatchResult", "Page", "Read", "ReadAhead", "next_read"]

Read = Event | UndecodableEvent
"""What the runner reads: events, and placeholders for events it cannot decode."""


@dataclass(slots=True)
class BatchResult:
    """What one batch did."""

    read: int
    handled: int
    position: int
    parked: int = 0

    def add(self, other: BatchResult) -> None:
        """Count ``other`` in (a consumer-group round sums its partitions' batches)."""
        self.read += other.read
        self.handled += other.handled
        self.parked += other.parked


class Page(NamedTuple):
    """What one batch read (internal; shared with the async runner)."""

    events: list[Read]
    upto: int
    """The checkpoint once every event of the page is handled: past its last event,
    and with a filtered read past the unwanted rows it proved absent too."""
    rows: int
    """Stored rows read; 0 means caught up."""
    more: bool = False
    """Whether more events may follow at once (the page was full)."""

    @classmethod
    def of(cls, after: int, events: list[Read], limit: int) -> Page:
        """A page of ``read_all(after, limit=limit)``."""
        upto = events[-1].position or after if events else after
        return cls(events, upto, len(events), len(events) >= limit)

    @classmethod
    def filtered(cls, events: list[Read], upto: int, more: bool, rows: int) -> Page:
        """A page of a store's ``_filtered_page``: nothing more to read once it is short."""
        return cls(events, upto, rows if events or more else 0, more)

    def first(self, limit: int) -> Page:
        """At most ``limit`` events of this page (its checkpoint moved back to match)."""
        if len(self.events) <= limit:
            return self
        events = self.events[:limit]
        return Page(events, events[-1].position or self.upto, limit, True)


def next_read(page: Page, limit: int) -> int | None:
    """Where to read the next page ahead from, once ``page`` is read; ``None``: do not.

    The checkpoint ``page`` leaves when its batch commits whole, if the page was full
    (the runner reads again at once) and batches are not one event long (a runner
    going one event at a time towards a failure, whose checkpoint may not move).
    """
    if limit == 1 or not page.events or not page.more:
        return None
    return page.upto


class ReadAhead:
    """The sync runner's read-ahead: one page at a time, in one helper thread.

    ``read(after, limit)`` is the runner's own read of the store. Used from one
    thread (the runner's); :meth:`close` waits for a read still running.
    """

    def __init__(self, read: Callable[[int, int], Page]) -> None:
        self._read = read
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="eskit-projection-read-ahead")
        self._next: tuple[int, int, Future[Page]] | None = None

    def start(self, page: Page, limit: int) -> None:
        """Start reading the page after ``page`` (see :func:`next_read`), if it pays."""
        self.drop()
        after = next_read(page, limit)
        if after is not None:
            self._next = (after, limit, self._pool.submit(self._read, after, limit))

    def take(self, after: int, limit: int) -> Page | None:
        """The page read ahead from ``after``, or ``None`` (none, or from elsewhere).

        Waits for it if it is still being read; its read's error is raised here,
        as a read made now would raise it.
        """
        started, self._next = self._next, None
        if started is None:
            return None
        if started[:2] != (after, limit):
            started[2].cancel()  # a read already running ends unused
            return None
        return started[2].result()

    def drop(self) -> None:
        """Forget the page being read ahead (a failure, a wait, another runner)."""
        started, self._next = self._next, None
        if started is not None:
            started[2].cancel()

    def close(self) -> None:
        self.drop()
        self._pool.shutdown(wait=True, cancel_futures=True)
