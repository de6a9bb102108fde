"""Hash chains on SQLite: the schema 8 -> 9 migration, the append's hashes, the verifier's rows.

``eskit_events.hash`` holds each event's chain hash (:mod:`eskit.integrity`),
computed by the append in its own transaction from the stream's newest hash, which
it reads under the write lock together with the stream's head. Rows stored before
this migration keep ``NULL``: "unchained", never taken for tampering, but only at or
below the position recorded as ``chained_after`` in ``eskit_meta`` when the
migration ran. ``eskit_truncated_streams.anchor`` holds the hash of the newest event
a truncation removed, written in the truncation's transaction, so the stream's first
remaining event still links to something. The update trigger now also keeps ``hash``
as it was: compaction rewrites only the payload's encoding, and the hash covers the
decoded payload.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from eskit.integrity import GENESIS
from eskit.stores.chain_check import ChainRow, StreamStart, stored_json

__all__ = ["MIGRATION", "iter_chain_rows", "iter_starts"]

Statement = str | Callable[[sqlite3.Connection], object]


def _add_column(table: str, column: str, declaration: str) -> Callable[[sqlite3.Connection], None]:
    """``ALTER TABLE ... ADD COLUMN`` unless the column is there (a file taken back to an
    older schema number by hand, as the upgrade tests do, keeps its columns)."""
    def add(conn: sqlite3.Connection) -> None:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    return add


MIGRATION: list[Statement] = [
    _add_column("eskit_events", "hash", "BLOB"),
    _add_column("eskit_truncated_streams", "anchor", "BLOB"),
    # Every event after this position was appended with a hash: a NULL there is a
    # hash removed, not a row from before the chain. OR IGNORE: the first one stays.
    """INSERT OR IGNORE INTO eskit_meta (key, value)
       SELECT 'chained_after', CAST(coalesce(
           (SELECT seq FROM sqlite_sequence WHERE name = 'eskit_events'), 0) AS TEXT)""",
    "DROP TRIGGER IF EXISTS eskit_events_no_update",
    """CREATE TRIGGER eskit_events_no_update BEFORE UPDATE ON eskit_events
       WHEN NOT (NEW.position IS OLD.position AND NEW.event_id IS OLD.event_id
                 AND NEW.stream_id IS OLD.stream_id AND NEW.version IS OLD.version
                 AND NEW.event_type IS OLD.event_type
                 AND NEW.schema_version IS OLD.schema_version
                 AND NEW.recorded_at IS OLD.recorded_at
                 AND NEW.metadata IS OLD.metadata
                 AND NEW.hash IS OLD.hash
                 AND typeof(OLD.data) = 'text' AND typeof(NEW.data) = 'blob'
                 AND substr(NEW.data, 1, 4) = X'28B52FFD')
       BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
]

TAKE_WRITE_LOCK = "UPDATE eskit_meta SET value = value WHERE 0"
"""A write that changes nothing, to take SQLite's write lock before the head is read in
a caller's transaction that may have been begun deferred: reading first and writing
after would fail at once (SQLITE_BUSY, no busy wait) if another connection committed
in between, where the single insert statement before chains waited its turn."""

HEAD = "SELECT version, hash FROM eskit_events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
"""The stream's head version and newest hash (the UNIQUE (stream_id, version) index)."""


def link_function(previous: bytes | None, version: int, digest: bytes) -> bytes:
    """``eskit_link(previous, version, digest)``, the SQL function the store's own
    writer connection has: :func:`~eskit.integrity.link_hash` of
    :func:`~eskit.integrity.event_bytes` in the insert itself (inlined: once per
    append)."""
    return _sha256((previous or GENESIS) + version.to_bytes(8, "big", signed=True)
                   + digest).digest()


_sha256 = hashlib.sha256


_ROWS = ("SELECT stream_id, version, position, event_id, event_type, schema_version, "
         "recorded_at, data, metadata, hash FROM eskit_events ")


def iter_chain_rows(conn: sqlite3.Connection, batch: int = 1000) -> Iterator[ChainRow]:
    """Every event in ``(stream, version)`` order, ``batch`` rows per query (keyset
    pages on the UNIQUE index), so memory stays bounded."""
    after: tuple[Any, Any] | None = None
    while True:
        if after is None:
            rows = conn.execute(_ROWS + "ORDER BY stream_id, version LIMIT ?",
                                (batch,)).fetchall()
        else:
            rows = conn.execute(
                _ROWS + "WHERE (stream_id, version) > (?, ?) ORDER BY stream_id, version "
                "LIMIT ?", (*after, batch)).fetchall()
        for s, v, pos, eid, etype, sv, at, data, meta, h in rows:
            yield ChainRow(_text(s), _int(v), _int(pos), _blob(eid), _text(etype), _int(sv),
                           _int(at), stored_json(data), stored_json(meta),
                           None if h is None else _blob(h))
        if len(rows) < batch:
            return
        after = (rows[-1][0], rows[-1][1])  # as stored: SQLite orders any type


# Raw SQL can store any type in any SQLite column: a value of the wrong type must be
# reported as altered (its hash cannot match), not stop the check. The key columns
# (stream_id, version) key the pages with their stored values.
def _blob(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


def _text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _int(value: object) -> int:
    return value if type(value) is int else -1


def iter_starts(conn: sqlite3.Connection) -> Iterator[tuple[str, StreamStart]]:
    """Each truncated stream's start, in stream order."""
    cursor: Any = conn.execute(
        "SELECT stream_id, first_version, anchor FROM eskit_truncated_streams "
        "ORDER BY stream_id")
    for s, first, anchor in cursor:
        yield s, StreamStart(int(first), None if anchor is None else bytes(anchor))


def count_events(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM eskit_events").fetchone()[0])


def chained_after(conn: sqlite3.Connection) -> int:
    """The position after which every event has a hash (the newest when the store was
    migrated to schema 9; 0 for a store created with chains); -1 if unrecorded."""
    row = conn.execute("SELECT value FROM eskit_meta WHERE key = 'chained_after'").fetchone()
    return -1 if row is None else int(row[0])
