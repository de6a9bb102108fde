"""Archived streams on SQLite: the migration adding ``eskit_archived_streams``.

An archived stream's events were moved to segment files (see :mod:`eskit.archive`)
and removed from ``eskit_events``; its row here names the archive. The delete
trigger lets an event go only if its stream has a tombstone or an archive row
(written by :func:`eskit.archive.archive_streams` in the same transaction as the
DELETE), and no event can be inserted into an archived stream: a restore drops the
row first, in the transaction that puts the events back.
"""

from __future__ import annotations

import sqlite3

from eskit.errors import StreamArchivedError
from eskit.events import StreamId

__all__ = ["MIGRATION", "archived_error", "archived_in"]

# Archive (eskit.archive): a record per archived stream; the delete trigger now
# also lets the rows of an archived stream go. IF NOT EXISTS: reruns are harmless.
MIGRATION = [
    """CREATE TABLE IF NOT EXISTS eskit_archived_streams (
           stream_id   TEXT    PRIMARY KEY,
           archive     TEXT    NOT NULL,  -- where the archive lives (a directory, a URL)
           segment     TEXT    NOT NULL,  -- the segment holding the events
           version     INTEGER NOT NULL,  -- the stream's head when archived
           first_pos   INTEGER NOT NULL,
           last_pos    INTEGER NOT NULL,
           events      INTEGER NOT NULL,
           archived_at INTEGER NOT NULL   -- microseconds since 1970-01-01 UTC
       ) WITHOUT ROWID""",
    "DROP TRIGGER IF EXISTS eskit_events_no_delete",
    """CREATE TRIGGER eskit_events_no_delete BEFORE DELETE ON eskit_events
       WHEN NOT EXISTS (SELECT 1 FROM eskit_deleted_streams d
                        WHERE d.stream_id = OLD.stream_id AND d.hard = 1)
        AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams a
                        WHERE a.stream_id = OLD.stream_id)
       BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS eskit_events_not_archived BEFORE INSERT ON eskit_events
       WHEN EXISTS (SELECT 1 FROM eskit_archived_streams a WHERE a.stream_id = NEW.stream_id)
       BEGIN SELECT RAISE(ABORT, 'eskit stream is archived'); END""",
]


def archived_in(conn: sqlite3.Connection, stream: str) -> tuple[str, str] | None:
    """``(archive, segment)`` if ``stream`` is archived, else ``None``."""
    row = conn.execute(
        "SELECT archive, segment FROM eskit_archived_streams WHERE stream_id = ?", (stream,)
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def archived_error(stream_id: StreamId, archive: str, segment: str) -> StreamArchivedError:
    """The error for a read of, or an append to, an archived stream."""
    return StreamArchivedError(
        f"stream {str(stream_id)!r} is archived in {archive!r} (segment {segment!r}): "
        f"run `eskit restore {archive} STORE --stream {stream_id!s}` to read or append",
        stream_id=stream_id, archive=archive, segment=segment,
    )
