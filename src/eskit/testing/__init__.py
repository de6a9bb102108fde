"""Test support for eskit users and backend authors (needs pytest).

:class:`EventStoreContract` is the shared contract suite every event store
passes, :class:`SnapshotStoreContract` the one every snapshot store passes, and
:class:`SubscriptionContract` / :class:`AsyncSubscriptionContract` the ones every
store's subscriptions pass; subclass them to run them against your own backend.
"""

from eskit.testing.contract import EventStoreContract
from eskit.testing.snapshot_contract import SnapshotStoreContract
from eskit.testing.subscription_contract import AsyncSubscriptionContract, SubscriptionContract

__all__ = [
    "AsyncSubscriptionContract", "EventStoreContract", "SnapshotStoreContract",
    "SubscriptionContract",
]
