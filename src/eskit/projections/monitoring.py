"""How far behind each projection is: checkpoint, head, lag, rate, last error.

:func:`projection_status` reads the stored state of every projection partition
from a target and compares it with the event store's head. It is what
``eskit projections DB status`` prints and what :mod:`eskit.projections.metrics`
exports to Prometheus.

What the numbers mean (and do not):

* ``lag_events`` counts events after the checkpoint, all types (the checkpoint
  moves past events the projection does not handle). It counts at most
  ``count_limit`` events; ``lag_events_capped`` says when there are more.
* ``lag_seconds`` is how long the oldest unprocessed event has been waiting
  (now minus its recorded time); ``0.0`` when caught up. Recorded times come
  from the writers' clocks, so treat sub-second values as noise.
* ``events_per_second`` is the handling rate of the most recent batches, as the
  runner stored it; it does not decay while a runner is stopped.
* ``parked``, ``skipped`` and ``retried`` count the dead-letter rows by status:
  parked now, given up on by an operator, handled by a retry. A reset or a rebuild
  starts them over, like ``events_handled``.
* ``last_error`` is set while the projection is failing: from a failed attempt until
  the checkpoint is past that event (handled or parked), or until a runner that did
  not see the failure (a new process) commits a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from eskit.projections.checkpoints import ProjectionTarget
from eskit.stores.base import EventStore

__all__ = ["ProjectionStatus", "projection_status"]


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """One projection partition, as monitoring sees it."""

    name: str
    partition: int
    checkpoint: int
    head: int
    lag_events: int
    lag_events_capped: bool
    lag_seconds: float
    events_per_second: float
    events_handled: int
    parked: int
    skipped: int
    retried: int
    updated_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @property
    def caught_up(self) -> bool:
        return self.lag_events == 0


def projection_status(
    store: EventStore,
    target: ProjectionTarget,
    name: str | None = None,
    *,
    count_limit: int = 100_000,
    now: datetime | None = None,
) -> list[ProjectionStatus]:
    """The status of every projection partition stored in ``target`` (or of ``name``)."""
    head = store.head_position()
    now = now or datetime.now(UTC)
    letters: dict[tuple[str, int, str], int] = {}
    for letter in target.dead_letters(name, status=None):
        key = (letter.projection, letter.partition, letter.status)
        letters[key] = letters.get(key, 0) + 1
    result = []
    for state in target.states(name):
        lag = 0
        oldest = None
        for event in store.read_all(
            state.position, limit=count_limit, on_undecodable="yield"
        ):
            if oldest is None:
                oldest = event.timestamp
            lag += 1
        lag_seconds = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        result.append(ProjectionStatus(
            name=state.name, partition=state.partition, checkpoint=state.position, head=head,
            lag_events=lag, lag_events_capped=lag >= count_limit, lag_seconds=lag_seconds,
            events_per_second=state.events_per_second, events_handled=state.events_handled,
            parked=letters.get((state.name, state.partition, "parked"), 0),
            skipped=letters.get((state.name, state.partition, "skipped"), 0),
            retried=letters.get((state.name, state.partition, "retried"), 0),
            updated_at=state.updated_at,
            last_error=state.last_error, last_error_at=state.last_error_at,
        ))
    return result
