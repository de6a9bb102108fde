"""Which partitions a consumer-group member should hold: a pure function, no I/O.

Every live member computes the same fair split from the same view of the group:
with ``n`` members sorted by id, member ``i`` gets ``partitions // n`` partitions,
plus one if ``i < partitions % n`` — the shares add up to ``partitions`` exactly.
A member over its share releases its highest-numbered partitions; one under its
share claims free ones (unowned, expired, or owned by a member that is no longer
live), lowest-numbered first. Each member applies its own plan under the group's
lock, so the group converges after at most two heartbeats of every member.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from eskit.errors import InvalidInputError

__all__ = ["LeaseView", "Plan", "fair_share", "plan_assignment"]


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What a member knows of one partition's lease when it plans."""

    owner: str | None
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What one member does to its leases in one heartbeat."""

    keep: frozenset[int]
    """Partitions it holds and renews."""
    claim: frozenset[int]
    """Free partitions it takes (each claim raises the lease's fencing token)."""
    release: frozenset[int]
    """Partitions it holds beyond its share and gives back."""

    @property
    def owned(self) -> frozenset[int]:
        """The partitions the member holds once the plan is applied."""
        return self.keep | self.claim


def fair_share(partitions: int, members: Iterable[str], member: str) -> int:
    """How many partitions ``member`` should hold among ``members`` (it counts as live)."""
    live = sorted(set(members) | {member})
    index = live.index(member)
    base, extra = divmod(partitions, len(live))
    return base + (1 if index < extra else 0)


def plan_assignment(
    partitions: int, members: Iterable[str], leases: Mapping[int, LeaseView], me: str
) -> Plan:
    """The plan of member ``me``: which of ``0 .. partitions-1`` to keep, claim, release.

    ``members`` are the live members (``me`` counts as live whether listed or not);
    ``leases`` maps partitions to their current lease (a missing one is free). A
    lease owned by ``me`` is kept even if expired: nobody claimed it, so nobody
    handled its events meanwhile.
    """
    if type(partitions) is not int or partitions < 1:
        raise InvalidInputError("partitions must be an int >= 1")
    live = set(members) | {me}
    share = fair_share(partitions, live, me)
    mine: list[int] = []
    free: list[int] = []
    for p in range(partitions):
        lease = leases.get(p, LeaseView(None))
        if lease.owner == me:
            mine.append(p)
        elif lease.owner is None or lease.expired or lease.owner not in live:
            free.append(p)
    if len(mine) >= share:
        return Plan(frozenset(mine[:share]), frozenset(), frozenset(mine[share:]))
    return Plan(frozenset(mine), frozenset(free[: share - len(mine)]), frozenset())
