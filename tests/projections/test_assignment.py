"""The pure assignment of a consumer group's partitions (no database)."""

import random

import pytest

from eskit.errors import InvalidInputError
from eskit.projections import LeaseView, plan_assignment
from eskit.projections.assignment import fair_share


def _converge(partitions: int, members: list[str], leases: dict, rounds: int = 4) -> dict:
    """Heartbeat every member ``rounds`` times (in random order); the final leases."""
    for _ in range(rounds):
        for me in random.sample(members, len(members)):
            plan = plan_assignment(partitions, members, leases, me)
            for p in plan.release:
                leases[p] = LeaseView(None)
            for p in plan.claim:
                leases[p] = LeaseView(me)
    return leases


def _counts(leases: dict, members: list[str]) -> dict[str, int]:
    return {m: sum(1 for v in leases.values() if v.owner == m) for m in members}


def test_fair_shares_add_up_to_the_partitions() -> None:
    for partitions in (1, 7, 8, 64):
        for n in (1, 2, 3, 5, 9):
            members = [f"m{i}" for i in range(n)]
            shares = [fair_share(partitions, members, m) for m in members]
            assert sum(shares) == partitions
            assert max(shares) - min(shares) <= 1
            assert max(shares) == -(-partitions // n)  # ceil(P / members)


def test_one_member_claims_everything_free() -> None:
    plan = plan_assignment(8, ["a"], {}, "a")
    assert plan.claim == frozenset(range(8))
    assert not plan.keep
    assert not plan.release


def test_three_members_split_eight_partitions_three_three_two() -> None:
    leases = _converge(8, ["a", "b", "c"], {})
    assert all(v.owner is not None for v in leases.values())
    assert len(leases) == 8
    assert sorted(_counts(leases, ["a", "b", "c"]).values()) == [2, 3, 3]


def test_a_joining_member_makes_the_others_release_extras() -> None:
    leases = _converge(8, ["a", "b"], {})
    assert _counts(leases, ["a", "b"]) == {"a": 4, "b": 4}
    plan = plan_assignment(8, ["a", "b", "c"], leases, "a")
    assert len(plan.release) == 1
    assert len(plan.keep) == 3
    assert not plan.claim
    # The newcomer takes nothing owned by a live member: only what was released.
    assert not plan_assignment(8, ["a", "b", "c"], leases, "c").claim
    leases = _converge(8, ["a", "b", "c"], leases)
    assert sorted(_counts(leases, ["a", "b", "c"]).values()) == [2, 3, 3]


def test_expired_leases_and_those_of_dead_members_are_free() -> None:
    leases = {p: LeaseView("dead") for p in range(4)} | {
        p: LeaseView("b", expired=True) for p in range(4, 8)
    }
    plan = plan_assignment(8, ["a", "b"], leases, "a")
    # b's expired leases are free to a: nobody renewed them.
    assert plan.claim == frozenset(range(4))
    plan_b = plan_assignment(8, ["a", "b"], leases, "b")
    # b keeps its own expired leases (nobody claimed them, so nobody handled them).
    assert plan_b.keep == frozenset(range(4, 8))
    assert not plan_b.claim


def test_a_live_members_valid_lease_is_never_claimed() -> None:
    rng = random.Random(7)
    for _ in range(500):
        members = [f"m{i}" for i in range(rng.randint(1, 6))]
        me = rng.choice(members)
        leases = {
            p: LeaseView(rng.choice([None, "gone", *members]), rng.random() < 0.2)
            for p in range(rng.randint(1, 20))
        }
        partitions = len(leases)
        plan = plan_assignment(partitions, members, leases, me)
        for p in plan.claim:
            lease = leases[p]
            assert lease.owner is None or lease.expired or lease.owner not in members
            assert lease.owner != me
        assert plan.keep | plan.release == {p for p, v in leases.items() if v.owner == me}
        assert not plan.keep & plan.release
        assert len(plan.owned) <= fair_share(partitions, members, me)


def test_more_members_than_partitions_leaves_some_idle() -> None:
    members = ["a", "b", "c"]
    leases = _converge(2, members, {})
    assert sorted(_counts(leases, members).values()) == [0, 1, 1]


@pytest.mark.parametrize("partitions", [0, -1, 1.5, True, "8"])
def test_bad_partition_counts_are_refused(partitions) -> None:
    with pytest.raises(InvalidInputError):
        plan_assignment(partitions, ["a"], {}, "a")
