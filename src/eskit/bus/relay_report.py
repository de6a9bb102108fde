"""Relay status: every relay's checkpoint, lag, rate, last error and lease.

:func:`relay_status` (and :func:`relay_status_async`) read the relays' table and
count the lag by reading after each checkpoint; a relay group's partitions (rows
``GROUP/p``, see :mod:`eskit.bus.relay_group`) are marked with their group and
partition, and their lag counts only their partition's events. Reading creates
nothing. Also :mod:`eskit.bus.relay` re-exports these names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eskit.bus.checkpoints import RelayRow, checkpoints_for
from eskit.bus.relay_members import members_for
from eskit.stores.filtered import ReadFilter

__all__ = ["RelayStatus", "relay_status", "relay_status_async"]


def _is_async(store: object) -> bool:
    from eskit.aio.store import AsyncEventStore

    return isinstance(store, AsyncEventStore)


async def _read_page(store: Any, after: int, limit: int, mode: str = "raise") -> list[Any]:
    if _is_async(store):
        return [event async for event in store.read_all(after, limit=limit,
                                                        on_undecodable=mode)]
    return await asyncio.to_thread(
        lambda: list(store.read_all(after, limit=limit, on_undecodable=mode)))


async def read_filtered(
    store: Any, after: int, limit: int, wanted: ReadFilter, tolerant: bool
) -> tuple[list[Any], int, bool, int]:
    """A store's filtered page (``eskit.stores.filtered``): ``(events, checkpoint, more,
    rows read)``, the events of ``wanted`` only, filtered in the database."""
    if _is_async(store):
        page: tuple[list[Any], int, bool, int] = await store._filtered_page(
            after, limit, wanted, tolerant)
        return page
    return await asyncio.to_thread(store._filtered_page, after, limit, wanted, tolerant)


async def _head(store: Any) -> int:
    if _is_async(store):
        return int(await store.head_position())
    return int(await asyncio.to_thread(store.head_position))


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """One relay (or one partition of a relay group) as :func:`relay_status` sees it."""

    name: str
    destination: str
    position: int
    head_position: int
    lag_events: int
    """Events after the checkpoint (filtered-out ones included; a group partition's only)."""
    lag_seconds: float
    """Age of the oldest unpublished event (0 when caught up)."""
    rate: float
    """Events per second of the relay's last run, as it last recorded."""
    published: int
    last_error: str | None
    lease_owner: str | None
    """The relay (a group's member) publishing it now, if any."""
    lease_until: datetime | None
    updated_at: datetime | None
    group: str | None = None
    """The relay group whose partition this is (``name`` is ``GROUP/partition``)."""
    partition: int | None = None
    partitions: int | None = None
    """The group's partition count."""
    members: tuple[str, ...] = ()
    """The group's live members (sorted), for a group's partition."""


def _group_of(row: RelayRow, groups: dict[str, tuple[int, list[str]]]) -> tuple[str, int] | None:
    group, slash, number = row.name.rpartition("/")
    if not slash or group not in groups or not number.isdigit() or number != str(int(number)):
        return None
    partition = int(number)
    return (group, partition) if partition < groups[group][0] else None


async def _lag(
    store: Any, after: int, wanted: ReadFilter | None, limit: int
) -> tuple[int, datetime | None]:
    lag = 0
    oldest: datetime | None = None
    while lag < limit:
        if wanted is None:
            page = await _read_page(store, after, 1000, "yield")  # count what cannot be read
            more = len(page) >= 1000
            after = page[-1].position or after if page else after
        else:
            page, after, more, _ = await read_filtered(store, after, 1000, wanted, True)
        if page and oldest is None:
            oldest = page[0].timestamp
        lag += len(page)
        if not more:
            break
    return lag, oldest


async def relay_status_async(store: Any, *, lag_limit: int = 1_000_000) -> list[RelayStatus]:
    """:func:`relay_status` for async code."""
    checkpoints = checkpoints_for(store)
    try:
        rows = await checkpoints.rows()
        groups = await members_for(checkpoints).groups() if rows else {}
    finally:
        await checkpoints.close()
    head = await _head(store)
    out = []
    now = datetime.now(UTC)
    for row in rows:
        member_of = _group_of(row, groups)
        wanted = None
        if member_of is not None:
            wanted = ReadFilter(None, None).in_partitions(groups[member_of[0]][0], [member_of[1]])
        lag, oldest = await _lag(store, row.position, wanted, lag_limit)
        seconds = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        extra: dict[str, Any] = {}
        if member_of is not None:
            count, members = groups[member_of[0]]
            extra = {"group": member_of[0], "partition": member_of[1], "partitions": count,
                     "members": tuple(members)}
        out.append(RelayStatus(
            row.name, row.destination, row.position, head, lag, seconds, row.rate,
            row.published, row.last_error, row.owner, row.lease_until, row.updated_at,
            **extra,
        ))
    return out


def relay_status(store: Any, *, lag_limit: int = 1_000_000) -> list[RelayStatus]:
    """Every relay of ``store``: checkpoint, lag (events, seconds), rate, last error, lease.

    ``lag_events`` is counted by reading after the checkpoint, up to ``lag_limit``.
    A relay group shows one row per partition, its owner the member publishing it.
    For a sync store; from async code use :func:`relay_status_async`.
    """
    return asyncio.run(relay_status_async(store, lag_limit=lag_limit))
