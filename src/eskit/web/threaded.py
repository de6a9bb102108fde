"""A sync store behind the async API: each call in a worker thread (internal).

SQLite and memory have async twins that wrap their sync stores; any other sync
store (PostgreSQL's, say) is wrapped here. Its wake-ups (PostgreSQL's LISTEN) block
until a notification comes, so each event stream's waiter runs on a thread of its
own rather than holding one of the loop's few worker threads for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

from eskit.aio._sync_backed import SyncBackedStore
from eskit.aio.subscription import AsyncWaiter
from eskit.stores.base import EventStore
from eskit.subscription import Waiter

__all__: list[str] = []

T = TypeVar("T")

LISTEN_SECONDS = 5.0
"""How long the thread's wait lasts before it starts another (the subscription's own
poll interval bounds every wait it makes regardless)."""


class ThreadedStore(SyncBackedStore[EventStore]):
    """Any sync store, each call run in a worker thread."""

    async def _call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def _new_waiter(self) -> AsyncWaiter:
        waiter = await asyncio.to_thread(self.sync_store._new_waiter)
        return ThreadWaiter(waiter, asyncio.get_running_loop())


class ThreadWaiter:
    """A sync store's waiter, waited on by a thread of its own; its wake-ups set an
    asyncio event of the subscription's loop. A lost wake-up only delays: every
    :meth:`wait` also ends after its timeout."""

    def __init__(self, waiter: Waiter, loop: asyncio.AbstractEventLoop) -> None:
        self._waiter = waiter
        self._loop = loop
        self._woken = asyncio.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="eskit-web-wait", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._waiter.wait(LISTEN_SECONDS)  # a notification, wake() or the timeout
            if self._closed:
                return
            with contextlib.suppress(RuntimeError):  # the loop has closed: so are we
                self._loop.call_soon_threadsafe(self._woken.set)

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

    async def close(self) -> None:
        self._closed = True
        # wake() may do I/O (PostgreSQL sends a NOTIFY to end the blocked wait).
        await asyncio.to_thread(self._waiter.wake)
        await asyncio.to_thread(self._thread.join, LISTEN_SECONDS + 1)
        await asyncio.to_thread(self._waiter.close)
