"""Relay groups: several relays share one destination's work, a partition each at a time.

Relays in any number of processes or machines join a group by its name and share
its ``partitions`` partitions of the store's global order; a stream's events are
all in one partition (:func:`~eskit.projections.partition_of`), so each stream
keeps its order on the wire. Partition ``p`` of group ``G`` is an ordinary fenced
relay checkpoint named ``G/p`` in ``eskit_relays`` (:mod:`eskit.bus.checkpoints`):
its lease says which member publishes it, and only the lease owner's token moves
its checkpoint. A member reads only its partition's rows (filtered in SQL on the
stored stream hash, :mod:`eskit.stores.partitions`), publishes them in batches
through its own sink, and moves that partition's checkpoint after the broker
confirmed, exactly like :class:`~eskit.bus.relay.Relay`.

Membership: every ``lease_seconds / 4`` a member renews its row in
``eskit_relay_members`` (:mod:`eskit.bus.relay_members`), forgets members whose
row expired, and applies :func:`~eskit.projections.assignment.plan_assignment`,
the consumer groups' planner: it keeps its fair share (``N // members``, one more
for the first ``N % members`` members by id), releases partitions above it
between batches, and claims free ones (released, or their lease expired). A
claim succeeds only on a free or expired lease, so two members never publish one
partition at once, whatever each believes about the other.

What that gives:

* **No event is lost**, and the duplicates are those of a single relay: a
  partition's unconfirmed tail, published again by whoever resumes it.
* **Per-stream order**: one partition is published by one member at a time, in
  global order, and resumed from its checkpoint.
* **Rebalancing**: a joining member gets its share within about two heartbeats
  (the others release, then it claims); a member that stops releases its
  partitions at once; one that dies (SIGKILL) has its partitions taken within
  ``lease_seconds`` plus a heartbeat (plus a batch in flight) of its last renewal.

Not given: order across streams of different partitions, and the fencing limits
of one relay (a member stalled past its lease *while publishing* may finish that
batch after another took over: published twice). Every member must pass the
same ``partitions`` (the first stores it; another count is refused), the same
filters and an equivalent sink. Lease expiry compares the hosts' wall clocks.

A group named like an existing plain relay starts every partition at that relay's
checkpoint, once that relay no longer holds its lease (:mod:`eskit.bus.relay_members`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from eskit.bus.relay import _NAME_MAX, Relay, _check_name, batches
from eskit.bus.relay_members import GroupMembers, RelayStillRunning, members_for
from eskit.bus.relay_report import _head, read_filtered
from eskit.bus.sink import Sink
from eskit.errors import InvalidInputError
from eskit.projections.assignment import LeaseView, plan_assignment
from eskit.stores.filtered import ReadFilter
from eskit.subscription import SubscriptionSteps

__all__ = ["MAX_PARTITIONS", "RelayGroup"]

_log = logging.getLogger("eskit.bus.relay_group")

MAX_PARTITIONS = 4096
"""The most partitions a relay group may have (as a projections' consumer group)."""


class RelayGroup(Relay):
    """One member of the relay group ``name``, publishing its share of ``partitions``.

    Arguments as :class:`~eskit.bus.relay.Relay`'s, plus ``partitions`` (an int in
    ``1 ..`` :data:`MAX_PARTITIONS`, the same for every member) and ``member``
    (this member's id, unique among live members; default host, pid and a random
    suffix). ``lease_seconds`` bounds how long a dead member's partitions wait;
    members heartbeat every quarter of it. ``name`` names the group: its
    partitions' checkpoints are ``name/0`` .. ``name/N-1``, so a plain relay must
    not use those names. Bad arguments raise :class:`~eskit.InvalidInputError`
    here, before any I/O.

    :meth:`run` (inherited) joins, publishes what it holds and follows the store
    until :meth:`stop`; with ``until_caught_up`` it returns once every partition
    it holds is caught up (it waits for a first partition if the group has none
    free). On return it releases its partitions and leaves the group.
    """

    def __init__(
        self,
        store: Any,
        sink: Sink,
        *,
        name: str,
        partitions: int,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
        batch_size: int = 500,
        source: str = "eskit",
        lease_seconds: float = 15.0,
        poll_interval: float = 0.2,
        max_batch_bytes: int = 8 * 1024 * 1024,
        member: str | None = None,
    ) -> None:
        if type(partitions) is not int or not 1 <= partitions <= MAX_PARTITIONS:
            raise InvalidInputError(
                f"partitions must be an int in 1..{MAX_PARTITIONS}, got {partitions!r}")
        _check_name(name)
        if len(name) > _NAME_MAX - 5:  # room for "/4095"
            raise InvalidInputError(
                f"a relay group's name is at most {_NAME_MAX - 5} characters")
        if member is not None and (type(member) is not str or not member.isprintable()
                                   or not 1 <= len(member) <= _NAME_MAX):
            raise InvalidInputError(
                f"member must be 1-{_NAME_MAX} printable characters, got {member!r}")
        super().__init__(
            store, sink, name=name, event_types=event_types, stream_prefixes=stream_prefixes,
            batch_size=batch_size, source=source, lease_seconds=lease_seconds,
            poll_interval=poll_interval, max_batch_bytes=max_batch_bytes,
        )
        self.partitions = partitions
        self.owner = member or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        """This member's id: the lease owner of the partitions it holds."""
        self.members: GroupMembers = members_for(self.checkpoints)
        self.heartbeat_interval = self.lease_seconds / 4
        self.positions: dict[int, int] = {}
        """Each held partition's checkpoint (as this member last moved or read it)."""
        self.history: set[int] = set()
        """Every partition this member has held since it was made (for tests and logs)."""
        self._held: dict[int, float] = {}  # partition -> when its lease was last extended
        self._next_beat = 0.0
        self._in_flight: int | None = None
        base = self.filter.read_filter or ReadFilter(None, None)
        self._wanted = [base.in_partitions(partitions, [p]) for p in range(partitions)]

    @property
    def member(self) -> str:
        return self.owner

    @property
    def held(self) -> frozenset[int]:
        """The partitions this member holds now."""
        return frozenset(self._held)

    def _row(self, partition: int) -> str:
        return f"{self.name}/{partition}"

    # -- membership -------------------------------------------------------------------

    async def _rebalance(self) -> None:
        """One heartbeat: renew the member, then keep, release and claim partitions."""
        started = time.monotonic()
        live = await self._retrying_store(
            self.members.beat, self.name, self.owner, self.partitions, self.lease_seconds)
        rows = {row.name: row for row in await self._retrying_store(self.checkpoints.rows)}
        now = datetime.now(UTC)
        views = {}
        for p in range(self.partitions):
            row = rows.get(self._row(p))
            if row is not None and row.owner is not None:
                views[p] = LeaseView(row.owner, row.lease_until is None or row.lease_until < now)
        plan = plan_assignment(self.partitions, live, views, self.owner)
        before = set(self._held)
        for p in sorted(plan.release):
            await self._retrying_store(self.checkpoints.release, self._row(p), self.owner)
            self._drop(p)
        for p in sorted(self._held.keys() - plan.keep):
            self._drop(p)  # taken over by another member meanwhile
        for p in sorted(plan.keep | plan.claim):
            if p in self._held:
                if await self._retrying_store(
                        self.checkpoints.renew, self._row(p), self.owner, self.lease_seconds):
                    self._held[p] = started
                else:
                    self._drop(p)
                continue
            position = await self._retrying_store(
                self.checkpoints.acquire, self._row(p), self.owner, self.lease_seconds,
                self.sink.destination)
            if position is not None:
                self._held[p] = started
                self.positions[p] = position
                self.history.add(p)
        if set(self._held) != before:
            _log.info("eskit: relay group %r member %s holds partitions %s of %d (%d live "
                      "members)", self.name, self.owner, sorted(self._held), self.partitions,
                      len(set(live) | {self.owner}))
        self._next_beat = started + self.heartbeat_interval

    def _drop(self, partition: int) -> None:
        self._held.pop(partition, None)
        self.positions.pop(partition, None)

    async def _acquire(self) -> bool:
        """Join the group and wait for a first partition (``False`` if stopped first)."""
        waited = running = False
        while not self._stopped:
            try:
                await self._rebalance()
            except RelayStillRunning:
                if not running:
                    running = True
                    _log.warning("eskit: relay group %r waits for the relay of that name to "
                                 "stop: the group starts from its checkpoint", self.name)
                await self._sleep(self.heartbeat_interval)
                continue
            if self._held:
                return True
            if not waited:
                waited = True
                _log.warning("eskit: relay group %r member %s holds no partition yet; waiting",
                             self.name, self.owner)
            await self._sleep(self.heartbeat_interval)
        return False

    # -- the hooks of Relay -----------------------------------------------------------

    async def _record_error(self, message: str | None) -> None:
        for p in sorted(self._held):
            await self.checkpoints.record_error(self._row(p), self.owner, message)

    async def _keep_lease(self) -> bool:
        """While the broker is down: keep the member and its leases, rebalancing as usual."""
        await self._rebalance()
        return self._in_flight is None or self._in_flight in self._held

    async def _release(self) -> None:
        try:
            for p in sorted(self._held):
                await self.checkpoints.release(self._row(p), self.owner)
            await self.members.leave(self.name, self.owner)
        finally:
            self._held.clear()
            self.positions.clear()
            self._next_beat = 0.0

    # -- publishing -------------------------------------------------------------------

    async def _publish_until_lost(self, until_caught_up: bool) -> bool:
        """Publish the held partitions in turn, a page each; ``False`` once none is held."""
        await self._open_sink()
        steps = SubscriptionSteps(self.filter, "raise")
        started = time.monotonic()
        while not self._stopped:
            if time.monotonic() >= self._next_beat:
                await self._rebalance()
            if not self._held:
                return False
            busy = False
            caught_up = True
            # One head read a round: an idle member does not ask every partition.
            head = await self._retrying_store(_head, self.store)
            for p in sorted(self._held):
                if self._stopped or time.monotonic() >= self._next_beat:
                    caught_up = False
                    break
                if p not in self._held or self.positions[p] >= head:
                    continue
                worked, more = await self._publish_partition(p, steps, started)
                busy = busy or worked
                caught_up = caught_up and not more and p in self._held
            if until_caught_up and caught_up:
                return True
            if not busy:
                await self._sleep(max(0.0, min(self.poll_interval,
                                               self._next_beat - time.monotonic())))
        return True

    async def _publish_partition(
        self, p: int, steps: SubscriptionSteps, started: float
    ) -> tuple[bool, bool]:
        """One page of partition ``p``: (anything read or moved, more may follow)."""
        after = self.positions[p]
        page, upto, more, _ = await self._retrying_store(
            read_filtered, self.store, after, self.batch_size, self._wanted[p], False)
        if not page and upto <= after:
            return False, False
        cut = batches(page, steps, after, self.source, self.max_batch_bytes)
        last, messages = cut[-1]
        # The filtered read proved no event of this partition up to `upto`.
        cut[-1] = (max(last, upto), messages)
        for position, messages in cut:
            if messages and time.monotonic() >= self._next_beat:
                # A long page (a slow broker): heartbeat between its batches too, so that
                # the member and its other partitions' leases do not expire meanwhile.
                await self._rebalance()
                if p not in self._held:
                    return True, False  # released (a member joined) or taken: not ours
            checked = time.monotonic()
            if messages and checked - self._held[p] > self.lease_seconds / 2:
                # Half a lease since it was last extended: make sure it is still ours.
                if not await self._retrying_store(
                        self.checkpoints.renew, self._row(p), self.owner, self.lease_seconds):
                    _log.warning("eskit: relay group %r member %s lost partition %d",
                                 self.name, self.owner, p)
                    self._drop(p)
                    return True, False
                self._held[p] = checked
            if messages:
                self._in_flight = p
                try:
                    await self._publish(messages)
                finally:
                    self._in_flight = None
            self.published += len(messages)
            elapsed = time.monotonic() - started
            rate = self.published / elapsed if elapsed > 0 else None
            checked = time.monotonic()
            if not await self._retrying_store(
                    self.checkpoints.advance, self._row(p), self.owner, position,
                    len(messages), rate, self.lease_seconds):
                _log.warning("eskit: relay group %r member %s lost partition %d while "
                             "publishing; the batch up to position %s may be published again",
                             self.name, self.owner, p, position)
                self._drop(p)
                return True, False
            self.positions[p] = position
            if p in self._held:
                self._held[p] = checked
        return True, more
