"""Snapshots in the SQLite file of a :class:`~eskit.SQLiteEventStore`, table ``eskit_snapshots``.

The table is created by the store's second migration, so a store opened with
``create=True`` (the default) has it; a store written by an older eskit gains
it when first opened that way.

Design notes:

* **Same file, same connections.** The snapshot store borrows the event store's
  connections: its writes go through the one writer connection under the
  store's write lock, each in its own ``BEGIN IMMEDIATE`` transaction after the
  events it follows have committed (see :mod:`eskit.stores.sqlite` for why
  appends never use deferred transactions), and its reads through the store's
  reader pool. So it holds no connection of its own: closing the event store,
  a thread ending or a ``fork()`` are handled once, by the event store.
* **Never above the head.** The insert carries its own check: it stores the
  snapshot only if ``eskit_events`` holds the snapshot's event id at its
  version, in the same statement, so a snapshot can never describe an event
  that is not stored.
* **Two statements, not one.** Loading asks for the newest snapshot and the
  events after it. PostgreSQL answers both in one statement to save a round
  trip; in-process SQLite runs the two simple statements faster than one
  compound statement (about 21 against 32 microseconds), so it keeps them apart.
* **Pruning in the save's transaction.** With ``keep=N`` the save's
  ``BEGIN IMMEDIATE`` transaction also deletes the aggregate's snapshots below
  its N newest: one indexed ``DELETE`` on the primary key (stream, type,
  version), so a save never leaves more than N behind and a crash between the
  two cannot happen. :meth:`~SQLiteSnapshotStore.prune` runs the same
  statement for ``batch_size`` aggregates per transaction, walking the primary
  key, so each batch costs what its own snapshots cost.
* **Never blocks for long.** A snapshot is an optimisation: rather than wait
  the store's busy timeout (30 s by default) behind other writers, a save gives
  up after ``lock_timeout`` seconds with :class:`~eskit.StoreBusyError`, which
  the repository logs; the next save or load tries again.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from eskit.errors import DecodingError, StoreBusyError, StoreError
from eskit.events import StreamId
from eskit.snapshots import (
    AggregateKey,
    Snapshot,
    SnapshotStore,
    check_keep,
    no_event_there,
    snapshot_from_row,
)
from eskit.stores.model import MAX_VERSION
from eskit.stores.rows import micros_to_timestamp, timestamp_to_micros
from eskit.stores.sqlite import SQLiteEventStore, _translated

__all__ = ["SQLiteSnapshotStore"]

# INSERT ... SELECT ... WHERE EXISTS: the head check and the write are one statement.
_SAVE = """
INSERT OR REPLACE INTO eskit_snapshots
    (stream_id, aggregate_type, version, event_id, state_version, taken_at, state)
SELECT ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (
    SELECT 1 FROM eskit_events WHERE stream_id = ? AND version = ? AND event_id = ?
)
"""

_LATEST = """
SELECT version, event_id, state_version, taken_at, state FROM eskit_snapshots
WHERE stream_id = ? AND aggregate_type = ? AND version <= ?
ORDER BY version DESC LIMIT 1
"""

# Everything below the keep-th newest; the subquery is NULL (nothing deleted) with fewer.
# Named parameters: Python 3.12 deprecates numbered ones bound from a sequence.
_PRUNE = """
DELETE FROM eskit_snapshots
WHERE stream_id = :stream AND aggregate_type = :type AND version < (
    SELECT version FROM eskit_snapshots WHERE stream_id = :stream AND aggregate_type = :type
    ORDER BY version DESC LIMIT 1 OFFSET :offset
)
"""
_PRUNE_ALL = "DELETE FROM eskit_snapshots WHERE stream_id = ? AND aggregate_type = ?"

_FIRST_KEYS = """
SELECT DISTINCT stream_id, aggregate_type FROM eskit_snapshots
ORDER BY stream_id, aggregate_type LIMIT ?
"""
_KEYS_AFTER = """
SELECT DISTINCT stream_id, aggregate_type FROM eskit_snapshots
WHERE (stream_id, aggregate_type) > (?, ?)
ORDER BY stream_id, aggregate_type LIMIT ?
"""
_COUNT_KEYS = (
    "SELECT count(*) FROM (SELECT DISTINCT stream_id, aggregate_type FROM eskit_snapshots)"
)


def prune_one(conn: sqlite3.Connection, key: AggregateKey, keep: int) -> int:
    """Prune one aggregate to its ``keep`` newest snapshots, in the caller's transaction."""
    if keep == 0:
        return conn.execute(_PRUNE_ALL, key).rowcount
    stream, aggregate_type = key
    return conn.execute(
        _PRUNE, {"stream": stream, "type": aggregate_type, "offset": keep - 1}
    ).rowcount


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots kept in the same SQLite file as ``event_store``'s events.

    Raises :class:`~eskit.StoreError` if the file has no snapshot table (an
    older store opened with ``create=False``: open it once with
    ``create=True`` to upgrade it). Closing the event store closes this too.
    ``keep=N``: each save also deletes, in its transaction, that aggregate's
    snapshots below its N newest.
    """

    event_store: SQLiteEventStore

    def __init__(
        self, event_store: SQLiteEventStore, *, lock_timeout: float = 1.0,
        keep: int | None = None,
    ) -> None:
        if not isinstance(event_store, SQLiteEventStore):
            raise StoreError(
                f"SQLiteSnapshotStore needs a SQLiteEventStore, got {type(event_store).__name__}"
            )
        self.event_store = event_store
        self.lock_timeout = float(lock_timeout)
        self.keep = None if keep is None else check_keep(keep, minimum=1)
        with event_store._reading() as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'eskit_snapshots'"
            ).fetchone()
        if found is None:
            raise StoreError(
                f"{event_store.path!r} has no snapshot table: it was written by an older "
                "eskit and opened with create=False; open it once with create=True to upgrade"
            )

    def _save(self, stream: str, snapshot: Snapshot) -> None:
        store = self.event_store
        with _translated(store.path):
            conn = store._lock_writer(timeout=self.lock_timeout)
        if conn is None:
            raise StoreBusyError(
                f"{store.path!r}: other writers held the store for {self.lock_timeout} s; "
                "the snapshot was not written"
            )
        try:
            with _translated(store.path):
                self._write(conn, stream, snapshot, store._busy_timeout)
        finally:
            store._write_lock.release()

    def _write(
        self, conn: sqlite3.Connection, stream: str, snapshot: Snapshot, busy_timeout: float
    ) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                event_id = snapshot.event_id.bytes
                cursor = conn.execute(_SAVE, (
                    stream, snapshot.aggregate_type, snapshot.version, event_id,
                    snapshot.state_version, timestamp_to_micros(snapshot.taken_at),
                    snapshot.state.decode(), stream, snapshot.version, event_id,
                ))
                stored = cursor.rowcount == 1
                if stored and self.keep is not None:
                    prune_one(conn, (stream, snapshot.aggregate_type), self.keep)
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if not stored:
            raise no_event_there(snapshot)

    def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        limit = MAX_VERSION if max_version is None else max_version
        with self.event_store._reading() as conn:
            row = conn.execute(_LATEST, (stream, aggregate_type, limit)).fetchone()
        if row is None:
            return None
        version, event_id, state_version, taken_at, state = row
        return snapshot_from_row(
            aggregate_id, aggregate_type, version, event_id, state_version, state,
            _timestamp(taken_at),
        )

    def _aggregates_after(self, after: AggregateKey | None, limit: int) -> list[AggregateKey]:
        with self.event_store._reading() as conn:
            if after is None:
                rows = conn.execute(_FIRST_KEYS, (limit,)).fetchall()
            else:
                rows = conn.execute(_KEYS_AFTER, (*after, limit)).fetchall()
        return [(stream, kind) for stream, kind in rows]

    def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        store = self.event_store
        # Maintenance may wait for other writers as long as an append would.
        with _translated(store.path):
            conn = store._lock_writer()
            assert conn is not None  # no timeout: it waits
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    deleted = sum(prune_one(conn, key, keep) for key in keys)
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            finally:
                store._write_lock.release()
        return deleted

    def _count_aggregates(self) -> int:
        with self.event_store._reading() as conn:
            return int(conn.execute(_COUNT_KEYS).fetchone()[0])


def _timestamp(value: Any) -> Any:
    if type(value) is not int:
        return value  # snapshot_from_row reports it
    try:
        return micros_to_timestamp(value)
    except (OverflowError, ValueError) as exc:
        raise DecodingError(f"stored snapshot has a bad time {value!r}") from exc
