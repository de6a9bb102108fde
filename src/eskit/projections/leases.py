"""Consumer groups: workers share a projection's partitions through leases.

Workers in any number of processes or machines join a group by name. The group's
state lives in the projection target's database (the event store's own file or
schema when, as usual, the read model lives there): a row per member with a
heartbeat expiry, and a lease per partition with an owner, an expiry and a
**fencing token** that goes up on every claim. Every expiry is computed with the
database's clock (``clock_timestamp()`` on PostgreSQL, ``julianday('now')`` on
SQLite), so the members' clocks need not agree.

Each heartbeat is one transaction, serialised with the group's other heartbeats:
the member renews its row, drops members whose row expired, and applies
:func:`~eskit.projections.assignment.plan_assignment` — it keeps its fair share,
releases extras (a member joined) and claims free or expired leases (a member
left or died).

**Fencing.** The runner checks the lease — owner and token still this member's —
inside each batch's transaction, just before it moves the checkpoint, and rolls
the batch back (:class:`LeaseLost`) if the partition was claimed meanwhile. A
worker that paused (GC, SIGSTOP, a lost network) and resumes after its lease was
taken over therefore commits nothing.

Guaranteed: while the read model is in the target's database, every event takes
effect exactly once (the checkpoint moves in the read model's transaction, and a
takeover resumes from it). A dead member's partitions are claimed by a survivor
within ``lease_timeout`` of its last heartbeat, plus the time a survivor's current
batch takes: leases are written to expire ``lease_timeout - heartbeat`` seconds
ahead and survivors look every ``heartbeat`` seconds. Not guaranteed: that a
member never *reads* a partition it lost (it finds out at the next fence or
heartbeat).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eskit.errors import EskitError, InvalidInputError
from eskit.projections.assignment import LeaseView, plan_assignment
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.lease_sql import NOW, statements

__all__ = ["ConsumerGroup", "Lease", "LeaseLost"]

_log = logging.getLogger("eskit.projections.leases")

MAX_PARTITIONS = 4096


class LeaseLost(EskitError):
    """This member no longer holds the partition's lease: its batch was rolled back."""

    def __init__(self, message: str, *, group: str, partition: int) -> None:
        super().__init__(message)
        self.group = group
        self.partition = partition


@dataclass(frozen=True, slots=True)
class Lease:
    """One partition's lease as stored."""

    partition: int
    owner: str | None
    token: int
    """The fencing token: raised by every claim."""
    expires_in: float | None
    """Seconds until it expires by the database's clock (negative: expired)."""


class ConsumerGroup:
    """A named group of workers sharing ``partitions`` partitions of one projection.

    Pass it to :class:`~eskit.projections.ProjectionRunner` (``group=``) with the
    same ``target``. ``lease_timeout`` (seconds) bounds how long a dead member's
    partitions wait for a survivor: its leases and its member row are written to
    expire ``lease_timeout - heartbeat`` ahead, and every member heartbeats (renews,
    and claims what expired) every ``heartbeat`` seconds (default a quarter of
    ``lease_timeout``). ``member`` names this worker (default host,
    pid and a random suffix; it must be unique among live members).

    Every member of a group must agree on ``partitions``: the first one stores it,
    and a member passing another number gets :class:`~eskit.errors.InvalidInputError`.
    One ``ConsumerGroup`` object is one member, used by one thread.
    """

    def __init__(
        self,
        target: ProjectionTarget,
        name: str,
        *,
        partitions: int,
        lease_timeout: float = 10.0,
        heartbeat: float | None = None,
        member: str | None = None,
    ) -> None:
        if type(name) is not str or not name or len(name) > 200:
            raise InvalidInputError("a consumer group needs a name of 1 to 200 characters")
        if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
            raise InvalidInputError(f"partitions must be an int from 1 to {MAX_PARTITIONS}")
        if isinstance(lease_timeout, bool) or not isinstance(lease_timeout, int | float) \
                or not 0 < lease_timeout < 3600:
            raise InvalidInputError("lease_timeout must be a number of seconds in (0, 3600)")
        beat = lease_timeout / 4 if heartbeat is None else heartbeat
        if isinstance(beat, bool) or not isinstance(beat, int | float) \
                or not 0 < beat <= lease_timeout / 2:
            # Renewals every `heartbeat` must come well within the lease's validity,
            # lease_timeout - heartbeat.
            raise InvalidInputError(
                "heartbeat must be a number of seconds in (0, lease_timeout / 2]"
            )
        if member is not None and (type(member) is not str or not member or len(member) > 200):
            raise InvalidInputError("member must be a name of 1 to 200 characters")
        if target.dialect not in ("sqlite", "postgres"):
            raise InvalidInputError(
                "consumer groups need a SQLite or PostgreSQL target: the leases live in "
                "the database the workers share"
            )
        self.target = target
        self.name = name
        self.partitions = partitions
        self.lease_timeout = float(lease_timeout)
        self.heartbeat_interval = float(beat)
        self.ttl = self.lease_timeout - self.heartbeat_interval
        """Seconds a lease or member row is valid after a heartbeat."""
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sql = statements(target.dialect)
        self.serves: str | None = None
        """The projection (runner name) whose partitions these are; set by the runner."""
        self._owned: dict[int, int] = {}
        self._next_beat = 0.0
        self._ready = False

    # -- state ------------------------------------------------------------------------

    @property
    def owned(self) -> Mapping[int, int]:
        """The partitions this member holds (as of its last heartbeat), with their tokens."""
        return dict(self._owned)

    def heartbeat_due(self) -> bool:
        return time.monotonic() >= self._next_beat

    def next_heartbeat_in(self) -> float:
        """Seconds until the next heartbeat is due (0 if it is)."""
        return max(0.0, self._next_beat - time.monotonic())

    def _run(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self.target._run(conn, query, params)

    # -- setup and heartbeats ---------------------------------------------------------

    def setup(self) -> None:
        """Create the group tables and this group's lease rows (idempotent)."""
        if self._ready:
            return
        with self.target.transaction() as conn:
            self.target.lock_setup(conn, "eskit-consumer-groups")
            for statement in self._sql.tables:
                self._run(conn, statement)
            self._run(conn, self._sql.add_group, (self.name, self.partitions))
            if self.serves is not None:
                self._run(conn, self._sql.serve, (self.serves, self.name))
            self._check_partitions(conn)
            for p in range(self.partitions):
                self._run(conn, self._sql.add_lease, (self.name, p))
        self._ready = True

    def _check_partitions(self, conn: Any) -> None:
        row = self._run(conn, self._sql.lock_group, (self.name,))[0]
        if int(row[0]) != self.partitions:
            raise InvalidInputError(
                f"consumer group {self.name!r} has {row[0]} partitions, not {self.partitions}"
            )
        if self.serves is not None and row[1] is not None and row[1] != self.serves:
            # Members of two projections in one group would split its partitions
            # between them, and each projection would miss the other's share.
            raise InvalidInputError(
                f"consumer group {self.name!r} serves projection {row[1]!r}, not "
                f"{self.serves!r}: give each projection a group of its own"
            )

    def heartbeat(self) -> Mapping[int, int]:
        """Renew this member and rebalance; return the partitions it now holds.

        One transaction: renew the member's row, forget members whose heartbeat
        expired, then keep, release and claim leases as
        :func:`~eskit.projections.assignment.plan_assignment` says.
        """
        self.setup()
        started = time.monotonic()
        ttl = self.ttl
        sql = self._sql
        with self.target.transaction() as conn:
            self._check_partitions(conn)  # and, on PostgreSQL, lock the group
            self._run(conn, sql.beat, (self.name, self.member, ttl))
            self._run(conn, sql.drop_dead, (self.name,))
            members = [r[0] for r in self._run(conn, sql.members, (self.name,))]
            rows = self._run(conn, sql.leases, (self.name,))
            views = {int(r[0]): LeaseView(r[1], bool(int(r[3]))) for r in rows}
            tokens = {int(r[0]): int(r[2]) for r in rows}
            plan = plan_assignment(self.partitions, members, views, self.member)
            owned: dict[int, int] = {}
            for p in sorted(plan.keep):
                self._run(conn, sql.renew, (ttl, self.name, p, self.member))
                owned[p] = tokens[p]
            for p in sorted(plan.release):
                self._run(conn, sql.release, (self.name, p, self.member))
            for p in sorted(plan.claim):
                owned[p] = int(self._run(conn, sql.claim, (self.member, ttl, self.name, p))[0][0])
        gained, lost = owned.keys() - self._owned.keys(), self._owned.keys() - owned.keys()
        if gained or lost:
            _log.info("consumer group %r member %s now holds partitions %s (gained %s, "
                      "gave up %s)", self.name, self.member, sorted(owned), sorted(gained),
                      sorted(lost))
        self._owned = owned
        self._next_beat = started + self.heartbeat_interval
        return dict(owned)

    def forget(self, partition: int) -> None:
        """Stop treating ``partition`` as held (its lease was found taken over)."""
        self._owned.pop(partition, None)

    def leave(self) -> None:
        """Release this member's leases and remove it, so others take over at once."""
        if not self._ready:
            return
        with self.target.transaction() as conn:
            self._check_partitions(conn)
            for p in sorted(self._owned):
                self._run(conn, self._sql.release, (self.name, p, self.member))
            self._run(conn, self._sql.leave, (self.name, self.member))
        self._owned = {}
        self._next_beat = 0.0

    # -- fencing (inside the runner's batch transaction) ------------------------------

    def guard(self, conn: Any) -> None:
        """At a batch's start: on PostgreSQL, end the session if it idles in the batch.

        A paused worker holding its batch open would keep the checkpoint row locked
        and stall the member that takes its lease over; after ``lease_timeout``
        seconds idle in the transaction the server ends the session and rolls back.
        """
        if self._sql.guard is not None:
            self._run(conn, self._sql.guard, (str(int(self.lease_timeout * 1000)),))

    def check(self, conn: Any, partition: int) -> None:
        """Raise :class:`LeaseLost` unless this member still holds ``partition``'s lease.

        Runs inside the batch's transaction, so raising rolls the batch back.
        """
        token = self._owned.get(partition)
        rows = self._run(conn, self._sql.fence, (self.name, partition))
        if token is None or not rows or rows[0][0] != self.member or int(rows[0][1]) != token:
            owner = rows[0][0] if rows else None
            raise LeaseLost(
                f"consumer group {self.name!r}: partition {partition} is no longer held by "
                f"{self.member} (owner now {owner!r}); the batch was rolled back",
                group=self.name, partition=partition,
            )

    # -- monitoring -------------------------------------------------------------------

    def leases(self) -> list[Lease]:
        """Every partition's lease, by partition."""
        self.setup()
        with self.target.transaction() as conn:
            rows = self._run(conn, self._sql.leases, (self.name,))
        return sorted(
            (Lease(int(r[0]), r[1], int(r[2]), None if r[4] is None else float(r[4]))
             for r in rows),
            key=lambda lease: lease.partition,
        )

    def members(self) -> list[str]:
        """The members whose heartbeat has not expired, sorted."""
        self.setup()
        with self.target.transaction() as conn:
            rows = self._run(conn, self._sql.members + " AND expires_at >= "
                             + NOW[self.target.dialect], (self.name,))
        return sorted(r[0] for r in rows)
