"""The embedded SQLite event store, for asyncio.

``sqlite3`` has no async interface: every call blocks. This store wraps a
:class:`eskit.SQLiteEventStore` and runs each of its calls in a worker thread
with :func:`asyncio.to_thread`, so the event loop never waits on the disk or on
SQLite's write lock. Everything the sync store guarantees still holds (see
:mod:`eskit.stores.sqlite`): one writer at a time in commit order, WAL for
readers beside it, several processes on one host, durable commits.

A subscription (``store.subscribe()``) is also woken by commits of other
processes, within about :data:`~eskit.subscription.SQLITE_CHECK_INTERVAL`
seconds, by watching ``PRAGMA data_version`` on a connection of its own.

Not guaranteed: cancelling a task does not stop the thread it started. A
cancelled ``append`` may still commit; retry it with the same event ids and the
store tells you (``duplicate=True``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from typing import Self, TypeVar

from eskit.aio._sync_backed import SyncBackedStore
from eskit.aio.subscription import AsyncWaiter, LocalAsyncWaiter
from eskit.errors import StoreError
from eskit.events import EventRegistry
from eskit.stores.compression import DEFAULT_COMPRESS_THRESHOLD
from eskit.stores.model import DEFAULT_MAX_EVENT_BYTES
from eskit.stores.sqlite import SQLiteEventStore, Synchronous
from eskit.stores.sqlite_wakeups import DataVersionWatch
from eskit.subscription import SQLITE_CHECK_INTERVAL

__all__ = ["AsyncSQLiteEventStore"]

T = TypeVar("T")

_log = logging.getLogger("eskit.subscription")


class AsyncSQLiteEventStore(SyncBackedStore[SQLiteEventStore]):
    """An event store in a SQLite file (or ``":memory:"``), for asyncio.

    The constructor takes the arguments of :class:`eskit.SQLiteEventStore` and
    opens the file at once, blocking briefly; inside a running event loop
    prefer ``await AsyncSQLiteEventStore.open(path)``, which opens it in a
    worker thread. :meth:`from_sync` wraps an already open store.
    """

    db_system = "sqlite"  # OpenTelemetry's db.system.name

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        create: bool = True,
        adopt: bool = False,
        registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
    ) -> None:
        super().__init__(SQLiteEventStore(
            path, synchronous=synchronous, busy_timeout=busy_timeout, create=create,
            adopt=adopt, registry=registry, max_event_bytes=max_event_bytes,
            compress_threshold=compress_threshold,
        ))

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        create: bool = True,
        adopt: bool = False,
        registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
    ) -> Self:
        """Open (and if need be create) the store without blocking the event loop."""
        store = await asyncio.to_thread(
            SQLiteEventStore, path, synchronous=synchronous, busy_timeout=busy_timeout,
            create=create, adopt=adopt, registry=registry, max_event_bytes=max_event_bytes,
            compress_threshold=compress_threshold,
        )
        return cls.from_sync(store)

    @property
    def path(self) -> str:
        return self.sync_store.path

    async def _call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    async def _new_waiter(self) -> AsyncWaiter:
        if self.sync_store._memory:  # no other connection can write to it
            return LocalAsyncWaiter(self.sync_store)
        return await _DataVersionWaiter.open(self.sync_store)


class _DataVersionWaiter(LocalAsyncWaiter):
    """Also woken by commits of other connections and processes to the file.

    The check is :class:`eskit.stores.sqlite_wakeups.DataVersionWatch`, the sync
    subscription's own, run in a worker thread every :data:`SQLITE_CHECK_INTERVAL`
    seconds while waiting, so the loop never blocks on it.
    """

    def __init__(self, sync_store: SQLiteEventStore, watch: DataVersionWatch):
        super().__init__(sync_store)
        self._watch = watch
        self._check: asyncio.Future[bool] | None = None

    @classmethod
    async def open(cls, sync_store: SQLiteEventStore) -> _DataVersionWaiter:
        watch = sync_store._watch_file()
        try:
            await asyncio.to_thread(watch.changed)  # the baseline, before the first read
        except BaseException:
            await asyncio.to_thread(watch.close)
            raise
        return cls(sync_store, watch)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._woken.is_set():
            # Shielded: a cancelled wait must not leave the thread using a connection
            # that close() is about to free; close() awaits this check first.
            self._check = asyncio.ensure_future(asyncio.to_thread(self._watch.changed))
            try:
                changed = await asyncio.shield(self._check)
            except (sqlite3.Error, StoreError) as exc:  # the file is away: poll
                _log.debug("eskit: PRAGMA data_version failed: %s", exc)
                await super().wait(max(0.0, deadline - loop.time()))
                return
            if changed:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), min(SQLITE_CHECK_INTERVAL, remaining))
        self._woken.clear()

    async def close(self) -> None:
        await super().close()
        if self._check is not None and not self._check.done():
            with suppress(Exception):
                await self._check
        await asyncio.to_thread(self._watch.close)
