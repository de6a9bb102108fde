"""The in-memory event store, for asyncio.

A thin async face over :class:`eskit.InMemoryEventStore`: that store does no
I/O and holds its lock only for a few list operations, so its methods are
called directly on the event loop, without threads. It is the same real store
(same codec, same checks, same contract); its contents live as long as the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from eskit.aio._sync_backed import SyncBackedStore
from eskit.events import EventRegistry
from eskit.stores.memory import InMemoryEventStore
from eskit.stores.model import DEFAULT_MAX_EVENT_BYTES

__all__ = ["AsyncInMemoryEventStore"]

T = TypeVar("T")


class AsyncInMemoryEventStore(SyncBackedStore[InMemoryEventStore]):
    """An event store in process memory, for asyncio.

    :meth:`from_sync` wraps an existing :class:`eskit.InMemoryEventStore`, so
    sync and async code can share one store (in tests, for instance).
    """

    db_system = "memory"  # OpenTelemetry's db.system.name

    def __init__(
        self, *, registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        super().__init__(InMemoryEventStore(registry=registry, max_event_bytes=max_event_bytes))

    async def _call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        return function(*args, **kwargs)
