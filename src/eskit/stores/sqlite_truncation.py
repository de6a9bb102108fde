"""Per-stream truncation on SQLite: the schema 5 -> 6 migration and the truncation.

A truncated stream has a row in ``eskit_truncated_streams`` holding the version
its events now start at. The append-only delete trigger lets an event go only
if its stream has a tombstone or an archive record (as before) or if its version
is below that stream's ``first_version``, which only :func:`truncate_stream`
writes, in the same transaction as the DELETE. ``first_version`` can only grow
and the row cannot be removed. The newest event of a stream is never removed
(eskit.stores.truncation), so every read path stays as it was. See
docs/storage.md.
"""

from __future__ import annotations

import logging
from typing import Any

from eskit.events import StreamId
from eskit.stores.model import Expected
from eskit.stores.rows import timestamp_to_micros
from eskit.stores.sqlite_archive import archived_error, archived_in
from eskit.stores.sqlite_deletion import deleted_state
from eskit.stores.truncation import truncation_cut

__all__ = ["MIGRATION", "truncate_stream"]

_log = logging.getLogger("eskit.stores.sqlite")

# 5 -> 6. IF NOT EXISTS / IF EXISTS: a file moved back to an older schema number by
# hand (tests do) still migrates.
MIGRATION = [
    """CREATE TABLE IF NOT EXISTS eskit_truncated_streams (
           stream_id     TEXT    PRIMARY KEY,
           first_version INTEGER NOT NULL,  -- the events below it were removed
           truncated_at  INTEGER NOT NULL   -- microseconds since 1970-01-01 UTC
       ) WITHOUT ROWID""",
    "DROP TRIGGER IF EXISTS eskit_events_no_delete",
    """CREATE TRIGGER eskit_events_no_delete BEFORE DELETE ON eskit_events
       WHEN NOT EXISTS (SELECT 1 FROM eskit_deleted_streams d
                        WHERE d.stream_id = OLD.stream_id AND d.hard = 1)
        AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams a
                        WHERE a.stream_id = OLD.stream_id)
        AND NOT EXISTS (SELECT 1 FROM eskit_truncated_streams t
                        WHERE t.stream_id = OLD.stream_id AND OLD.version < t.first_version)
       BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS eskit_truncations_stay BEFORE DELETE
       ON eskit_truncated_streams
       BEGIN SELECT RAISE(ABORT, 'eskit truncations are permanent'); END""",
    """CREATE TRIGGER IF NOT EXISTS eskit_truncations_only_grow BEFORE UPDATE
       ON eskit_truncated_streams WHEN NEW.first_version < OLD.first_version
       BEGIN SELECT RAISE(ABORT, 'eskit truncations are permanent'); END""",
]


def truncate_stream(store: Any, stream_id: StreamId, stream: str, before: int,
                    expected: Expected, force: bool) -> int:
    """The truncation, in one ``BEGIN IMMEDIATE`` transaction on the writer."""
    from eskit.events import utc_now

    with store._maintenance() as conn:
        if (where := archived_in(conn, stream)) is not None:
            raise archived_error(stream_id, *where)
        head = int(conn.execute(
            "SELECT coalesce(MAX(version), 0) FROM eskit_events WHERE stream_id = ?", (stream,),
        ).fetchone()[0])
        row = conn.execute(
            "SELECT first_version FROM eskit_truncated_streams WHERE stream_id = ?", (stream,)
        ).fetchone()
        snapshot = conn.execute(
            "SELECT MAX(version) FROM eskit_snapshots WHERE stream_id = ?", (stream,)
        ).fetchone()[0]
        cut = truncation_cut(stream_id, expected, head, deleted_state(conn, stream),
                             1 if row is None else int(row[0]), before, snapshot, force)
        if cut is None:
            return 0
        if store._chained:
            # The hash of the newest event removed: the chain of the events left links
            # to it (eskit.stores.sqlite_chain), so the truncation is not a removal.
            anchor = conn.execute(
                "SELECT hash FROM eskit_events WHERE stream_id = ? AND version < ? "
                "ORDER BY version DESC LIMIT 1", (stream, cut),
            ).fetchone()
            conn.execute(
                "INSERT INTO eskit_truncated_streams "
                "(stream_id, first_version, truncated_at, anchor) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
                "first_version = excluded.first_version, truncated_at = excluded.truncated_at, "
                "anchor = excluded.anchor",
                (stream, cut, timestamp_to_micros(utc_now()),
                 None if anchor is None else anchor[0]),
            )
        else:
            conn.execute(
                "INSERT INTO eskit_truncated_streams (stream_id, first_version, truncated_at) "
                "VALUES (?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
                "first_version = excluded.first_version, truncated_at = excluded.truncated_at",
                (stream, cut, timestamp_to_micros(utc_now())),
            )
        removed = int(conn.execute(
            "DELETE FROM eskit_events WHERE stream_id = ? AND version < ?", (stream, cut)
        ).rowcount)
        # Their events are gone: a snapshot below the cut can never be used again.
        conn.execute(
            "DELETE FROM eskit_snapshots WHERE stream_id = ? AND version < ?", (stream, cut)
        )
        _log.info("%s: truncated stream %r before version %d (%d events removed)",
                  store.path, stream, cut, removed)
    return removed
