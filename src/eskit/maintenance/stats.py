"""How big a store is: :func:`stats` and :func:`stats_async` give a :class:`StoreStats`.

What is measured, on every store that has it:

* ``events`` and ``streams``;
* ``payload_bytes``: the bytes of each event's data and metadata *as stored*
  (SQLite: the TEXT columns' UTF-8 bytes; PostgreSQL: the ``json`` columns' text;
  in memory: the UTF-8 of the JSON the store keeps), and so ``bytes_per_event``;
* ``storage_bytes``: what the database spends on disk. PostgreSQL: the event
  table with its indexes and TOAST (``pg_total_relation_size``). SQLite: the
  database's pages in use, everything in it (events, snapshots, projections kept
  in the same file). ``None`` for the in-memory store;
* the ``top`` largest streams and categories by payload bytes (a category is a
  stream id up to its first ``-``: ``order-7`` is in ``order``; an id without
  ``-`` is its own category);
* ``snapshots`` and ``snapshot_bytes`` (the stored state's bytes), or ``None``
  where the store has no snapshot table.

``decoded_bytes`` is what the payloads take once decompressed, read from each zstd
frame's header (which declares the size), never by inflating it;
``compression_ratio`` is ``decoded_bytes / payload_bytes`` (1.0: nothing compressed).
``archived_streams`` and ``archived_events`` count what ``eskit archive`` moved
out (SQLite, and PostgreSQL from schema 10; ``None`` elsewhere).
``deleted_streams`` counts the streams deleted (soft and hard) and
``deleted_events`` the events hard deletes removed;
``truncated_streams`` and ``truncated_events`` the streams truncation shortened
and the events it removed. Each removed event is counted once: a stream
truncated, then hard-deleted, counts its truncated events under truncation and
the rest under deletion. ``None`` on a store of a schema before deletions (or
truncation) opened for inspection. ``events``, ``streams`` and the bytes are
what is stored: removed events are not in them; a soft-deleted stream's events,
hidden but restorable, are.

Cost: one aggregate statement over the event table (per stream, then grouped,
all in the database, no rows in Python), one over the snapshot table and a size
lookup. It reads every event row once, so it grows with the store: see
``docs/storage-stats.md`` for measured times. It takes no lock that holds appends
back (SQLite: a read transaction; PostgreSQL: plain ``SELECT``\\ s), and its
figures are one read's view: on PostgreSQL the event figures come from one
statement, the snapshot figures from another a moment later.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from eskit.errors import InvalidInputError
from eskit.stores.base import EventStore
from eskit.stores.compression import FRAME_HEADER_BYTES, declared_size
from eskit.stores.memory import InMemoryEventStore
from eskit.stores.sqlite import SQLiteEventStore

if TYPE_CHECKING:
    from eskit.aio.store import AsyncEventStore

__all__ = ["DEFAULT_TOP", "CategorySize", "StoreStats", "StreamSize", "stats", "stats_async"]

DEFAULT_TOP = 10
"""How many of the largest streams and categories :func:`stats` lists by default."""
MAX_TOP = 10_000


@dataclass(frozen=True, slots=True)
class StreamSize:
    """One stream's size: its events and their payload bytes."""

    stream_id: str
    events: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CategorySize:
    """One category's size: its streams, events and their payload bytes."""

    category: str
    streams: int
    events: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The size of one store at one moment; see :mod:`eskit.maintenance.stats`."""

    system: str
    """The store's ``db.system.name``: ``sqlite``, ``postgresql`` or ``memory``."""
    events: int
    streams: int
    payload_bytes: int
    """Data plus metadata bytes of every event, as stored."""
    storage_bytes: int | None
    """Bytes on disk (PostgreSQL: event table and indexes; SQLite: the file's used pages)."""
    largest_streams: tuple[StreamSize, ...]
    """The largest streams by payload bytes, largest first."""
    largest_categories: tuple[CategorySize, ...]
    """The largest categories by payload bytes, largest first."""
    snapshots: int | None
    """Stored snapshots; ``None``: the store has no snapshot table."""
    snapshot_bytes: int | None
    """Bytes of the snapshots' stored state; ``None``: no snapshot table."""
    decoded_bytes: int | None = None
    """Payload bytes once decompressed (``payload_bytes`` counts compressed payloads as
    stored), from the sizes the zstd frames declare."""
    compression_ratio: float | None = None
    """``decoded_bytes / payload_bytes``, to 4 places; ``None`` for an empty store."""
    archived_streams: int | None = None
    """Streams whose events are in an archive (``eskit archive``), not in the store.
    ``None``: not measured (stores without archiving: memory, SQLite before schema 5,
    PostgreSQL before schema 10)."""
    archived_events: int | None = None
    """Events moved to an archive, as counted when archived. ``None``: see
    ``archived_streams``."""
    deleted_streams: int | None = None
    """Streams deleted, soft and hard. ``None``: not measured."""
    deleted_events: int | None = None
    """Events hard deletes removed (not those a truncation had removed before).
    ``None``: not measured."""
    truncated_streams: int | None = None
    """Streams :meth:`~eskit.EventStore.truncate_stream` shortened. ``None``: not
    measured (a schema before truncation)."""
    truncated_events: int | None = None
    """Events truncations removed. ``None``: see ``truncated_streams``."""

    @property
    def bytes_per_event(self) -> float | None:
        """Mean payload bytes per event; ``None`` for an empty store."""
        return self.payload_bytes / self.events if self.events else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, ``bytes_per_event`` included."""
        document = asdict(self)
        document["largest_streams"] = list(document["largest_streams"])
        document["largest_categories"] = list(document["largest_categories"])
        document["bytes_per_event"] = self.bytes_per_event
        return document


def check_top(top: object) -> int:
    if type(top) is not int or not 0 <= top <= MAX_TOP:
        raise InvalidInputError(f"top must be an int in [0, {MAX_TOP}], got {top!r}")
    return top


# --------------------------------------------------------------------------- SQL
# One statement: the per-stream sizes once (materialised), then the totals, the
# largest streams and the largest categories from them; part 0, 1, 2 of the result.

_SQLITE_EVENTS = """
WITH per AS MATERIALIZED (
    SELECT stream_id, count(*) AS n,
           sum(length(CAST(data AS BLOB)) + length(CAST(metadata AS BLOB))) AS b
    FROM eskit_events GROUP BY stream_id
)
SELECT 0, NULL, count(*), coalesce(sum(n), 0), coalesce(sum(b), 0) FROM per
UNION ALL
SELECT * FROM (SELECT 1, stream_id, 1, n, b FROM per ORDER BY b DESC, stream_id LIMIT :top)
UNION ALL
SELECT * FROM (
    SELECT 2, c, count(*), sum(n), sum(b) FROM (
        SELECT CASE WHEN instr(stream_id, '-') > 0
                    THEN substr(stream_id, 1, instr(stream_id, '-') - 1)
                    ELSE stream_id END AS c, n, b
        FROM per
    ) GROUP BY c ORDER BY sum(b) DESC, c LIMIT :top
)
"""
_SQLITE_SNAPSHOTS = (
    "SELECT count(*), coalesce(sum(length(CAST(state AS BLOB))), 0) FROM eskit_snapshots"
)
_SQLITE_HAS_SNAPSHOTS = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'eskit_snapshots'"
)
_SQLITE_PAGES = (
    "SELECT (p.page_count - f.freelist_count) * s.page_size "
    "FROM pragma_page_count() AS p, pragma_freelist_count() AS f, pragma_page_size() AS s"
)


def _postgres_statements(schema: str) -> tuple[Any, Any, Any]:
    from psycopg import sql

    from eskit.stores.postgres_schema import check_schema_name

    s = sql.Identifier(check_schema_name(schema))
    events = sql.SQL("{}.eskit_events").format(s)
    # The schema name is validated above, so quoting it into a regclass literal is safe.
    events_name = sql.Literal(f'"{schema}".eskit_events')
    snapshots_name = sql.Literal(f'"{schema}".eskit_snapshots')
    event_stats = sql.SQL(
        """WITH per AS MATERIALIZED (
               SELECT stream_id, count(*) AS n,
                      sum(coalesce(octet_length(data::text), 0)
                          + coalesce(octet_length(data_zstd), 0)
                          + octet_length(metadata::text)) AS b
               FROM {events} GROUP BY stream_id
           )
           SELECT 0, NULL, count(*), coalesce(sum(n), 0), coalesce(sum(b), 0)
           FROM per
           UNION ALL
           (SELECT 1, stream_id, 1, n, b FROM per ORDER BY b DESC, stream_id LIMIT %(top)s)
           UNION ALL
           (SELECT 2, split_part(stream_id, '-', 1), count(*), sum(n), sum(b) FROM per
            GROUP BY 2 ORDER BY sum(b) DESC, 2 LIMIT %(top)s)
           UNION ALL
           -- A plain table's size, or the sum of a partitioned one's partitions (for
           -- a plain table pg_partition_tree lists nothing), and the keys table that
           -- keeps a partitioned store's ids unique.
           SELECT 3, NULL, coalesce(
                              (SELECT sum(pg_total_relation_size(relid))
                               FROM pg_partition_tree(to_regclass({events_name}))),
                              pg_total_relation_size(to_regclass({events_name})))
                           + coalesce(pg_total_relation_size(to_regclass({keys_name})), 0),
                  0, 0"""
    ).format(events=events, events_name=events_name,
             keys_name=sql.Literal(f'"{schema}".eskit_event_keys'))
    has_snapshots = sql.SQL("SELECT to_regclass({})").format(snapshots_name)
    snapshot_stats = sql.SQL(
        "SELECT count(*), coalesce(sum(octet_length(state::text)), 0) FROM {}.eskit_snapshots"
    ).format(s)
    return event_stats, has_snapshots, snapshot_stats


def _from_rows(system: str, rows: list[Any], snapshot_row: Any, storage: int | None
               ) -> StoreStats:
    streams = events = payload = 0
    largest_streams: list[StreamSize] = []
    largest_categories: list[CategorySize] = []
    for part, name, count, n, b in rows:
        if part == 0:
            streams, events, payload = int(count), int(n), int(b)
        elif part == 1:
            largest_streams.append(StreamSize(str(name), int(n), int(b)))
        elif part == 2:
            largest_categories.append(CategorySize(str(name), int(count), int(n), int(b)))
        elif part == 3:
            storage = None if count is None else int(count)
    return StoreStats(
        system=system, events=events, streams=streams, payload_bytes=payload,
        storage_bytes=storage, largest_streams=tuple(largest_streams),
        largest_categories=tuple(largest_categories),
        snapshots=None if snapshot_row is None else int(snapshot_row[0]),
        snapshot_bytes=None if snapshot_row is None else int(snapshot_row[1]),
    )


# --------------------------------------------------------------------------- front ends


def stats(store: EventStore, *, top: int = DEFAULT_TOP) -> StoreStats:
    """The size of ``store`` (SQLite, PostgreSQL or in memory), read only.

    ``top``: how many of the largest streams and categories to list. Bad
    arguments, and stores it cannot measure, raise :class:`~eskit.InvalidInputError`
    before any I/O. See :mod:`eskit.maintenance.stats` for what each figure means.
    """
    top = check_top(top)
    if isinstance(store, SQLiteEventStore):
        return _sqlite_stats(store, top)
    if isinstance(store, InMemoryEventStore):
        return _memory_stats(store, top)
    loaded = sys.modules.get("eskit.stores.postgres")  # only a PostgreSQL store loaded it
    if loaded is not None and isinstance(store, loaded.PostgresEventStore):
        return _postgres_stats(store, top)
    from eskit.aio.store import AsyncEventStore

    if isinstance(store, AsyncEventStore):
        raise InvalidInputError(f"{type(store).__name__} is async: use stats_async")
    raise InvalidInputError(f"stats cannot measure a {type(store).__name__}")


async def stats_async(store: AsyncEventStore, *, top: int = DEFAULT_TOP) -> StoreStats:
    """:func:`stats` for an :class:`~eskit.aio.AsyncEventStore`: the same figures.

    SQLite and in-memory stores are measured in a worker thread; PostgreSQL on
    the store's async pool.
    """
    top = check_top(top)
    sync_store = getattr(store, "sync_store", None)
    if isinstance(sync_store, SQLiteEventStore | InMemoryEventStore):
        return await asyncio.to_thread(stats, sync_store, top=top)
    loaded = sys.modules.get("eskit.aio.postgres")
    if loaded is not None and isinstance(store, loaded.AsyncPostgresEventStore):
        event_stats, has_snapshots, snapshot_stats = _postgres_statements(store.schema)
        rows = await store._fetchall(event_stats, {"top": top})
        found = await store._fetchone(has_snapshots)
        snapshot_row = (await store._fetchone(snapshot_stats)
                        if found and found[0] is not None else None)
        deleted_stats = _postgres_deleted(store)
        deleted = await store._fetchone(deleted_stats) if deleted_stats else None
        frame_stats = _postgres_frames(store)

        async def stream_frames(conn: Any) -> _Frames:
            found = _Frames()
            async for length, head in conn.cursor().stream(frame_stats):
                found.add(length, head)
            return found

        frames = await store._run(stream_frames) if frame_stats else _Frames()
        archived_stats = _postgres_archived(store)
        archived = await store._fetchone(archived_stats) if archived_stats else None
        return _with_archived(frames.applied(
            _with_deleted(_from_rows("postgresql", rows, snapshot_row, None), deleted)), archived)
    raise InvalidInputError(f"stats_async cannot measure a {type(store).__name__}")


def _sqlite_stats(store: SQLiteEventStore, top: int) -> StoreStats:
    # One read transaction: every figure is the same moment's.
    with store._reading() as conn:
        conn.execute("BEGIN")
        try:
            rows = conn.execute(_SQLITE_EVENTS, {"top": top}).fetchall()
            has_snapshots = conn.execute(_SQLITE_HAS_SNAPSHOTS).fetchone() is not None
            snapshot_row = conn.execute(_SQLITE_SNAPSHOTS).fetchone() if has_snapshots else None
            storage = int(conn.execute(_SQLITE_PAGES).fetchone()[0])
            deleted = (conn.execute(_sqlite_removals(store)).fetchone()
                       if store._visible else None)
            archived = conn.execute(_SQLITE_ARCHIVED).fetchone() if store._archives else None
            frames = _Frames.of(conn.execute(_SQLITE_FRAMES))
        finally:
            conn.execute("COMMIT")
    return _with_archived(frames.applied(
        _with_deleted(_from_rows("sqlite", rows, snapshot_row, storage), deleted)), archived)


def _postgres_stats(store: Any, top: int) -> StoreStats:
    event_stats, has_snapshots, snapshot_stats = _postgres_statements(store.schema)

    deleted_stats = _postgres_deleted(store)

    frame_stats = _postgres_frames(store)

    def measure(conn: Any) -> tuple[list[Any], Any, Any, _Frames, Any]:
        rows = conn.execute(event_stats, {"top": top}).fetchall()
        found = conn.execute(has_snapshots).fetchone()
        snapshot_row = (conn.execute(snapshot_stats).fetchone()
                        if found and found[0] is not None else None)
        deleted = conn.execute(deleted_stats).fetchone() if deleted_stats else None
        frames = _Frames.of(conn.cursor().stream(frame_stats)) if frame_stats else _Frames()
        archived = conn.execute(archived_stats).fetchone() if archived_stats else None
        return rows, snapshot_row, deleted, frames, archived

    archived_stats = _postgres_archived(store)
    measured: tuple[list[Any], Any, Any, _Frames, Any] = store._run(measure)  # reads: retried
    rows, snapshot_row, deleted, frames, archived = measured
    return _with_archived(frames.applied(
        _with_deleted(_from_rows("postgresql", rows, snapshot_row, None), deleted)), archived)


def _postgres_frames(store: Any) -> Any:
    """The compressed-payload statement for ``store``'s schema; ``None`` before schema 5."""
    if store.sql.version < 5:
        return None
    from psycopg import sql

    return sql.SQL(
        "SELECT octet_length(data_zstd), substring(data_zstd from 1 for {}) FROM {}.eskit_events "
        "WHERE data_zstd IS NOT NULL"
    ).format(sql.Literal(FRAME_HEADER_BYTES), sql.Identifier(store.schema))


# Compressed payloads are BLOBs holding a zstd frame (text is JSON): the frame's header
# declares the decoded size, so only its first bytes are read, never inflated.
_SQLITE_FRAMES = (
    f"SELECT length(data), substr(data, 1, {FRAME_HEADER_BYTES}) FROM eskit_events "
    "WHERE typeof(data) = 'blob'"
)


@dataclass
class _Frames:
    """The compressed payloads' bytes as stored and as their headers say they decode."""

    stored: int = 0
    decoded: int = 0

    @classmethod
    def of(cls, rows: Iterable[Any]) -> _Frames:
        found = cls()
        for length, head in rows:  # a cursor: streamed, one row at a time
            found.add(length, head)
        return found

    def add(self, length: int, head: bytes) -> None:
        size = declared_size(bytes(head))
        self.stored += int(length)
        # A frame without a size (never written by eskit) counts as it is stored.
        self.decoded += int(length) if size is None else size

    def applied(self, found: StoreStats) -> StoreStats:
        decoded = found.payload_bytes - self.stored + self.decoded
        return replace(found, decoded_bytes=decoded, compression_ratio=(
            round(decoded / found.payload_bytes, 4) if found.payload_bytes else None))


# Archiving (eskit.archive): each archived stream's row keeps how many events went.
_SQLITE_ARCHIVED = "SELECT count(*), coalesce(sum(events), 0) FROM eskit_archived_streams"


def _postgres_archived(store: Any) -> Any:
    """The archived-streams statement for ``store``'s schema; ``None`` before schema 10."""
    from eskit.stores.postgres_archive import ARCHIVE_SCHEMA

    return store.sql.archive.totals if store.sql.version >= ARCHIVE_SCHEMA else None


def _with_archived(found: StoreStats, archived: Any) -> StoreStats:
    if archived is None:
        return found
    return replace(found, archived_streams=int(archived[0]), archived_events=int(archived[1]))

def _removals(prefix: str, truncations: bool) -> str:
    """One row: deleted streams, events hard deletes removed, truncated streams,
    events truncations removed. A hard delete removes what a truncation left, so a
    truncated stream deleted later is not counted twice; without the truncation
    table (older schemas) the last two are NULL."""
    deleted, truncated = f"{prefix}eskit_deleted_streams", f"{prefix}eskit_truncated_streams"
    if not truncations:
        return (f"SELECT count(*), coalesce(sum(CASE WHEN hard THEN version ELSE 0 END), 0), "
                f"NULL, NULL FROM {deleted}")
    return (
        f"SELECT (SELECT count(*) FROM {deleted}), "
        f"(SELECT coalesce(sum(CASE WHEN d.hard THEN d.version - coalesce(("
        f"SELECT t.first_version - 1 FROM {truncated} t WHERE t.stream_id = d.stream_id"
        f"), 0) ELSE 0 END), 0) FROM {deleted} d), "
        f"(SELECT count(*) FROM {truncated}), "
        f"(SELECT coalesce(sum(first_version - 1), 0) FROM {truncated})"
    )


def _sqlite_removals(store: SQLiteEventStore) -> str:
    return _removals("", store._truncations)


def _postgres_deleted(store: Any) -> Any:
    """The removals statement for ``store``'s schema; ``None`` before schema 6."""
    if store.sql.version < 6:
        return None
    from psycopg import sql

    from eskit.stores.postgres_truncation import TRUNCATION_SCHEMA

    # The schema name was validated when the store was made: quoting it is safe.
    prefix = f'"{store.schema}".'
    return sql.SQL(_removals(prefix, store.sql.version >= TRUNCATION_SCHEMA))


def _with_deleted(found: StoreStats, removed: Any) -> StoreStats:
    if removed is None:
        return found
    return replace(
        found, deleted_streams=int(removed[0]), deleted_events=int(removed[1]),
        truncated_streams=None if removed[2] is None else int(removed[2]),
        truncated_events=None if removed[3] is None else int(removed[3]),
    )


def _memory_stats(store: InMemoryEventStore, top: int) -> StoreStats:
    # In memory there is no database to ask: one pass over the rows, under the lock.
    per: dict[str, tuple[int, int]] = {}
    with store._lock:
        for stream, all_rows in store._streams.items():
            rows = [r for r in all_rows if r is not None]  # None: truncated away
            size = sum(len(r.data.encode("utf-8", "surrogatepass"))
                       + len(r.metadata.encode("utf-8", "surrogatepass")) for r in rows)
            per[stream] = (len(rows), size)
        deleted, removed = len(store._deleted), store._removed_events
        truncated = (len(store._first), sum(first - 1 for first in store._first.values()))
    categories: dict[str, list[int]] = {}
    for stream, (n, b) in per.items():
        totals = categories.setdefault(stream.partition("-")[0], [0, 0, 0])
        totals[0] += 1
        totals[1] += n
        totals[2] += b
    largest = sorted(per.items(), key=lambda item: (-item[1][1], item[0]))[:top]
    largest_categories = sorted(categories.items(), key=lambda item: (-item[1][2], item[0]))
    return _Frames().applied(StoreStats(  # nothing is compressed in memory
        system="memory", events=sum(n for n, _ in per.values()), streams=len(per),
        payload_bytes=sum(b for _, b in per.values()), storage_bytes=None,
        largest_streams=tuple(StreamSize(s, n, b) for s, (n, b) in largest),
        largest_categories=tuple(CategorySize(c, s, n, b)
                                 for c, (s, n, b) in largest_categories[:top]),
        snapshots=None, snapshot_bytes=None,
        deleted_streams=deleted, deleted_events=removed,
        truncated_streams=truncated[0], truncated_events=truncated[1],
    ))
