"""Stream deletion on SQLite: the schema 3 -> 4 migration and the delete itself.

A deleted stream has a row in ``eskit_deleted_streams``: ``hard = 0`` hides its
events from every read (they stay stored, restorable), ``hard = 1`` is a
tombstone. The append-only triggers stay; the delete trigger now lets a row go
only if its stream has a tombstone, which only :func:`delete_stream` writes, in
the same transaction as the DELETE. A tombstone itself can be neither removed nor
turned back into a soft delete, and no event can be inserted into a deleted
stream (eskit checks first; the trigger catches raw SQL). See docs/storage.md.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from eskit.events import StreamId
from eskit.stores.deletion import deleted_error, must_write_delete
from eskit.stores.model import Expected
from eskit.stores.rows import timestamp_to_micros
from eskit.stores.sqlite_archive import archived_error, archived_in

__all__ = ["MIGRATION", "VISIBLE", "delete_stream", "deleted_state", "restore_stream"]

_log = logging.getLogger("eskit.stores.sqlite")

# 3 -> 4. IF NOT EXISTS / IF EXISTS: a file moved back to an older schema number by
# hand (tests do) still migrates.
MIGRATION = [
    """CREATE TABLE IF NOT EXISTS eskit_deleted_streams (
           stream_id  TEXT    PRIMARY KEY,
           hard       INTEGER NOT NULL CHECK (hard IN (0, 1)),
           version    INTEGER NOT NULL,  -- the stream's head when it was deleted
           position   INTEGER NOT NULL,  -- its last event's position (0: none)
           deleted_at INTEGER NOT NULL   -- microseconds since 1970-01-01 UTC
       ) WITHOUT ROWID""",
    "DROP TRIGGER IF EXISTS eskit_events_no_delete",
    """CREATE TRIGGER eskit_events_no_delete BEFORE DELETE ON eskit_events
       WHEN NOT EXISTS (SELECT 1 FROM eskit_deleted_streams d
                        WHERE d.stream_id = OLD.stream_id AND d.hard = 1)
       BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS eskit_events_not_deleted BEFORE INSERT ON eskit_events
       WHEN EXISTS (SELECT 1 FROM eskit_deleted_streams d WHERE d.stream_id = NEW.stream_id)
       BEGIN SELECT RAISE(ABORT, 'eskit stream is deleted'); END""",
    """CREATE TRIGGER IF NOT EXISTS eskit_tombstones_stay BEFORE DELETE
       ON eskit_deleted_streams WHEN OLD.hard = 1
       BEGIN SELECT RAISE(ABORT, 'eskit tombstones are permanent'); END""",
    """CREATE TRIGGER IF NOT EXISTS eskit_tombstones_stay_hard BEFORE UPDATE
       ON eskit_deleted_streams WHEN OLD.hard = 1
       BEGIN SELECT RAISE(ABORT, 'eskit tombstones are permanent'); END""",
]

VISIBLE = (
    " AND NOT EXISTS (SELECT 1 FROM eskit_deleted_streams d "
    "WHERE d.stream_id = eskit_events.stream_id)"
)
"""Appended to a WHERE on eskit_events: only events of streams not deleted."""


def deleted_state(conn: sqlite3.Connection, stream: str) -> bool | None:
    """``None`` if ``stream`` is not deleted, else whether it was hard-deleted."""
    row = conn.execute(
        "SELECT hard FROM eskit_deleted_streams WHERE stream_id = ?", (stream,)
    ).fetchone()
    return None if row is None else bool(row[0])


def delete_stream(store: Any, stream_id: StreamId, stream: str, expected: Expected,
                  hard: bool) -> int:
    """The delete, in one ``BEGIN IMMEDIATE`` transaction on the writer."""
    from eskit.events import utc_now

    with store._maintenance() as conn:
        # An archived stream's events are in its segment: a delete here would strand
        # them (a restore could never put them back). Restore it first.
        if store._archives and (where := archived_in(conn, stream)) is not None:
            raise archived_error(stream_id, *where)
        version, position = conn.execute(
            "SELECT coalesce(MAX(version), 0), coalesce(MAX(position), 0) "
            "FROM eskit_events WHERE stream_id = ?", (stream,),
        ).fetchone()
        state = deleted_state(conn, stream)
        if state is not None:  # a soft delete keeps the head it had
            row = conn.execute(
                "SELECT version, position FROM eskit_deleted_streams "
                "WHERE stream_id = ?", (stream,),
            ).fetchone()
            version, position = max(version, row[0]), max(position, row[1])
        if must_write_delete(stream_id, expected, version, state, hard):
            conn.execute(
                "INSERT INTO eskit_deleted_streams "
                "(stream_id, hard, version, position, deleted_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
                "hard = excluded.hard, deleted_at = excluded.deleted_at",
                (stream, int(hard), version, position, timestamp_to_micros(utc_now())),
            )
            removed = 0
            if hard:
                removed = conn.execute(
                    "DELETE FROM eskit_events WHERE stream_id = ?", (stream,)
                ).rowcount
                # Snapshots hold the same data: a hard delete takes them too.
                conn.execute("DELETE FROM eskit_snapshots WHERE stream_id = ?", (stream,))
            _log.info("%s: %s-deleted stream %r at version %d (%d events removed)",
                      store.path, "hard" if hard else "soft", stream, version, removed)
    return int(version)


def restore_stream(store: Any, stream_id: StreamId, stream: str) -> bool:
    """Drop a soft delete's row; a tombstone raises StreamDeletedError."""
    with store._maintenance() as conn:
        state = deleted_state(conn, stream)
        if state:
            raise deleted_error(stream_id, True)
        if state is False:
            conn.execute(
                "DELETE FROM eskit_deleted_streams WHERE stream_id = ? AND hard = 0",
                (stream,),
            )
            _log.info("%s: restored soft-deleted stream %r", store.path, stream)
    return state is False
