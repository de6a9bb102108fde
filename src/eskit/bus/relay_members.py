"""Relay groups' members and partition counts, kept next to the relay checkpoints.

A table ``eskit_relay_members`` beside ``eskit_relays`` (same SQLite file, same
PostgreSQL schema, created the same way on first use; in memory for an in-memory
store). Per group, one row per live member with its expiry (wall clock,
microseconds, like the relay leases), and one row with an empty member name that
holds the group's partition count for good: a member started with another count
is refused, since the count decides which partition (and so which checkpoint)
each stream belongs to. Each call is one short transaction on the checkpoints'
own connection. No I/O at import or construction.

A group named like an existing plain relay starts where that relay stopped: the
beat that creates the group gives every partition's checkpoint that relay's
position (everything before it was published), in the same transaction, and
waits (:class:`RelayStillRunning`) while that relay still holds its lease.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from eskit.bus.checkpoints import (
    MemoryCheckpoints,
    RelayCheckpoints,
    SQLCheckpoints,
    now_micros,
)
from eskit.errors import InvalidInputError, StoreError

__all__ = ["GroupMembers", "RelayStillRunning", "members_for"]


class RelayStillRunning(StoreError):
    """A plain relay of the group's name holds its lease: the group waits to start.

    A :class:`~eskit.errors.StoreError`, so that the checkpoints' transaction passes
    it through as it is (after rolling back)."""


def _mismatch(group: str, stored: int, partitions: int) -> InvalidInputError:
    return InvalidInputError(
        f"relay group {group!r} has {stored} partitions, not {partitions}: every member "
        f"must pass the same count (a new count needs a new group name)")


class GroupMembers(ABC):
    """Where relay-group members say they are alive (async; each call one transaction)."""

    @abstractmethod
    async def beat(self, group: str, member: str, partitions: int, ttl: float) -> list[str]:
        """Renew ``member`` for ``ttl`` seconds, forget expired members; the live ones, sorted.

        Raises :class:`~eskit.InvalidInputError` if the group was created with
        another partition count, and :class:`RelayStillRunning` (nothing done) if
        this beat would create the group while a plain relay of its name runs.
        """

    @abstractmethod
    async def leave(self, group: str, member: str) -> None:
        """Remove ``member`` (a clean stop): the others rebalance at their next beat."""

    @abstractmethod
    async def groups(self) -> dict[str, tuple[int, list[str]]]:
        """Every group: its partition count and its live members (sorted); creates nothing."""


class MemoryMembers(GroupMembers):
    """Members in process memory, for an in-memory store's relay groups."""

    def __init__(self, checkpoints: MemoryCheckpoints) -> None:
        self._checkpoints = checkpoints
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._expiry: dict[str, dict[str, int]] = {}

    def _create(self, group: str, partitions: int, now: int) -> None:
        relays = self._checkpoints
        with relays._lock:
            plain = relays._rows.get(group)
            if plain is None:
                return
            if plain["owner"] is not None and plain["lease_until"] >= now:
                raise RelayStillRunning(group)
            for p in range(partitions):
                if f"{group}/{p}" not in relays._rows:
                    relays._get(f"{group}/{p}")["position"] = plain["position"]

    async def beat(self, group: str, member: str, partitions: int, ttl: float) -> list[str]:
        now = now_micros()
        with self._lock:
            if group not in self._counts:
                self._create(group, partitions, now)
            stored = self._counts.setdefault(group, partitions)
            if stored != partitions:
                raise _mismatch(group, stored, partitions)
            expiry = self._expiry.setdefault(group, {})
            expiry[member] = now + int(ttl * 1e6)
            for name, until in list(expiry.items()):
                if until < now:
                    del expiry[name]
            return sorted(expiry)

    async def leave(self, group: str, member: str) -> None:
        with self._lock:
            self._expiry.get(group, {}).pop(member, None)

    async def groups(self) -> dict[str, tuple[int, list[str]]]:
        now = now_micros()
        with self._lock:
            return {
                group: (count, sorted(m for m, until in self._expiry.get(group, {}).items()
                                      if until >= now))
                for group, count in sorted(self._counts.items())
            }


_TABLE = """CREATE TABLE IF NOT EXISTS eskit_relay_members (
    grp        TEXT    NOT NULL,
    member     TEXT    NOT NULL,
    partitions INTEGER NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (grp, member)
)"""


class SQLMembers(GroupMembers):
    """Members in an ``eskit_relay_members`` table, through ``checkpoints``' connection."""

    def __init__(self, checkpoints: SQLCheckpoints) -> None:
        self._checkpoints = checkpoints
        # The checkpoints' table name, schema-qualified on PostgreSQL.
        self._table = checkpoints._table.removesuffix("eskit_relays") + "eskit_relay_members"
        self._ready = False

    def _q(self, query: str) -> str:
        return query.replace("eskit_relay_members", self._table)

    def _create(self, run: Callable[..., Any]) -> None:
        if self._ready:
            return
        if self._checkpoints._dialect == "postgres":
            # Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog.
            run("SELECT pg_advisory_xact_lock(hashtext(?))",
                (f"eskit-relay-members-setup:{self._table}",))
        run(self._q(_TABLE))

    async def beat(self, group: str, member: str, partitions: int, ttl: float) -> list[str]:
        def work(run: Callable[..., Any]) -> list[str]:
            self._create(run)
            if self._checkpoints._dialect == "postgres":
                # One group's beats take turns (SQLite's BEGIN IMMEDIATE already does):
                # two late members each dropping the other's row cannot deadlock.
                run("SELECT pg_advisory_xact_lock(hashtext(?))",
                    (f"eskit-relay-group:{self._table}:{group}",))
            now = now_micros()
            created = run(self._q("INSERT INTO eskit_relay_members (grp, member, partitions) "
                                  "VALUES (?, ?, ?) ON CONFLICT (grp, member) DO NOTHING"),
                          (group, "", partitions)).rowcount == 1
            if created:
                _start_from_plain_relay(run, group, partitions, now)
            stored = int(run(self._q("SELECT partitions FROM eskit_relay_members "
                                     "WHERE grp = ? AND member = ?"), (group, "")).fetchall()[0][0])
            if stored != partitions:
                raise _mismatch(group, stored, partitions)
            run(self._q("INSERT INTO eskit_relay_members (grp, member, partitions, expires_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (grp, member) "
                        "DO UPDATE SET expires_at = excluded.expires_at"),
                (group, member, partitions, now + int(ttl * 1e6)))
            run(self._q("DELETE FROM eskit_relay_members "
                        "WHERE grp = ? AND member <> ? AND expires_at < ?"), (group, "", now))
            rows = run(self._q("SELECT member FROM eskit_relay_members "
                               "WHERE grp = ? AND member <> ? ORDER BY member"),
                       (group, "")).fetchall()
            return [r[0] for r in rows]

        live = await self._checkpoints._run(work)
        self._ready = True
        return live

    async def leave(self, group: str, member: str) -> None:
        def work(run: Callable[..., Any]) -> None:
            self._create(run)
            run(self._q("DELETE FROM eskit_relay_members WHERE grp = ? AND member = ?"),
                (group, member))

        await self._checkpoints._run(work)
        self._ready = True

    async def groups(self) -> dict[str, tuple[int, list[str]]]:
        sqlite = self._checkpoints._dialect == "sqlite"

        def work(run: Callable[..., Any]) -> dict[str, tuple[int, list[str]]]:
            if sqlite:
                found = run("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'eskit_relay_members'").fetchall()
            else:
                found = run("SELECT to_regclass(?)", (self._table,)).fetchall()[0][0]
            if not found:
                return {}
            out: dict[str, tuple[int, list[str]]] = {}
            now = now_micros()
            for grp, member, count, until in run(self._q(
                    "SELECT grp, member, partitions, expires_at FROM eskit_relay_members "
                    "ORDER BY grp, member")).fetchall():
                _, members = out.setdefault(grp, (int(count), []))
                if member and until is not None and int(until) >= now:
                    members.append(member)
            return out

        return await self._checkpoints._run(work, create=False)


def _start_from_plain_relay(run: Callable[..., Any], group: str, partitions: int,
                            now: int) -> None:
    """A new group named like a plain relay: each partition starts at its checkpoint."""
    found = run("SELECT position, owner, lease_until FROM eskit_relays WHERE name = ?",
                (group,)).fetchall()
    if not found:
        return
    position, owner, until = found[0]
    if owner is not None and until is not None and int(until) >= now:
        raise RelayStillRunning(group)  # rolls the group's creation back: tried again
    for p in range(partitions):
        run("INSERT INTO eskit_relays (name, position) VALUES (?, ?) "
            "ON CONFLICT (name) DO NOTHING", (f"{group}/{p}", position))


_memory: weakref.WeakKeyDictionary[MemoryCheckpoints, MemoryMembers] = (
    weakref.WeakKeyDictionary()
)
_memory_lock = threading.Lock()


def members_for(checkpoints: RelayCheckpoints) -> GroupMembers:
    """The group members table that goes with ``checkpoints`` (same database)."""
    if isinstance(checkpoints, MemoryCheckpoints):
        with _memory_lock:
            held = _memory.get(checkpoints)
            if held is None:
                held = _memory[checkpoints] = MemoryMembers(checkpoints)
            return held
    if isinstance(checkpoints, SQLCheckpoints):
        return SQLMembers(checkpoints)
    raise InvalidInputError(
        f"relay groups need eskit's relay checkpoints, got {type(checkpoints).__name__}")
