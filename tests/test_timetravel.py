"""eskit.timetravel: what changed in an aggregate's state between two versions or moments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from eskit import (
    Aggregate,
    AggregateNotFound,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidInputError,
    NewEvent,
    OnDemand,
    Repository,
    VersionNotFound,
    state_diff,
)
from eskit.aio import AsyncInMemoryEventStore, AsyncRepository
from eskit.timetravel import MISSING, FieldChange, diff_states, state_diff_async

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class Account(Aggregate):
    def __init__(self, account_id):
        super().__init__(account_id)
        self.balance = Decimal(0)
        self.owner = None
        self._reads = 0  # private: not part of the state

    def handle_Opened(self, data):
        self.owner = data["owner"]

    def handle_Deposited(self, data):
        self.balance += data["amount"]

    def handle_Renamed(self, data):
        self.owner = data["owner"]


EVENTS = [
    NewEvent("Opened", {"owner": "ann"}, timestamp=T0),
    NewEvent("Deposited", {"amount": Decimal("10.00")}, timestamp=T0 + timedelta(minutes=1)),
    NewEvent("Deposited", {"amount": Decimal("5.50")}, timestamp=T0 + timedelta(minutes=2)),
    NewEvent("Renamed", {"owner": "bea"}, timestamp=T0 + timedelta(minutes=3)),
]


@pytest.fixture
def repo():
    store = InMemoryEventStore()
    store.append("acc-1", EVENTS, 0)
    return Repository(store)


def test_state_diff_lists_the_fields_that_changed_between_two_versions(repo):
    diff = state_diff(repo, "acc-1", Account, 1, 3)
    assert (diff.before_version, diff.after_version) == (1, 3)
    assert diff.changes == (FieldChange("balance", "changed", Decimal(0), Decimal("15.50")),)
    assert diff.after.balance == Decimal("15.50")  # the states themselves come along


def test_state_diff_from_version_0_starts_at_the_blank_state(repo):
    diff = state_diff(repo, "acc-1", Account, 0, 4)
    assert {c.name: (c.before, c.after) for c in diff.changes} == {
        "balance": (Decimal(0), Decimal("15.50")), "owner": (None, "bea"),
    }


def test_state_diff_accepts_moments_and_either_order(repo):
    diff = state_diff(repo, "acc-1", Account, T0 + timedelta(minutes=3, seconds=1),
                      T0 + timedelta(seconds=90))
    assert (diff.before_version, diff.after_version) == (4, 2)
    assert {c.name: c.after for c in diff.changes} == {"balance": Decimal("10.00"),
                                                        "owner": "ann"}
    before_any = state_diff(repo, "acc-1", Account, T0 - timedelta(days=1), 1)
    assert before_any.before_version == 0


def test_equal_states_diff_to_nothing(repo):
    assert not state_diff(repo, "acc-1", Account, 4, 4)


def test_a_bound_beyond_the_head_raises_version_not_found_before_loading(repo):
    with pytest.raises(VersionNotFound) as caught:
        state_diff(repo, "acc-1", Account, 1, 9)
    assert (caught.value.version, caught.value.head) == (9, 4)
    with pytest.raises(AggregateNotFound):
        state_diff(repo, "nobody", Account, 0, 1)


@pytest.mark.parametrize(
    "bad", [-1, True, "3", 2.0, datetime(2025, 3, 1, 9, 0)],  # naive: names no moment
)
def test_a_point_that_is_neither_a_version_nor_an_aware_moment_is_invalid_input(repo, bad):
    with pytest.raises(InvalidInputError):
        state_diff(repo, "acc-1", Account, bad, 2)


def test_state_diff_uses_snapshots_like_repository_get():
    store = InMemoryEventStore()
    store.append("acc-1", EVENTS, 0)
    repo = Repository(store, snapshots=InMemorySnapshotStore(store), snapshot_policy=OnDemand())
    repo.take_snapshot(repo.get("acc-1", Account, version=3))
    diff = state_diff(repo, "acc-1", Account, 3, 4)
    assert diff.changes == (FieldChange("owner", "changed", "ann", "bea"),)


def test_a_class_that_overrides_snapshot_state_is_compared_on_that_state(repo):
    class OwnerOnly(Account):
        def snapshot_state(self):
            return {"owner": self.owner}

    assert state_diff(repo, "acc-1", OwnerOnly, 1, 3).changes == ()


def test_the_async_diff_runs_the_same_plan():
    async def main():
        store = AsyncInMemoryEventStore()
        await store.append("acc-1", EVENTS, 0)
        return await state_diff_async(AsyncRepository(store), "acc-1", Account, 1, 3)

    diff = asyncio.run(main())
    assert diff.changes == (FieldChange("balance", "changed", Decimal(0), Decimal("15.50")),)


def test_diff_states_marks_added_and_removed_fields_and_compares_exactly():
    changes = diff_states({"a": 1, "n": Decimal("NaN"), "gone": 2, "flag": 1},
                          {"a": 1, "n": Decimal("NaN"), "new": 3, "flag": True})
    assert changes == (
        FieldChange("gone", "removed", 2, MISSING),
        FieldChange("flag", "changed", 1, True),  # 1 == True in Python, not in the codec
        FieldChange("new", "added", MISSING, 3),
    )
