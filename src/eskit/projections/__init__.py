"""CQRS read side: projections into read models, with checkpoints stored atomically.

See ``docs/projections.md``. The pieces:

* :class:`Projection` — a class with a ``name`` and one handler per event type;
* targets (:class:`SQLiteTarget`, :class:`PostgresTarget`, :class:`InMemoryTarget`) —
  the database holding the read model, the checkpoint and the parked events;
* :class:`ProjectionRunner` — reads events after the checkpoint and commits the
  handlers' writes and the new checkpoint in one transaction;
* :class:`ConsumerGroup` — workers in any processes share the partitions through
  leases in the target's database (see ``docs/consumer-groups.md``).
"""

from eskit.projections.assignment import LeaseView, Plan, plan_assignment
from eskit.projections.checkpoints import DeadLetter, ProjectionState, ProjectionTarget
from eskit.projections.leases import ConsumerGroup, Lease, LeaseLost
from eskit.projections.parked import ParkedEventBlocked, retry_parked, skip_parked
from eskit.projections.projection import Projection, UnknownHandlerWarning, idempotency_key
from eskit.projections.runner import (
    BatchResult,
    ProjectionFailed,
    ProjectionRunner,
    RetryPolicy,
    partition_of,
    wait_for_projection,
)
from eskit.projections.sql import Tx
from eskit.projections.targets import target_for
from eskit.projections.targets.memory import InMemoryTarget
from eskit.projections.targets.postgres import PostgresTarget
from eskit.projections.targets.sqlite import SQLiteTarget

__all__ = [
    "BatchResult",
    "ConsumerGroup",
    "DeadLetter",
    "InMemoryTarget",
    "Lease",
    "LeaseLost",
    "LeaseView",
    "ParkedEventBlocked",
    "Plan",
    "PostgresTarget",
    "Projection",
    "ProjectionFailed",
    "ProjectionRunner",
    "ProjectionState",
    "ProjectionTarget",
    "RetryPolicy",
    "SQLiteTarget",
    "Tx",
    "UnknownHandlerWarning",
    "idempotency_key",
    "partition_of",
    "plan_assignment",
    "retry_parked",
    "skip_parked",
    "target_for",
    "wait_for_projection",
]
