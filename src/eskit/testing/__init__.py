"""Test support for eskit users and backend authors (needs pytest).

:class:`EventStoreContract` is the shared contract suite every event store
passes, :class:`SnapshotStoreContract` the one every snapshot store passes, and
:class:`SubscriptionContract` / :class:`AsyncSubscriptionContract` the ones every
store's subscriptions pass, :class:`CommandHandlerContract` /
:class:`AsyncCommandHandlerContract` what command handlers and
``Repository.execute`` guarantee on a store; subclass them to run them against
your own backend.

:func:`given`, :func:`given_decider` and :func:`given_projection` are
given/when/then helpers for testing your own aggregates, deciders and
projections (see :mod:`eskit.testing.given`).
"""

from eskit.testing.command_contract import AsyncCommandHandlerContract, CommandHandlerContract
from eskit.testing.contract import EventStoreContract
from eskit.testing.given import (
    AggregateScenario,
    DeciderScenario,
    ProjectionScenario,
    assert_same_events,
    given,
    given_decider,
    given_projection,
)
from eskit.testing.snapshot_contract import SnapshotStoreContract
from eskit.testing.subscription_contract import AsyncSubscriptionContract, SubscriptionContract

__all__ = [
    "AggregateScenario", "AsyncCommandHandlerContract", "AsyncSubscriptionContract",
    "CommandHandlerContract", "DeciderScenario", "EventStoreContract",
    "ProjectionScenario", "SnapshotStoreContract", "SubscriptionContract", "assert_same_events",
    "given", "given_decider", "given_projection",
]
