"""Process managers (sagas): react to events by issuing commands to aggregates.

A :class:`ProcessManager` is a projection whose handlers do not write a read
model: they load aggregates, run commands and append the resulting events. It
has its own checkpoint like any projection, and its state is whatever the
aggregates it commands (for instance a ``Transfer`` aggregate with its own
stream) record.

**Exactly-once effect on the event store.** Every command runs through
:meth:`ProcessManager.execute`, which gives the events it produces ids derived
from the triggering event's id and a step name (``uuid5``). If the process
stops after appending and before its checkpoint moves, the event is handled
again and the command produces the same ids: the store recognises them as a
retry (``duplicate=True``), or as already stored (the stream moved on since),
and nothing is written twice. Commands must therefore be deterministic given
the triggering event and the aggregate's state; a command that records nothing
(because the aggregate already shows its effect) is fine.

Because the effects are idempotent, a process manager does not need the batch
transaction of a read-model projection: the runner handles its events outside
any target transaction (``transactional = False``) and moves the checkpoint
afterwards with a compare-and-set, so the checkpoint may live in a SQLite file
that the same process also appends events to.

Failures of a step are the runner's: retried, then parked or stopping, and logged
by ``eskit.projections.runner``; lost concurrency races are logged here (DEBUG per
rerun, WARNING when a step gives up).

Not guaranteed: effects outside the event store (use
:func:`~eskit.projections.idempotency_key`); and a step's events are only as
atomic as one append — one command, one aggregate, one stream.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID, uuid5

from eskit.aggregate import Aggregate
from eskit.errors import ConcurrencyError, DuplicateEventError
from eskit.events import Event, StreamId
from eskit.observability import _hooks
from eskit.projections.projection import Projection
from eskit.repository import Repository
from eskit.stores.base import EventStore

__all__ = ["ProcessManager", "command_event_id"]

A = TypeVar("A", bound=Aggregate)

_log = logging.getLogger("eskit.projections.process_manager")

_NAMESPACE = UUID("0b7f5a52-3c4e-4f7e-8d8e-6c1b9f4e2a10")


def command_event_id(process: str, trigger: Event, step: str, index: int) -> UUID:
    """The id of the ``index``-th event a process's ``step`` causes for ``trigger``."""
    return uuid5(_NAMESPACE, f"{process}\x00{trigger.event_id}\x00{step}\x00{index}")


class ProcessManager(Projection):
    """Base class for process managers. Subclasses set ``name`` and define handlers.

    Handlers take ``(event, tx)`` like any projection's (``tx`` is ``None``: there
    is no read-model transaction) and call :meth:`execute` for each command.
    """

    transactional: ClassVar[bool] = False
    max_attempts: ClassVar[int] = 10
    """How often a command is reloaded and rerun after losing a concurrency race."""

    def __init__(self, store: EventStore, repository: Repository | None = None) -> None:
        super().__init__()
        self.store = store
        self.repository = repository or Repository(store)

    def execute(
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

        ``step`` names this command among those ``trigger`` causes. ``new=True``
        creates the aggregate (its stream must not exist yet, or must hold this
        very step's events). Returns ``True`` if events were appended now,
        ``False`` if the command recorded nothing or its events were already
        stored. Exceptions from the command (domain rule violations) propagate:
        the handler decides what to do, for instance compensate.
        """
        if (observer := _hooks.active) is None:
            return self._execute(trigger, step, aggregate_class, aggregate_id, command, new)
        with observer.step(self.name, step, trigger):  # linked to the trigger's append
            return self._execute(trigger, step, aggregate_class, aggregate_id, command, new)

    def _execute(
        self, trigger: Event, step: str, aggregate_class: type[A], aggregate_id: StreamId,
        command: Callable[[A], Any], new: bool,
    ) -> bool:
        lost: ConcurrencyError | None = None
        for _ in range(self.max_attempts):
            if new:
                aggregate = aggregate_class.create_blank(aggregate_id)
            else:
                aggregate = self.repository.get(aggregate_id, aggregate_class)
            command(aggregate)
            events = aggregate.get_uncommitted_events()
            if not events:
                return False
            stamped = stamp_command_events(self.name, trigger, step, events)
            expected = aggregate.version - len(events)
            try:
                result = self.store.append(aggregate_id, stamped, expected)
            except (DuplicateEventError, ConcurrencyError) as exc:
                if stored_already(exc, new):
                    return False
                lost = cast(ConcurrencyError, exc)  # every DuplicateEventError is stored
                log_lost_race(self.name, step, aggregate_id, lost)
                continue  # another writer moved the stream: reload and run again
            return not result.duplicate
        raise give_up(self.name, step, aggregate_id, self.max_attempts, lost)


# The decisions of ``execute``, shared with eskit.aio.AsyncProcessManager.


def stamp_command_events(
    process: str, trigger: Event, step: str, events: list[Event]
) -> list[Event]:
    """A step's events with ids derived from the trigger and the step, and causation metadata."""
    return [
        dataclasses.replace(
            event,
            event_id=command_event_id(process, trigger, step, i),
            metadata={
                **event.metadata, "process": process, "causation_id": str(trigger.event_id),
            },
        )
        for i, event in enumerate(events)
    ]


def stored_already(error: DuplicateEventError | ConcurrencyError, new: bool) -> bool:
    """Whether a failed append of a step's events means an earlier run stored them.

    A duplicate id: stored, and the stream has moved since. A conflict on a step
    that creates its aggregate: created already, by an earlier run of this step.
    Any other conflict is a lost race: reload and run the command again.
    """
    return isinstance(error, DuplicateEventError) or new


def log_lost_race(process: str, step: str, aggregate_id: StreamId, error: Exception) -> None:
    _log.debug("process %r step %r on %r lost a race, rerunning: %s",
               process, step, str(aggregate_id), error)


def give_up(
    process: str, step: str, aggregate_id: StreamId, attempts: int,
    lost: ConcurrencyError | None,
) -> ConcurrencyError:
    """The error a step raises after losing ``attempts`` races in a row (logged)."""
    assert lost is not None
    _log.warning("process %r step %r on %r lost %d races in a row, giving up: %s",
                 process, step, str(aggregate_id), attempts, lost)
    return lost
