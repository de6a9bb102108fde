"""Appending inside a transaction the caller owns, on SQLite.

``store.in_transaction(conn)`` gives a :class:`SQLiteTransaction`: its
:meth:`~SQLiteTransaction.append` runs eskit's append statements on the
application's own ``sqlite3.Connection``, inside its open transaction, so the
application's writes and its events commit or roll back together. eskit never
commits, rolls back (beyond its own savepoint) or closes that connection. The
same shape as :class:`eskit.stores.postgres_transaction.PostgresTransaction`.

Why global order holds: SQLite lets one writer in at a time and the events get
their positions at insert, so a transaction that appended keeps every other
writer of the file out until it commits or rolls back; readers see only
committed rows (WAL snapshots), so a later position never becomes visible
before an earlier one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol
from uuid import UUID

from eskit.dcb import AppendCondition, check_condition
from eskit.errors import AppendConditionFailed, InvalidInputError, StoreError
from eskit.events import Event, EventRegistry, StreamId
from eskit.observability import _hooks
from eskit.stores import sqlite_dcb
from eskit.stores.arguments import check_expected, prepare_batch, resolve_conflict, stream_key
from eskit.stores.model import (
    ANY,
    AppendInput,
    AppendResult,
    Expected,
    PendingEvent,
    StreamAppend,
)
from eskit.stores.multi import prepare_appends
from eskit.stores.sqlite_multi import append_many_in_savepoint

__all__ = ["SQLiteTransaction", "check_caller"]

SAVEPOINT = "eskit_append"


class _Store(Protocol):
    """What this module uses of :class:`eskit.SQLiteEventStore` (which imports it)."""

    path: str
    registry: EventRegistry
    max_event_bytes: int
    _memory: bool
    _visible: str

    def _usable(self) -> None: ...

    def _needs_tags(self) -> None: ...

    def _translating(self) -> AbstractContextManager[None]: ...

    def _insert(
        self, conn: sqlite3.Connection, stream: str, expected: Expected,
        batch: list[PendingEvent],
    ) -> tuple[int, int] | None: ...

    def _head_in(self, conn: sqlite3.Connection, stream: str) -> int: ...

    def _find(
        self, conn: sqlite3.Connection, batch: Sequence[PendingEvent]
    ) -> dict[UUID, Event]: ...

    def _recorded(
        self, stream_id: StreamId, batch: list[PendingEvent], head: int, start: int
    ) -> AppendResult: ...


def check_caller(store: _Store, connection: object, *, need_transaction: bool) -> None:
    """Refuse, before writing, a connection eskit cannot append on without committing
    it or missing the store's file: :class:`~eskit.InvalidInputError`."""
    if not isinstance(connection, sqlite3.Connection):
        raise InvalidInputError(
            f"connection must be a sqlite3.Connection, not {type(connection).__name__}"
        )
    if store._memory:
        raise InvalidInputError(
            "an in-memory store shares its database with no other connection: "
            "appending in a caller's transaction needs a store in a file"
        )
    store._usable()
    try:
        in_transaction = connection.in_transaction
        with _plain(connection):
            files = connection.execute("PRAGMA database_list").fetchall()
            # A TEMP table of that name would take the events instead of the file.
            shadowed = connection.execute(
                "SELECT count(*) FROM temp.sqlite_master WHERE name LIKE 'eskit\\_%' "
                "ESCAPE '\\'"
            ).fetchone()[0]
    except sqlite3.ProgrammingError as exc:  # closed, or owned by another thread
        raise InvalidInputError(f"the connection cannot be used: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite error on the caller's connection: {exc}") from exc
    # Only the main database: in WAL mode a transaction across ATTACHed files is
    # atomic per file, not as a whole (https://www.sqlite.org/lang_attach.html).
    main = next((file for _, name, file in files if name == "main"), "")
    if not main or not _same_file(main, store.path):
        raise InvalidInputError(
            f"the connection's main database is {main or 'in memory'!r}, not this "
            f"store's file {store.path!r}"
        )
    if shadowed:
        raise InvalidInputError(
            "the connection has TEMP objects named eskit_*, which would hide the "
            "store's own tables"
        )
    if need_transaction and not in_transaction:
        raise InvalidInputError(
            "the connection has no open transaction; begin one first (BEGIN IMMEDIATE, "
            "or write your own rows first): eskit never commits a caller's connection"
        )


def append_on(
    store: _Store, conn: sqlite3.Connection, stream_id: StreamId, stream: str,
    expected: Expected, batch: list[PendingEvent], condition: AppendCondition | None = None,
) -> AppendResult:
    """The append, in a savepoint of the caller's transaction on ``conn``.

    A ``condition`` is checked after the insert, which is what takes SQLite's
    write lock (a deferred transaction holds none before it writes, and one whose
    snapshot is stale fails to write): from then on no other writer can commit
    until the caller's transaction ends, so nothing can appear between the check
    and the commit. The check leaves out this append's own positions and sees
    the transaction's earlier writes, as a later append would.
    """
    # A savepoint, so that a failed append undoes only itself and the caller's
    # transaction goes on; RELEASE inside a transaction commits nothing.
    with store._translating(), _plain(conn):
        conn.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            placed = store._insert(conn, stream, expected, batch)
            if condition is not None and not sqlite_dcb.condition_holds(
                conn, condition.fail_if_events_match, condition.after_position,
                store._visible, own=_own_positions(placed, batch),
            ):
                _undo_savepoint(conn)
                raise AppendConditionFailed(stream_id, condition)
        except sqlite3.IntegrityError:  # an event id stored already: undo, then say why
            _undo_savepoint(conn)
            placed = None
        except AppendConditionFailed:
            raise
        except BaseException as exc:
            _undo_savepoint(conn)
            if not conn.in_transaction:  # SQLite rolled back the caller's work too
                raise StoreError(
                    "SQLite rolled back the whole transaction on the caller's "
                    f"connection, the application's own writes too: {exc}"
                ) from exc
            raise
        else:
            if placed is None:
                _undo_savepoint(conn)
            else:
                conn.execute(f"RELEASE {SAVEPOINT}")
        if placed is None:
            return resolve_conflict(
                stream_id, stream, expected, store._head_in(conn, stream), batch,
                store._find(conn, batch),
            )
    return store._recorded(stream_id, batch, *placed)


def _own_positions(
    placed: tuple[int, int] | None, batch: list[PendingEvent]
) -> tuple[int, int] | None:
    """The first and last position of the batch just inserted (``None``: nothing was)."""
    if placed is None:
        return None
    start = placed[1]
    return start + 1, start + len(batch)


class SQLiteTransaction:
    """Appends to a :class:`~eskit.SQLiteEventStore` inside the caller's transaction.

    Made by :meth:`eskit.SQLiteEventStore.in_transaction`. Guaranteed: the events
    become visible exactly when the caller commits its transaction, together with
    its other writes, and vanish if it rolls back; eskit never commits the
    connection. Each append runs in a ``SAVEPOINT``: a failed one
    (:class:`~eskit.ConcurrencyError`, :class:`~eskit.DuplicateEventError`, a
    SQLite error) rolls back to it alone and the transaction stays usable; if
    SQLite rolled back the whole transaction itself, the append raises
    :class:`~eskit.StoreError` saying so. Global order holds (see the module):
    every other writer of the file waits until the caller commits or rolls back,
    so keep the transaction short. Not guaranteed: a deferred transaction that has
    only read may fail to start writing (:class:`~eskit.StoreBusyError`); begin
    with ``BEGIN IMMEDIATE``.
    """

    def __init__(self, store: Any, connection: sqlite3.Connection) -> None:
        check_caller(store, connection, need_transaction=False)
        self.store: _Store = store
        self.connection = connection

    def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append ``events`` in the caller's transaction; as :meth:`EventStore.append` otherwise.

        The result's positions are the events' positions once the transaction
        commits; after a rollback those numbers go to later events. Events keep
        their DCB tags. ``condition`` (an :class:`~eskit.AppendCondition`) is
        checked atomically with the rest of the transaction: no other writer can
        commit between the check and the caller's commit. If it fails,
        :class:`~eskit.AppendConditionFailed` is raised and this append is rolled
        back to its savepoint (the caller's earlier writes stay: roll back the
        transaction to drop them too). The condition sees the transaction's own
        earlier writes.
        """
        store = self.store
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        batch = prepare_batch(
            stream, events, registry=store.registry, max_event_bytes=store.max_event_bytes
        )
        check_caller(store, self.connection, need_transaction=True)
        if condition is not None:
            store._needs_tags()
        if (observer := _hooks.active) is None:
            return append_on(store, self.connection, stream_id, stream, expected, batch,
                             condition)
        with observer.append(store, stream, batch):  # a span; its context into metadata
            return append_on(store, self.connection, stream_id, stream, expected, batch,
                             condition)

    def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Several streams in the caller's transaction, all or none; as
        :meth:`EventStore.append_many` otherwise. A refusal rolls back to its savepoint.
        """
        store = self.store
        prepared = prepare_appends(
            appends, registry=store.registry, max_event_bytes=store.max_event_bytes
        )
        check_caller(store, self.connection, need_transaction=True)
        with _plain(self.connection):
            return append_many_in_savepoint(store, self.connection, prepared)

    def __enter__(self) -> SQLiteTransaction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Nothing to do: the caller commits or rolls back its own transaction.
        return None


def _undo_savepoint(conn: sqlite3.Connection) -> None:
    """Roll back to, and drop, the append's savepoint (if SQLite kept the transaction)."""
    if conn.in_transaction:
        conn.execute(f"ROLLBACK TO {SAVEPOINT}")
        conn.execute(f"RELEASE {SAVEPOINT}")


class _plain:  # lower case: it reads like a function
    """Plain tuples and str from the caller's connection while eskit uses it.

    Why: a connection's ``row_factory`` (dicts unpack as their keys) and
    ``text_factory`` (bytes) would change what eskit's statements return; the
    caller's settings come back afterwards. The caller's thread is inside our call.
    """

    __slots__ = ("conn", "row_factory", "text_factory")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        conn = self.conn
        self.row_factory, self.text_factory = conn.row_factory, conn.text_factory
        conn.row_factory, conn.text_factory = None, str

    def __exit__(self, *exc: object) -> None:
        self.conn.row_factory, self.conn.text_factory = self.row_factory, self.text_factory


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
