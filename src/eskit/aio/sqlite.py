"""The embedded SQLite event store, for asyncio.

``sqlite3`` has no async interface: every call blocks. This store wraps a
:class:`eskit.SQLiteEventStore` and runs each of its calls in a worker thread
with :func:`asyncio.to_thread`, so the event loop never waits on the disk or on
SQLite's write lock. Everything the sync store guarantees still holds (see
:mod:`eskit.stores.sqlite`): one writer at a time in commit order, WAL for
readers beside it, several processes on one host, durable commits.

Not guaranteed: cancelling a task does not stop the thread it started. A
cancelled ``append`` may still commit; retry it with the same event ids and the
store tells you (``duplicate=True``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Self, TypeVar

from eskit.aio._sync_backed import SyncBackedStore
from eskit.events import EventRegistry
from eskit.stores.model import DEFAULT_MAX_EVENT_BYTES
from eskit.stores.sqlite import SQLiteEventStore, Synchronous

__all__ = ["AsyncSQLiteEventStore"]

T = TypeVar("T")


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
    ) -> None:
        super().__init__(SQLiteEventStore(
            path, synchronous=synchronous, busy_timeout=busy_timeout, create=create,
            adopt=adopt, registry=registry, max_event_bytes=max_event_bytes,
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
    ) -> Self:
        """Open (and if need be create) the store without blocking the event loop."""
        store = await asyncio.to_thread(
            SQLiteEventStore, path, synchronous=synchronous, busy_timeout=busy_timeout,
            create=create, adopt=adopt, registry=registry, max_event_bytes=max_event_bytes,
        )
        return cls.from_sync(store)

    @property
    def path(self) -> str:
        return self.sync_store.path

    async def _call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)
