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
from eskit.stores import sqlite_dcb
from eskit.stores.chain_check import ChainRow, StreamStart, stored_json
from eskit.stores.chain_links import chain_hashes, digests
from eskit.stores.compression import stored_data
from eskit.stores.model import PendingEvent
from eskit.stores.partitions import stream_hash
from eskit.stores.rows import timestamp_to_micros

__all__ = ["MIGRATION", "insert_chained", "iter_chain_rows", "iter_starts"]

Statement = str | Callable[[sqlite3.Connection], object]


def add_column(table: str, column: str, declaration: str) -> Callable[[sqlite3.Connection], None]:
    """``ALTER TABLE ... ADD COLUMN`` unless the column is there (a file taken back to an
    older schema number by hand, as the upgrade tests do, keeps its columns)."""
    def add(conn: sqlite3.Connection) -> None:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    return add


MIGRATION: list[Statement] = [
    add_column("eskit_events", "hash", "BLOB"),
    add_column("eskit_truncated_streams", "anchor", "BLOB"),
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


# -- the append (SQLiteEventStore._insert from schema 9 on) ----------------------------

INSERT_CHAINED = (
    "INSERT INTO eskit_events (position, event_id, stream_id, version, event_type, "
    "schema_version, recorded_at, data, metadata, hash, stream_hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""The rest of a batch, after its first event, at explicit positions (schema 10 on:
with each event's ``stream_hash``, eskit.stores.partitions)."""
# Schema 9 on: with the chain hash, computed from the head that the append read just
# before in the same transaction (eskit.stores.sqlite_chain), at the version after it;
# the UNIQUE (stream_id, version) index and SQLite's one writer keep that head current.
INSERT_FIRST_CHAINED = (
    "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data, metadata, hash, stream_hash) "
    "SELECT :id, :stream, :version, :type, :schema, :at, :data, :meta, :hash, :sh "
    "WHERE NOT EXISTS (SELECT 1 FROM eskit_deleted_streams WHERE stream_id = :stream) "
    "AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams WHERE stream_id = :stream) "
    "RETURNING position"
)
# The same on the store's own writer, in one statement: the head's version and hash (a
# bare column beside MAX() takes the values of the row holding the max, one probe of
# the UNIQUE (stream_id, version) index) and the link made by eskit_link, which every
# connection the store opens has (eskit.stores.sqlite_chain.link_function).
INSERT_FIRST_LINKED = (
    "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data, metadata, hash, stream_hash) "
    "SELECT :id, :stream, head.v + 1, :type, :schema, :at, :data, :meta, "
    "eskit_link(head.h, head.v + 1, :digest), :sh "
    "FROM (SELECT coalesce(MAX(version), 0) AS v, hash AS h FROM eskit_events "
    "WHERE stream_id = :stream) AS head WHERE head.v BETWEEN :lo AND :hi "
    "AND NOT EXISTS (SELECT 1 FROM eskit_deleted_streams WHERE stream_id = :stream) "
    "AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams WHERE stream_id = :stream) "
    "RETURNING position, version, hash"
)
# The same when the writer remembers the stream's head (``_heads``): the link made in
# Python, the insert guarded by that very head (version and hash), so a stale memory
# (another process appended, a rollback) inserts nothing and the caller goes on with
# INSERT_FIRST_LINKED, which reads the head itself.
INSERT_FIRST_ASSUMED = INSERT_FIRST_LINKED.replace(
    "eskit_link(head.h, head.v + 1, :digest)", ":hash"
).replace("WHERE head.v BETWEEN :lo AND :hi", "WHERE head.v = :hv AND head.h IS :hh")



def _unhashed(statement: str) -> str:
    """``statement`` for a schema-9 file opened with create=False (no stream_hash)."""
    return (statement.replace(", stream_hash)", ")").replace(", :sh ", " ")
            .replace(", ?, ?)", ", ?)"))


UNHASHED = {s: _unhashed(s) for s in (INSERT_CHAINED, INSERT_FIRST_CHAINED,
                                      INSERT_FIRST_LINKED, INSERT_FIRST_ASSUMED)}
MAX_REMEMBERED_HEADS = 4096
"""Stream heads the writer remembers for the next append's link (then forgets all)."""

def insert_chained(
    store: Any, conn: sqlite3.Connection, stream: str, lo: int, hi: int,
    batch: list[PendingEvent],
) -> tuple[int, int] | None:
    """``SQLiteEventStore._insert`` on schema 9 on: the batch with each event's chain
    hash, linked to the stream's head; ``None`` (nothing written) if the head is not
    in ``[lo, hi]``."""
    digested = digests(stream, batch)
    threshold = store.compress_threshold
    first = batch[0]
    micros = timestamp_to_micros(first.timestamp)
    hashed = store._hashed
    sh = stream_hash(stream)

    def statement(text: str) -> str:
        return text if hashed else UNHASHED[text]

    params = {
        "id": first.event_id.bytes, "type": first.event_type,
        "schema": first.schema_version, "at": micros,
        "data": stored_data(first.data, threshold), "meta": first.metadata.decode(),
        "stream": stream, "sh": sh,
    }
    if conn is store._writer:
        # One statement, as before chains: linked in Python from the head this
        # writer remembers, checked by the insert; else by the writer's eskit_link
        # function, from the head the insert reads itself.
        row = None
        known, known_hash = store._heads.get(stream, (0, None))
        if lo <= known <= hi:
            row = conn.execute(statement(INSERT_FIRST_ASSUMED), {
                **params, "hv": known, "hh": known_hash,
                "hash": chain_hashes(known, known_hash, digested[:1])[0],
            }).fetchone()
        if row is None:
            row = conn.execute(statement(INSERT_FIRST_LINKED), {
                **params, "lo": lo, "hi": hi, "digest": digested[0]}).fetchone()
        if row is None:
            store._refused(conn, stream)
            return None
        position, version, first_hash = row
        head = version - 1
        hashes = [first_hash, *chain_hashes(version, first_hash, digested[1:])]
        heads = store._heads
        if len(heads) >= MAX_REMEMBERED_HEADS:
            heads.clear()
        heads[stream] = (head + len(batch), hashes[-1])
    else:
        # A caller's connection has no eskit_link: read the head, then insert. The
        # write lock first, for a transaction that may have been begun deferred.
        conn.execute(TAKE_WRITE_LOCK)
        found = conn.execute(HEAD, (stream,)).fetchone()
        head, previous = (0, None) if found is None else (int(found[0]), found[1])
        if not lo <= head <= hi:
            store._refused(conn, stream)
            return None
        hashes = chain_hashes(head, previous, digested)
        row = conn.execute(statement(INSERT_FIRST_CHAINED), {
            **params, "version": head + 1, "hash": hashes[0]}).fetchone()
        if row is None:
            store._refused(conn, stream)
            return None
        position = row[0]
    start = position - 1
    sqlite_dcb.insert_tags(conn, start, batch)
    if len(batch) > 1:
        rest = [
            (start + i + 1, p.event_id.bytes, stream, head + i + 1,
             p.event_type, p.schema_version,
             micros if p.timestamp is first.timestamp
             else timestamp_to_micros(p.timestamp),
             stored_data(p.data, threshold), p.metadata.decode(), hashes[i], sh)
            for i, p in enumerate(batch) if i
        ]
        conn.executemany(statement(INSERT_CHAINED), rest if hashed else [r[:-1] for r in rest])
    return head, start

