"""Process managers (sagas) for asyncio: async handlers that command aggregates, exactly once.

:class:`AsyncProcessManager` is :class:`eskit.projections.process_manager.ProcessManager`
with ``async`` handlers and an awaited :meth:`~AsyncProcessManager.execute`, over
an :class:`~eskit.aio.AsyncEventStore` and an :class:`~eskit.aio.AsyncRepository`.
The guarantee is the same (an exactly-once effect on the event store): a step's
events get ids derived from the triggering event and the step name, so a rerun
after a crash or a lost checkpoint writes nothing twice. The decisions (the ids
and metadata, what a failed append means, when to give up) are the sync process
manager's own functions; only the load and the append are awaited.

Run it with :class:`~eskit.aio.AsyncProjectionRunner`: it handles a process
manager's events outside any target transaction and moves the checkpoint with a
compare-and-set, as the sync runner does; each handler is awaited on the runner's
event loop. Failures are the runner's (retried, then parked or stopping).

Not guaranteed: effects outside the event store; commands must be deterministic
given the triggering event and the aggregate's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast

from eskit.aggregate import Aggregate
from eskit.aio.repository import AsyncRepository
from eskit.aio.store import AsyncEventStore
from eskit.context import caused_by
from eskit.errors import ConcurrencyError, DuplicateEventError
from eskit.events import Event, StreamId
from eskit.projections.process_manager import (
    give_up,
    log_lost_race,
    stamp_command_events,
    stored_already,
)
from eskit.projections.projection import Projection
from eskit.projections.sql import Tx

__all__ = ["AsyncProcessManager"]

A = TypeVar("A", bound=Aggregate)


class AsyncProcessManager(Projection):
    """Base class for async process managers. Subclasses set ``name`` and define handlers.

    Handlers are ``async def`` and take ``(event, tx)`` like any projection's
    (``tx`` is ``None``); they ``await self.execute(...)`` for each command. Only
    :class:`~eskit.aio.AsyncProjectionRunner` can run one.
    """

    transactional: ClassVar[bool] = False
    max_attempts: ClassVar[int] = 10
    """How often a command is reloaded and rerun after losing a concurrency race."""

    def __init__(self, store: AsyncEventStore, repository: AsyncRepository | None = None) -> None:
        super().__init__()
        self.store = store
        self.repository = repository or AsyncRepository(store)

    def handle(self, event: Event, tx: Tx) -> None:
        raise TypeError(
            f"{type(self).__name__} has async handlers: run it with AsyncProjectionRunner"
        )

    async def handle_async(self, event: Event) -> None:
        """Apply one event: await its handler, if there is one."""
        handler: Callable[[Event, Any], Awaitable[None]] | None
        handler = self._handlers.get(event.event_type)  # type: ignore[assignment]
        if handler is not None:
            with caused_by(event):  # events the handler writes are caused by this one
                await handler(event, None)

    async def execute(
        self,
        trigger: Event,
        step: str,
        aggregate_class: type[A],
        aggregate_id: StreamId,
        command: Callable[[A], Any],
        *,
        new: bool = False,
    ) -> bool:
        """Run ``command`` on the aggregate and append its events, exactly once.

        As :meth:`eskit.projections.process_manager.ProcessManager.execute`:
        ``True`` if events were appended now, ``False`` if the command recorded
        nothing or its events were stored already; the command's own exceptions
        propagate. ``command`` is a plain function (it runs the aggregate's rules).
        """
        lost: ConcurrencyError | None = None
        for _ in range(self.max_attempts):
            if new:
                aggregate = aggregate_class.create_blank(aggregate_id)
            else:
                aggregate = await self.repository.get(aggregate_id, aggregate_class)
            command(aggregate)
            events = aggregate.get_uncommitted_events()
            if not events:
                return False
            stamped = stamp_command_events(self.name, trigger, step, events)
            expected = aggregate.version - len(events)
            try:
                result = await self.store.append(aggregate_id, stamped, expected)
            except (DuplicateEventError, ConcurrencyError) as exc:
                if stored_already(exc, new):
                    return False
                lost = cast(ConcurrencyError, exc)  # every DuplicateEventError is stored
                log_lost_race(self.name, step, aggregate_id, lost)
                continue  # another writer moved the stream: reload and run again
            return not result.duplicate
        raise give_up(self.name, step, aggregate_id, self.max_attempts, lost)
