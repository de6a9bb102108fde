"""Which blobs a store still names: the mark phase of :func:`eskit.blobs.collect_blobs`.

Every stored payload is searched, as stored, for blob digests (``sha256:`` and 64
hex digits, the form a :class:`~eskit.blobs.BlobRef` is written in): the events'
data and metadata (soft-deleted streams included: they can be restored), the
snapshots' states, and the events of archived streams in their segments. A payload
is inflated first if it was compressed; nothing is decoded into objects, so any
string shaped like a digest keeps its blob (the safe side). Hard-deleted and
truncated events are gone, and so are the references they held.

A sealed value (:mod:`eskit.protection`) is ciphertext, so no digest shows through
it: a scan that meets one stops with :class:`~eskit.errors.BlobCollectionRefusedError`
rather than call the blobs it might name unreferenced.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from eskit.archive.storage import ArchiveStorage
from eskit.errors import BlobCollectionRefusedError, InvalidInputError
from eskit.stores.compression import plain

__all__ = ["SEALED_MARK", "ReferenceScan", "scan_store", "supported_store"]

DIGEST = re.compile(rb"sha256:([0-9a-f]{64})")
SEALED_MARK = b'"$pd"'
"""How a sealed value starts in stored JSON (``eskit.protection.envelope.ENVELOPE``;
a test pins the two together, so that this module needs no cryptography)."""
_PAGE = 5_000

Progress = Callable[[int], None]
"""Called with the number of payload rows scanned since the last call."""


class ReferenceScan:
    """The digests found so far (hex digits, as blob stores key blobs)."""

    def __init__(self) -> None:
        self.digests: set[str] = set()
        self.rows = 0

    def feed(self, stored: str | bytes | memoryview | None, where: Callable[[], str]) -> None:
        """Search one stored payload; ``where`` names it if it holds a sealed value."""
        if stored is None:
            return
        if isinstance(stored, memoryview):
            stored = bytes(stored)
        text = plain(stored)
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if SEALED_MARK in raw:
            raise BlobCollectionRefusedError(
                f"{where()} holds a sealed (encrypted) value, which may name a blob this "
                "scan cannot see: nothing was deleted. Blob collection does not support "
                "stores with sealed fields yet")
        if b"sha256:" in raw:
            self.digests.update(match.decode() for match in DIGEST.findall(raw))


def supported_store(store: object) -> Callable[[Any, ReferenceScan, Progress], list[Any]]:
    """The scan for ``store``'s kind; :class:`InvalidInputError` if there is none."""
    from eskit.stores.memory import InMemoryEventStore
    from eskit.stores.sqlite import SQLiteEventStore

    if isinstance(store, SQLiteEventStore):
        return _scan_sqlite
    if isinstance(store, InMemoryEventStore):
        return _scan_memory
    if _is_postgres(store):
        return _scan_postgres
    raise InvalidInputError(
        f"blob collection reads a SQLiteEventStore, PostgresEventStore or "
        f"InMemoryEventStore, not {type(store).__name__}")


def scan_store(store: Any, archives: Sequence[ArchiveStorage],
               progress: Progress | None = None) -> ReferenceScan:
    """The digests named anywhere in ``store`` (and its archived streams' segments)."""
    scan = ReferenceScan()
    tick = progress or (lambda _rows: None)
    archived = supported_store(store)(store, scan, tick)
    _scan_archives(archived, archives, scan, tick)
    return scan


def _is_postgres(store: object) -> bool:
    try:
        from eskit.stores.postgres import PostgresEventStore
    except ImportError:  # no postgres extra: it cannot be one
        return False
    return isinstance(store, PostgresEventStore)


def _scan_rows(rows: Iterable[tuple[Any, ...]], kind: str, scan: ReferenceScan,
               tick: Progress) -> None:
    # Each row: a label (position or stream) and the payload columns to search.
    count = 0
    for label, *payloads in rows:
        def where(label: object = label) -> str:
            return f"{kind} {label}"

        for column in payloads:
            scan.feed(column, where)
        count += 1
    scan.rows += count
    tick(count)


def _scan_sqlite(store: Any, scan: ReferenceScan, tick: Progress) -> list[tuple[str, str]]:
    after = 0
    while True:  # pages, each its own read: no snapshot held across the whole scan
        with store._reading() as conn:
            rows = conn.execute(
                "SELECT position, data, metadata FROM eskit_events WHERE position > ? "
                "ORDER BY position LIMIT ?", (after, _PAGE)).fetchall()
        _scan_rows(rows, "the event at position", scan, tick)
        if len(rows) < _PAGE:
            break
        after = rows[-1][0]
    with store._reading() as conn:
        _scan_rows(conn.execute("SELECT stream_id, state FROM eskit_snapshots"),
                   "a snapshot of stream", scan, tick)
        return [(str(a), str(s)) for a, s in conn.execute(
            "SELECT archive, segment FROM eskit_archived_streams ORDER BY stream_id")]


def _scan_postgres(store: Any, scan: ReferenceScan, tick: Progress) -> list[tuple[str, str]]:
    from psycopg import sql

    schema = sql.Identifier(store.schema)
    page = sql.SQL(
        # The text of tx_id under another name: an output column named tx_id would make
        # ORDER BY sort the text ("100000" before "99999") instead of walking the index.
        "SELECT tx_id::text AS tx_text, seq, data::text AS data_text, data_zstd,"
        " metadata::text AS metadata_text FROM {}.eskit_events"
        " WHERE (tx_id, seq) > (%s::text::xid8, %s) ORDER BY tx_id, seq LIMIT %s"
    ).format(schema)
    after: tuple[str, int] = ("0", 0)
    while True:  # keyset pages on the order index: bounded memory, short reads
        rows = store._run(lambda conn, after=after: conn.execute(page, (*after, _PAGE)).fetchall())
        _scan_rows(((f"{tx}/{seq}", *payloads) for tx, seq, *payloads in rows),
                   "the event with (tx_id, seq)", scan, tick)
        if len(rows) < _PAGE:
            break
        after = (rows[-1][0], rows[-1][1])

    def rest(conn: Any) -> list[tuple[str, str]]:
        with conn.transaction(), conn.cursor(name="eskit_blob_refs") as snapshots:
            snapshots.execute(sql.SQL(
                "SELECT stream_id, state::text FROM {}.eskit_snapshots").format(schema))
            _scan_rows(snapshots, "a snapshot of stream", scan, tick)
        found = conn.execute(sql.SQL(
            "SELECT archive, segment FROM {}.eskit_archived_streams ORDER BY stream_id"
        ).format(schema)).fetchall()
        return [(str(a), str(s)) for a, s in found]

    return list(store._run(rest))


def _scan_memory(store: Any, scan: ReferenceScan, tick: Progress) -> list[tuple[str, str]]:
    with store._lock:  # hard deletes leave None; soft-deleted rows are still there
        rows = [(row.position, row.data, row.metadata) for row in store._log if row is not None]
        stores = list(store._snapshot_stores)
    _scan_rows(rows, "the event at position", scan, tick)
    for snapshots in stores:
        with snapshots._lock:
            states = [(key[0], snap.state) for key, snap in snapshots._snapshots.items()]
        _scan_rows(states, "a snapshot of stream", scan, tick)
    return []  # the memory store has no archive


def _scan_archives(archived: list[tuple[str, str]], archives: Sequence[ArchiveStorage],
                   scan: ReferenceScan, tick: Progress) -> None:
    from eskit.archive.sqlite import checked_segment

    by_location = {storage.location: storage for storage in archives}
    for storage in archives:  # a directory named by another path: the same directory
        directory = getattr(storage, "directory", None)
        for archive, _ in archived:
            if directory is not None and archive not in by_location and \
                    Path(archive).resolve() == Path(directory).resolve():
                by_location[archive] = storage
    missing = sorted({archive for archive, _ in archived} - set(by_location))
    if missing:
        raise BlobCollectionRefusedError(
            f"{len(archived)} archived streams have events in {', '.join(map(repr, missing))}, "
            "which may name blobs: pass that archive (archives=[...], or --archive DIR) so "
            "they are kept. Nothing was deleted")
    done: set[tuple[str, str]] = set()
    for archive, segment in archived:
        if (archive, segment) in done:
            continue
        done.add((archive, segment))
        rows = checked_segment(by_location[archive], segment)
        _scan_rows(((f"{segment}#{row[0]}", row[7], row[8]) for row in rows),
                   f"archived in {archive!r}: the event", scan, tick)

