"""Archive and restore on a PostgreSQL store (internal; see :mod:`eskit.archive`).

The same segments, manifests and guarantees as on SQLite (eskit.archive.sqlite).
Archive, per stream: read its rows, write the segment then the manifest, read
both back and check them, and only then, in one transaction holding the
stream's exclusive lock (appends wait) that finds the stream unchanged, not
deleted and not archived, record it in ``eskit_archived_streams`` and DELETE
its rows and snapshots (the triggers allow exactly that; see
eskit.stores.postgres_archive). Two archivers of one stream take that lock in
turn: the second finds the archive row and leaves. Restore, per stream: check
the segment's checksum, then in one transaction drop the archive row and insert
the rows at their original ``(tx_id, seq)`` (``OVERRIDING SYSTEM VALUE``).

A segment row's position is the packed position eskit shows
(``tx_id << 64 | seq``). What is not kept: ``writer_xid`` (set only for a late
append while it is in flight; restored rows are ordinary rows).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eskit.archive.segments import RawRow, RowTags
from eskit.archive.sqlite import Progress, archive_each, put_verified, restore_each, tag_rows
from eskit.archive.storage import ArchiveStorage
from eskit.errors import InvalidInputError
from eskit.stores.partitions import stream_hash
from eskit.stores.postgres_archive import ARCHIVE_SCHEMA
from eskit.stores.postgres_chain import CHAIN_SCHEMA_VERSION
from eskit.stores.postgres_dcb import DCB_SCHEMA_VERSION
from eskit.stores.postgres_schema import unpack_position

__all__ = [
    "Sql", "archive_steps", "archive_streams", "chains", "raw_rows", "restore_steps",
    "restore_streams", "row_tags", "rows_statement", "streams_older_than", "tags_of",
]

_log = logging.getLogger("eskit.archive")


def _postgres(store: Any) -> Any:
    store._deletes_here(ARCHIVE_SCHEMA)  # own transactions, and a schema with archives
    return store


def name(store: Any) -> str:
    return f"postgresql schema {store.schema}"  # never the DSN: it may hold a password


def streams_older_than(store: Any, older_than: timedelta, *, category: str | None = None,
                       now: datetime | None = None) -> list[str]:
    """As :func:`eskit.archive.sqlite.streams_older_than`, on PostgreSQL."""
    store = _postgres(store)
    cutoff = (now or datetime.now(UTC)) - older_than
    params = {"prefix": None if category is None else category + "-", "cutoff": cutoff}
    rows = store._run(lambda conn: conn.execute(store.sql.archive.older_than,
                                                params).fetchall())
    return [str(r[0]) for r in rows]


def archive_streams(store: Any, storage: ArchiveStorage, streams: Sequence[str], *,
                    progress: Progress | None = None,
                    skipped: list[str] | None = None) -> int:
    """As :func:`eskit.archive.archive_streams`, on PostgreSQL."""
    store = _postgres(store)
    return archive_each(streams, skipped, progress,
                        lambda stream: _archive_one(store, storage, stream))


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement a transaction's steps need run; ``want``: what to send back
    (``one``: the first row, ``count``: the rowcount, ``many``: run it per params)."""

    statement: Any
    params: Any = None
    want: str = "none"


Steps = Generator[Sql, Any, int]


def archive_steps(store: Any, stream: str, rows: list[RawRow], location: str,
                  segment: str) -> Steps:
    """The archiving transaction (shared by the sync and async front ends): the
    events archived, 0 when the stream is taken already or changed."""
    statements = store.sql.archive
    yield Sql(store.sql.deletion.start)
    # Exclusive: appends of the stream (shared) wait, and a second archiver too.
    yield Sql(store.sql.lock_stream, {"stream": stream})
    count, head, deleted, archived = yield Sql(statements.state, {"s": stream}, "one")
    if archived is not None:
        _log.info("schema %s: stream %r is already archived (segment %s): skipped",
                  store.schema, stream, archived)
        return 0
    if (int(count), int(head)) != (len(rows), rows[-1][3]) or deleted:
        _log.warning("schema %s: stream %r changed while archiving: left in place",
                     store.schema, stream)
        return 0  # nothing written: the transaction commits empty
    yield Sql(statements.record, (stream, location, segment, rows[-1][3], rows[0][0],
                                  max(r[0] for r in rows), len(rows)))
    yield Sql(statements.remove_events, (stream,))
    yield Sql(statements.remove_snapshots, (stream,))
    _log.info("schema %s: archived stream %r (%d events) to %s/%s", store.schema, stream,
              len(rows), location, segment)
    return len(rows)


def restore_steps(store: Any, stream: str, segment: str, rows: list[RawRow],
                  tags: RowTags) -> Steps:
    """The restoring transaction (shared by both front ends): the events restored,
    with their DCB tags."""
    statements = store.sql.archive
    tagged = []
    for tag, position, ord_, event_type in tag_rows(rows, tags):
        tx, seq = unpack_position(position)
        tagged.append((tag, tx, seq, ord_, event_type))
    if tagged and int(store.sql.version) < DCB_SCHEMA_VERSION:
        raise InvalidInputError(f"segment {segment!r} holds DCB tags, but schema "
                                f"{store.schema} predates tags: migrate it first")
    chained = chains(store)
    hashed = store.sql.insert_flags["hashed"]
    params: list[tuple[object, ...]] = []
    for pos, eid, s, version, etype, schema_version, at, data, meta, hash_ in rows:
        tx, seq = unpack_position(pos)
        text, packed = (data, None) if isinstance(data, str) else (None, data)
        row: tuple[object, ...] = (tx, seq, UUID(bytes=eid), s, version, etype,
                                   schema_version, at, text, packed, meta)
        params.append((*row, hash_, stream_hash(s)) if hashed
                      else (*row, hash_) if chained else row)
    # A second restorer waits on the archive row and then finds it gone.
    gone = yield Sql(statements.unrecord, (stream, segment), "count")
    if not gone:
        return 0
    yield Sql(statements.insert_hashed if hashed else statements.insert if chained
              else statements.insert_unchained, params, "many")
    if tagged:
        yield Sql(statements.insert_tag, tagged, "many")
    _log.info("schema %s: restored stream %r (%d events) from %s", store.schema, stream,
              len(rows), segment)
    return len(rows)


def row_tags(found: list[Any]) -> RowTags:
    """The tags :attr:`ArchiveStatements.tags` returned, by position, in order."""
    tags: dict[int, list[str]] = {}
    for position, tag in found:
        tags.setdefault(int(position), []).append(str(tag))
    return {position: tuple(names) for position, names in tags.items()}


def tags_of(store: Any) -> bool:
    """Whether ``store``'s schema has DCB tags to archive."""
    return int(store.sql.version) >= DCB_SCHEMA_VERSION


def chains(store: Any) -> bool:
    """Whether ``store``'s schema keeps hash chains (then archives carry each row's hash)."""
    return int(store.sql.version) >= CHAIN_SCHEMA_VERSION


def rows_statement(store: Any) -> Any:
    """The statement reading a stream's rows as stored, for ``store``'s schema."""
    statements = store.sql.archive
    return statements.rows if chains(store) else statements.rows_unchained


def raw_rows(found: list[Any]) -> list[RawRow]:
    """The rows :func:`rows_statement` returned, as segment rows."""
    return [(int(p), bytes(i), s, int(v), t, int(sv), int(at),
             d if d is not None else bytes(z), m, None if h is None else bytes(h))
            for p, i, s, v, t, sv, at, d, z, m, h in found]


def _transaction(store: Any, steps: Steps) -> int:
    """Run ``steps`` in one transaction on one connection; their result."""
    with store._connection() as conn, conn.transaction():
        try:
            call = next(steps)
            while True:
                if call.want == "many":
                    with conn.cursor() as cursor:
                        cursor.executemany(call.statement, call.params)
                    result: Any = None
                else:
                    cursor = conn.execute(call.statement, call.params)
                    result = (cursor.fetchone() if call.want == "one"
                              else cursor.rowcount if call.want == "count" else None)
                call = steps.send(result)
        except StopIteration as done:
            return int(done.value)


def _archive_one(store: Any, storage: ArchiveStorage, stream: str) -> int:
    statement, tagged = rows_statement(store), tags_of(store)

    def read(conn: Any) -> tuple[list[Any], list[Any]]:
        # One snapshot for the rows and their tags (REPEATABLE READ); the archiving
        # transaction later checks the stream did not change since.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = conn.execute(statement, (stream,)).fetchall()
            tags = conn.execute(store.sql.archive.tags, (stream,)).fetchall() if tagged else []
        return rows, tags

    found, tag_found = store._run(read)
    rows = raw_rows(found)
    if not rows:
        return 0
    segment = put_verified(storage, rows, schema_version=store.sql.version, store=name(store),
                           tags=row_tags(tag_found))
    return _transaction(store, archive_steps(store, stream, rows, storage.location, segment))


def restore_streams(store: Any, storage: ArchiveStorage, streams: Sequence[str] | None = None,
                    *, progress: Progress | None = None) -> int:
    """As :func:`eskit.archive.restore_streams`, on PostgreSQL."""
    store = _postgres(store)
    statements = store.sql.archive
    wanted = store._run(lambda conn: conn.execute(statements.listed).fetchall())
    return restore_each(wanted, storage, streams, progress,
                        lambda stream, segment, rows, tags:
                        _restore_one(store, stream, segment, rows, tags))


def _restore_one(store: Any, stream: str, segment: str, rows: list[RawRow],
                 tags: RowTags) -> int:
    return _transaction(store, restore_steps(store, stream, segment, rows, tags))
