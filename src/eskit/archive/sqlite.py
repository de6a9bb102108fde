"""Archive and restore on a SQLite store (internal; see :mod:`eskit.archive`).

Archive, per stream: read its rows, write the segment then the manifest (each
atomic), read both back and check the checksum and every row, and only then, in
one ``BEGIN IMMEDIATE`` transaction that finds the stream unchanged, record it in
``eskit_archived_streams`` and DELETE its rows (the trigger allows exactly that).
A kill before the commit leaves the events in the store and at most an orphan
segment that a rerun rewrites identically. Restore, per stream: check the
segment's checksum, then in one transaction drop the archive row and insert the
rows with their original positions (an explicit INTEGER PRIMARY KEY below the
AUTOINCREMENT counter is allowed, and does not move the counter), and their DCB
tags: the segment keeps each event's tags, and the delete trigger removes them
with the events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import eskit
from eskit.archive.segments import (
    ArchiveCorruptError,
    RawRow,
    RowTags,
    decode_segment,
    decode_segment_tags,
    encode_segment,
    manifest_bytes,
    parse_manifest,
    sha256,
)
from eskit.archive.storage import ArchiveStorage
from eskit.errors import InvalidInputError
from eskit.events import utc_now
from eskit.stores.partitions import stream_hash
from eskit.stores.rows import timestamp_to_micros

__all__ = [
    "archive_each", "archive_streams", "checked_segment", "checked_segment_tags",
    "put_verified", "restore_each", "restore_streams", "tag_rows",
    "streams_older_than", "verify",
]

_log = logging.getLogger("eskit.archive")

# The chain hash goes with the row (schema 9 on; NULL before): a restored stream
# verifies as it did before it was archived.
_RAW = ("SELECT position, event_id, stream_id, version, event_type, schema_version, "
        "recorded_at, data, metadata, hash FROM eskit_events WHERE stream_id = ? "
        "ORDER BY version")
_RAW_UNCHAINED = _RAW.replace("metadata, hash FROM", "metadata, NULL FROM")
_INSERT = ("INSERT INTO eskit_events (position, event_id, stream_id, version, event_type, "
           "schema_version, recorded_at, data, metadata, hash, stream_hash) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_UNHASHED = _INSERT.replace(", stream_hash) ", ") ").replace("?, ?)", "?)")
_INSERT_UNCHAINED = _INSERT_UNHASHED.replace(", hash) ", ") ").replace("?, ?)", "?)")
_TAGS = ("SELECT t.position, t.tag FROM eskit_event_tags t JOIN eskit_events e "
         "ON e.position = t.position WHERE e.stream_id = ? ORDER BY t.position, t.ord")
_INSERT_TAG = ("INSERT INTO eskit_event_tags (tag, position, ord, event_type) "
               "VALUES (?, ?, ?, ?)")

Progress = Callable[[int, int], None]


def _sqlite(store: Any) -> Any:
    from eskit.stores.sqlite import SQLiteEventStore

    if not isinstance(store, SQLiteEventStore):
        raise InvalidInputError(
            f"archiving needs a SQLite store here, got {type(store).__name__}")
    store._usable()
    if not store._archives:
        raise InvalidInputError(f"{store.path!r} has an eskit schema before archives: open "
                                "it with create=True (or run `eskit migrate`) first")
    return store


def streams_older_than(store: Any, older_than: timedelta, *, category: str | None = None,
                       now: datetime | None = None) -> list[str]:
    """Streams (not deleted, not archived) whose newest event is older than
    ``older_than``; ``category``: only ids starting with ``category`` + ``-``."""
    store = _sqlite(store)
    cutoff = timestamp_to_micros((now or datetime.now(UTC)) - older_than)
    sql = ("SELECT stream_id FROM eskit_events e WHERE NOT EXISTS (SELECT 1 FROM "
           "eskit_deleted_streams d WHERE d.stream_id = e.stream_id)")
    params: list[Any] = []
    if category is not None:
        sql += " AND substr(stream_id, 1, ?) = ?"
        params += [len(category) + 1, category + "-"]
    sql += " GROUP BY stream_id HAVING MAX(recorded_at) < ? ORDER BY stream_id"
    with store._reading() as conn:
        return [str(r[0]) for r in conn.execute(sql, [*params, cutoff]).fetchall()]


def _rows(conn: Any, stream: str, chained: bool = True) -> list[RawRow]:
    return [(int(p), bytes(i), s, int(v), t, int(sv), int(at), d, m,
             None if h is None else bytes(h))
            for p, i, s, v, t, sv, at, d, m, h in conn.execute(
                _RAW if chained else _RAW_UNCHAINED, (stream,)).fetchall()]


def _tags(conn: Any, store: Any, stream: str) -> RowTags:
    """The DCB tags of the stream's events, by position, in their order."""
    if not store._tags_table:
        return {}
    found: dict[int, list[str]] = {}
    for position, tag in conn.execute(_TAGS, (stream,)).fetchall():
        found.setdefault(int(position), []).append(str(tag))
    return {position: tuple(tags) for position, tags in found.items()}


def tag_rows(rows: Sequence[RawRow], tags: RowTags) -> list[tuple[str, int, int, str]]:
    """``(tag, position, ord, event_type)`` for each tag of ``rows``: what restores insert."""
    return [(tag, row[0], n, row[4]) for row in rows for n, tag in enumerate(tags.get(row[0], ()))]


def archive_streams(store: Any, storage: ArchiveStorage, streams: Sequence[str], *,
                    progress: Progress | None = None,
                    skipped: list[str] | None = None) -> int:
    """Move each stream's events to a segment in ``storage``; the events archived.

    Streams already archived, deleted or empty are skipped, so a rerun after an
    interruption finishes the work and repeats none of it.
    """
    store = _sqlite(store)
    return archive_each(streams, skipped, progress,
                        lambda stream: _archive_one(store, storage, stream))


def archive_each(streams: Sequence[str], skipped: list[str] | None,
                 progress: Progress | None, archive_one: Callable[[str], int]) -> int:
    """Archive each of ``streams`` with ``archive_one`` (its events moved, 0 if it
    was skipped), listing the skipped ones in ``skipped``; the events moved. The
    loop every store's archive shares."""
    done = 0
    for n, stream in enumerate(streams, 1):
        moved = archive_one(stream)
        done += moved
        if not moved and skipped is not None:
            skipped.append(stream)
        if progress is not None:
            progress(n, len(streams))
    return done


def put_verified(storage: ArchiveStorage, rows: list[RawRow], *, schema_version: int,
                 store: str, tags: RowTags | None = None) -> str:
    """Write ``rows``' segment (with ``tags``) then its manifest, read both back and
    check the checksum and every row and tag; the segment's name. Raises
    ArchiveCorruptError if anything differs: nothing may be removed from the store then."""
    tags = tags or {}
    blob = encode_segment(rows, tags)
    segment = f"seg-{rows[0][0]:020d}-{sha256(blob)[:16]}.zst"
    manifest = manifest_bytes(
        segment, blob, rows, eskit_version=eskit.__version__, schema_version=schema_version,
        store=store, created_at=utc_now().isoformat())
    storage.put(segment, blob)
    storage.put(segment + ".json", manifest)
    back = storage.get(segment)
    if sha256(back) != parse_manifest(storage.get(segment + ".json"))["sha256"] or \
            decode_segment_tags(back) != (rows, tags):
        raise ArchiveCorruptError(f"segment {segment!r} did not read back identical")
    return segment


def checked_segment(storage: ArchiveStorage, segment: str) -> list[RawRow]:
    """The rows of ``segment`` once its bytes match its manifest's sha256."""
    return checked_segment_tags(storage, segment)[0]


def checked_segment_tags(storage: ArchiveStorage, segment: str
                         ) -> tuple[list[RawRow], RowTags]:
    """The rows and tags of ``segment`` once its bytes match its manifest's sha256."""
    blob = storage.get(segment)
    if sha256(blob) != parse_manifest(storage.get(segment + ".json"))["sha256"]:
        raise ArchiveCorruptError(f"segment {segment!r} in {storage.location!r} does not "
                                  "match its manifest's sha256: nothing restored")
    return decode_segment_tags(blob)


def _archive_one(store: Any, storage: ArchiveStorage, stream: str) -> int:
    with store._reading() as conn:  # one read: the rows and their tags agree
        rows = _rows(conn, stream, store._chained)
        tags = _tags(conn, store, stream)
    if not rows:
        return 0
    segment = put_verified(storage, rows, schema_version=store.schema_version(),
                           store=store.path, tags=tags)
    with store._maintenance() as conn:
        now = conn.execute(
            "SELECT count(*), coalesce(MAX(version), 0) FROM eskit_events "
            "WHERE stream_id = ?", (stream,)).fetchone()
        deleted = conn.execute("SELECT 1 FROM eskit_deleted_streams WHERE "
                               "stream_id = ?", (stream,)).fetchone()
        if tuple(now) != (len(rows), rows[-1][3]) or deleted is not None:
            conn.execute("ROLLBACK")  # appended or deleted meanwhile: next run
            _log.warning("%s: stream %r changed while archiving: left in place",
                         store.path, stream)
            return 0
        conn.execute(
            "INSERT INTO eskit_archived_streams (stream_id, archive, segment, "
            "version, first_pos, last_pos, events, archived_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (stream, storage.location, segment, rows[-1][3], rows[0][0],
             max(r[0] for r in rows), len(rows), timestamp_to_micros(utc_now())))
        conn.execute("DELETE FROM eskit_events WHERE stream_id = ?", (stream,))
        conn.execute("DELETE FROM eskit_snapshots WHERE stream_id = ?", (stream,))
    _log.info("%s: archived stream %r (%d events) to %s/%s", store.path, stream, len(rows),
              storage.location, segment)
    return len(rows)


def restore_streams(store: Any, storage: ArchiveStorage, streams: Sequence[str] | None = None,
                    *, progress: Progress | None = None) -> int:
    """Put archived streams back from ``storage`` (all, or ``streams``); the events
    restored. Streams not archived in the store are skipped: safe to rerun."""
    store = _sqlite(store)
    with store._reading() as conn:
        wanted = conn.execute(
            "SELECT stream_id, segment FROM eskit_archived_streams ORDER BY stream_id"
        ).fetchall()
    return restore_each(wanted, storage, streams, progress,
                        lambda stream, segment, rows, tags:
                        _restore_one(store, stream, segment, rows, tags))


def restore_each(wanted: Sequence[tuple[str, str]], storage: ArchiveStorage,
                 streams: Sequence[str] | None, progress: Progress | None,
                 restore_one: Callable[[str, str, list[RawRow], RowTags], int]) -> int:
    """Restore each ``(stream, segment)`` of ``wanted`` (those in ``streams``, if
    given) from its checked segment with ``restore_one``; the events restored.
    The loop every store's restore shares."""
    if streams is not None:
        names = set(streams)
        wanted = [w for w in wanted if w[0] in names]
    done = 0
    for n, (stream, segment) in enumerate(wanted, 1):
        every, tags = checked_segment_tags(storage, segment)
        rows = [r for r in every if r[2] == stream]
        done += restore_one(stream, segment, rows, tags)
        if progress is not None:
            progress(n, len(wanted))
    return done


def _restore_one(store: Any, stream: str, segment: str, rows: list[RawRow],
                 tags: RowTags) -> int:
    tagged = tag_rows(rows, tags)
    if tagged and not store._tags_table:
        raise InvalidInputError(f"segment {segment!r} holds DCB tags, but {store.path!r} has "
                                "an eskit schema before tags: migrate it first")
    with store._maintenance() as conn:
        gone = conn.execute(
            "DELETE FROM eskit_archived_streams WHERE stream_id = ? AND segment = ?",
            (stream, segment)).rowcount
        if gone:
            if store._hashed:
                sh = stream_hash(stream)
                conn.executemany(_INSERT, [(*row, sh) for row in rows])
            elif store._chained:
                conn.executemany(_INSERT_UNHASHED, rows)
            else:
                conn.executemany(_INSERT_UNCHAINED, [row[:9] for row in rows])
            conn.executemany(_INSERT_TAG, tagged)
    if gone:
        _log.info("%s: restored stream %r (%d events) from %s", store.path, stream,
                  len(rows), segment)
    return len(rows) if gone else 0


def verify(storage: ArchiveStorage) -> list[str]:
    """Check every manifest's segment: the problems found (empty: all good)."""
    problems = []
    for name in storage.list("seg-"):
        if not name.endswith(".json"):
            continue
        try:
            doc = parse_manifest(storage.get(name))
            blob = storage.get(doc["segment"])
            if sha256(blob) != doc["sha256"]:
                problems.append(f"{doc['segment']}: sha256 does not match the manifest")
            elif len(decode_segment(blob)) != doc["events"]:
                problems.append(f"{doc['segment']}: event count does not match")
        except (ArchiveCorruptError, FileNotFoundError, KeyError) as exc:
            problems.append(f"{name}: {exc}")
    return problems
