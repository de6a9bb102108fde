"""``append_many`` on SQLite: several streams in one ``BEGIN IMMEDIATE`` transaction.

The store's own one-stream insert runs once per stream, in the order of the call,
so positions increase in that order and each stream's expectation is checked by
the same statement a single append uses. SQLite has one writer at a time, so no
other append can run between the inserts; a stream that is not where the call
expects it (or an event id stored already) rolls the whole transaction back, and
then :func:`~eskit.stores.multi.resolve_many` decides, from a consistent read,
what the refusal means.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol
from uuid import UUID

from eskit.dcb import AppendCondition
from eskit.errors import StoreBusyError, StoreError
from eskit.events import Event, StreamId
from eskit.stores.model import AppendResult, Expected, PendingEvent
from eskit.stores.multi import PreparedAppend, condition_failed, resolve_many
from eskit.stores.sqlite_dcb import condition_holds


class _Store(Protocol):
    """What this module needs of the store (a protocol: the store module imports this one)."""

    def _translating(self) -> AbstractContextManager[Any]: ...

    def _insert(self, conn: sqlite3.Connection, stream: str, expected: Expected,
                batch: list[PendingEvent]) -> tuple[int, int] | None: ...

    def _recorded(self, stream_id: StreamId, batch: list[PendingEvent], head: int,
                  start: int) -> AppendResult: ...

    def _head_in(self, conn: sqlite3.Connection, stream: str) -> int: ...

    def _find(self, conn: sqlite3.Connection,
              batch: Sequence[PendingEvent]) -> dict[UUID, Event]: ...

    _visible: str


class _Writer(_Store, Protocol):
    def _retry_busy(self, action: Any) -> Any: ...


__all__: list[str] = []

SAVEPOINT = "eskit_append_many"

# A refused call whose consistent re-read says it may be written after all can only
# follow a change by another process between the two transactions: go again, a
# few times at most.
MAX_ATTEMPTS = 3


def append_many_locked(
    store: _Writer, conn: sqlite3.Connection, prepared: list[PreparedAppend],
    condition: AppendCondition | None = None,
) -> list[AppendResult]:
    """The whole call on the writer connection ``conn``; the caller holds the write lock.

    With a ``condition``: checked in the same ``BEGIN IMMEDIATE`` transaction as the
    inserts, before them; the write lock is held, so nothing can be appended in
    between (see :mod:`eskit.stores.sqlite_dcb`).
    """
    with store._translating():
        for _ in range(MAX_ATTEMPTS):
            store._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                if condition is not None and not condition_holds(
                    conn, condition.fail_if_events_match, condition.after_position,
                    store._visible,
                ):
                    # A stored retry matches its own events; a stream that moved is
                    # reported as one: decide as a refused plain call would, first.
                    heads = {a.stream: store._head_in(conn, a.stream) for a in prepared}
                    found = store._find(conn, [p for a in prepared for p in a.batch])
                    conn.execute("ROLLBACK")
                    retried = resolve_many(prepared, heads, found)
                    if retried is not None:
                        return retried
                    raise condition_failed(prepared, condition)
                placed = _insert_all(store, conn, prepared)
                if placed is not None:
                    conn.execute("COMMIT")
                    return [
                        store._recorded(a.stream_id, a.batch, head, start)
                        for a, (head, start) in zip(prepared, placed, strict=True)
                    ]
                # Roll back before reading: the rows of the streams inserted before
                # the refusal must not be taken for a stored copy of the call.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN")  # one snapshot for the heads and the ids
                heads = {a.stream: store._head_in(conn, a.stream) for a in prepared}
                found = store._find(conn, [p for a in prepared for p in a.batch])
                conn.execute("ROLLBACK")
                retried = resolve_many(prepared, heads, found)
                if retried is not None:
                    return retried
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
    raise StoreBusyError(
        f"append_many was refused and then found writable {MAX_ATTEMPTS} times in a row "
        "(another process kept changing the streams); nothing was written"
    )


def append_many_in_savepoint(
    store: _Store, conn: sqlite3.Connection, prepared: list[PreparedAppend]
) -> list[AppendResult]:
    """The call in a savepoint of the caller's open transaction on ``conn``.

    A refusal rolls back to the savepoint and the caller's transaction goes on;
    eskit commits nothing (RELEASE inside a transaction commits nothing).
    """
    with store._translating():
        conn.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            placed = _insert_all(store, conn, prepared)
        except BaseException as exc:
            _undo(conn)
            if not conn.in_transaction:  # SQLite rolled back the caller's work too
                raise StoreError(
                    "SQLite rolled back the whole transaction on the caller's "
                    f"connection, the application's own writes too: {exc}"
                ) from exc
            raise
        if placed is not None:
            conn.execute(f"RELEASE {SAVEPOINT}")
            return [
                store._recorded(a.stream_id, a.batch, head, start)
                for a, (head, start) in zip(prepared, placed, strict=True)
            ]
        _undo(conn)
        # The caller's transaction holds the write lock now: nothing moved since.
        heads = {a.stream: store._head_in(conn, a.stream) for a in prepared}
        retried = resolve_many(prepared, heads,
                               store._find(conn, [p for a in prepared for p in a.batch]))
    if retried is None:
        raise StoreError("append_many was refused, yet nothing in the transaction refuses it")
    return retried


def _undo(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute(f"ROLLBACK TO {SAVEPOINT}")
        conn.execute(f"RELEASE {SAVEPOINT}")


def _insert_all(
    store: _Store, conn: sqlite3.Connection, prepared: list[PreparedAppend]
) -> list[tuple[int, int]] | None:
    """Each stream's ``(head, start)``, or ``None`` once one of them is refused."""
    placed: list[tuple[int, int]] = []
    for a in prepared:
        try:
            spot = store._insert(conn, a.stream, a.expected, a.batch)
        except sqlite3.IntegrityError:  # an event id stored already
            return None
        if spot is None:  # the stream is not where the call expects it
            return None
        placed.append(spot)
    return placed
