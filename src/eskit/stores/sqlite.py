"""The embedded event store, on the standard library's ``sqlite3``.

Design notes (why it is safe):

* **One writer at a time, in commit order.** Every append is one
  ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock *before*
  reading the stream head, so the expected-version check and the insert see the
  same state, and positions are handed out in the order transactions commit.
  A deferred transaction that upgrades to a write gets ``SQLITE_BUSY`` at once,
  ignoring the busy timeout (https://www.sqlite.org/lang_transaction.html), which
  is why we never use one for appends.
* **Several processes on one file.** WAL lets readers run beside the writer;
  writers of other processes wait on the busy timeout (30 s by default) instead
  of failing, and threads of this process queue on a lock first so they do not
  poll. WAL needs all processes on one host: no network file systems.
* **Durable by default.** ``synchronous=FULL`` in WAL mode survives power loss;
  ``NORMAL`` is faster but can lose the last commits if the machine (not just
  the process) crashes (https://www.sqlite.org/pragma.html#pragma_synchronous).
* **Append only.** Triggers make the events table reject ``UPDATE`` and
  ``DELETE``, so not even a stray SQL statement can rewrite history.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from eskit.errors import InvalidInputError, NotAnEskitStoreError, StoreBusyError, StoreError
from eskit.events import Event, EventRegistry, StreamId
from eskit.stores.base import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    EventStore,
    Expected,
    PendingEvent,
    StreamInfo,
    decode_rows,
    expected_range,
    micros_to_timestamp,
    resolve_conflict,
    stream_id_from_key,
    timestamp_to_micros,
)

__all__ = ["SQLiteEventStore"]

SCHEMA_VERSION = 2
STORE_FORMAT = "eskit-event-store"

# Numbered migrations: MIGRATIONS[n] takes a store from schema version n to n + 1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE eskit_meta (
               key   TEXT PRIMARY KEY,
               value TEXT NOT NULL
           ) WITHOUT ROWID""",
        """CREATE TABLE eskit_events (
               position       INTEGER PRIMARY KEY AUTOINCREMENT,
               event_id       BLOB    NOT NULL UNIQUE,
               stream_id      TEXT    NOT NULL,
               version        INTEGER NOT NULL,
               event_type     TEXT    NOT NULL,
               schema_version INTEGER NOT NULL,
               recorded_at    INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC
               data           TEXT    NOT NULL,  -- JSON, see eskit.codec
               metadata       TEXT    NOT NULL,  -- JSON
               UNIQUE (stream_id, version)
           )""",
        """CREATE TRIGGER eskit_events_no_update BEFORE UPDATE ON eskit_events
           BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
        """CREATE TRIGGER eskit_events_no_delete BEFORE DELETE ON eskit_events
           BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
        f"INSERT INTO eskit_meta (key, value) VALUES ('format', '{STORE_FORMAT}')",
    ],
    # 1 -> 2: snapshots (eskit.stores.sqlite_snapshots). A cache beside the events, so
    # not append-only: a snapshot may be replaced, and deleting them all is safe.
    [
        """CREATE TABLE eskit_snapshots (
               stream_id      TEXT    NOT NULL,
               aggregate_type TEXT    NOT NULL,
               version        INTEGER NOT NULL,
               event_id       BLOB    NOT NULL,  -- the event at that version
               state_version  INTEGER NOT NULL,
               taken_at       INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC
               state          TEXT    NOT NULL,  -- JSON, see eskit.codec
               PRIMARY KEY (stream_id, aggregate_type, version)
           ) WITHOUT ROWID""",
    ],
]

_COLUMNS = (
    "position, event_id, stream_id, version, event_type, schema_version, recorded_at, "
    "data, metadata"
)
_INSERT = f"INSERT INTO eskit_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# The first event of a batch, inserted only if the stream's head is in [lo, hi] (the
# expected version), at the next version and the next AUTOINCREMENT position, which it
# reports; no row back means the expectation failed and nothing was written. The
# rest of the batch follows it one by one (the write lock is held). A one-event
# append, the commonest, so costs one statement inside its transaction.
_INSERT_FIRST = (
    "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data, metadata) "
    "SELECT ?1, ?7, head.v + 1, ?2, ?3, ?4, ?5, ?6 "
    "FROM (SELECT coalesce(MAX(version), 0) AS v FROM eskit_events WHERE stream_id = ?7) "
    "AS head WHERE head.v BETWEEN ?8 AND ?9 "
    "RETURNING position, version"
)
# What decode_rows reads (eskit.stores.base.StoredRow): tx 0, so the position is seq.
_SELECT = f"SELECT 0, {_COLUMNS} FROM eskit_events"

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

_MAX_INTEGER = 2**63 - 1
"""SQLite's largest integer: the largest position and version it can hold."""


class SQLiteEventStore(EventStore):
    """An event store in a SQLite file (or ``":memory:"``).

    The schema is created on first use. ``create=False`` opens an existing
    store only (for inspection) and raises
    :class:`~eskit.errors.NotAnEskitStoreError` for anything else.
    Safe to share between threads, and between processes on one host.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        create: bool = True,
        registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise InvalidInputError(
                f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}"
            )
        if type(max_event_bytes) is not int or max_event_bytes < 1:
            raise InvalidInputError("max_event_bytes must be a positive int")
        if registry is not None:
            self.registry = registry
        self.max_event_bytes = max_event_bytes
        self.path = str(path)
        self._memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self._synchronous = synchronous
        self._busy_timeout = float(busy_timeout)
        self._create = create
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        if not create and not self._memory and not Path(self.path).is_file():
            reason = "it is not a file" if Path(self.path).exists() else "the file does not exist"
            raise NotAnEskitStoreError(f"no eskit store at {self.path!r}: {reason}")
        self._writer = self._connect()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- connections --------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        with _translated(self.path):
            if self._create or self._memory:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None,
                    check_same_thread=False,
                )
            else:  # open an existing file, never create one
                conn = sqlite3.connect(
                    Path(self.path).absolute().as_uri() + "?mode=rw", uri=True,
                    timeout=self._busy_timeout, isolation_level=None, check_same_thread=False,
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        if self._memory:  # one in-memory database means one connection
            return self._writer
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def _reading_memory(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock, _translated(self.path):
            yield self._reader()

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """The reader connection, with errors translated (and, in memory, the lock held)."""
        if self._memory:
            return self._reading_memory()
        return _Reading(self)

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- schema -------------------------------------------------------------------------

    def _setup(self) -> None:
        conn = self._writer
        with _translated(self.path):
            # Look before changing anything: a file that is not an eskit store must be
            # left exactly as it was (no WAL switch, no -wal/-shm files) when inspecting.
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            found = self._schema_version(conn) if "eskit_meta" in tables else 0
            ready = found >= SCHEMA_VERSION
            if not self._create:
                # Opened for inspection: any eskit store will do (reading events needs
                # nothing newer than the first schema) and nothing is changed, not even
                # the journal mode.
                if found == 0:
                    raise NotAnEskitStoreError(
                        f"{self.path!r} is a SQLite database, not an eskit store"
                    )
                return
            if "eskit_events" in tables and "eskit_meta" not in tables:
                raise NotAnEskitStoreError(
                    f"{self.path!r} has a table eskit_events that eskit did not create"
                )
            if not self._memory:
                self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
            if ready:
                return
            with self._write_lock:
                self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
                try:
                    current = self._schema_version(conn)
                    for target in range(current, SCHEMA_VERSION):
                        for statement in MIGRATIONS[target]:
                            conn.execute(statement)
                    conn.execute(
                        "INSERT OR REPLACE INTO eskit_meta (key, value) "
                        "VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        try:
            row = conn.execute(
                "SELECT value FROM eskit_meta WHERE key IN ('format', 'schema_version') "
                "ORDER BY key"
            ).fetchall()
        except sqlite3.OperationalError:  # no eskit_meta table yet
            return 0
        values = [r[0] for r in row]
        if not values:
            return 0
        if values[0] != STORE_FORMAT:
            raise NotAnEskitStoreError(f"{self.path!r} is not an eskit event store")
        version = int(values[1]) if len(values) > 1 else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} has eskit schema version {version}; this eskit knows only "
                f"up to {SCHEMA_VERSION}: upgrade eskit"
            )
        return version

    def _retry_busy(self, action: Any) -> Any:
        # Changing the journal mode or starting a write can report SQLITE_BUSY without
        # consulting the busy handler when another process is setting up the same file.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    # -- writing ------------------------------------------------------------------------

    def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        if self._closed:
            raise StoreError("the store is closed")
        conn = self._writer
        with self._write_lock, _translated(self.path):
            self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            committed = False
            try:
                lo, hi = expected_range(expected)
                first = batch[0]
                micros = timestamp_to_micros(first.timestamp)
                try:
                    row = conn.execute(_INSERT_FIRST, (
                        first.event_id.bytes, first.event_type, first.schema_version, micros,
                        first.data.decode(), first.metadata.decode(), stream, lo, hi,
                    )).fetchone()
                    if row is None:  # the stream is not where the caller expects it
                        return resolve_conflict(
                            stream_id, stream, expected, self._head_in(conn, stream), batch,
                            self._find(conn, batch),
                        )
                    position, version = row
                    head, start = version - 1, position - 1
                    if len(batch) > 1:
                        conn.executemany(_INSERT, [
                            (start + i + 1, p.event_id.bytes, stream, head + i + 1,
                             p.event_type, p.schema_version,
                             micros if p.timestamp is first.timestamp
                             else timestamp_to_micros(p.timestamp),
                             p.data.decode(), p.metadata.decode())
                            for i, p in enumerate(batch) if i
                        ])
                except sqlite3.IntegrityError:
                    # An event id is stored already: a retried batch, or a reused id.
                    # Roll back first: rows of this batch inserted before the clash
                    # must not be mistaken for a stored copy of it.
                    conn.execute("ROLLBACK")
                    return resolve_conflict(
                        stream_id, stream, expected, self._head_in(conn, stream), batch,
                        self._find(conn, batch),
                    )
                conn.execute("COMMIT")
                committed = True
            finally:
                if not committed and conn.in_transaction:
                    conn.execute("ROLLBACK")
        events = tuple(
            p.recorded(stream_id, head + i + 1, start + i + 1) for i, p in enumerate(batch)
        )
        return AppendResult(stream_id, head + len(batch), start + len(batch), events)

    @staticmethod
    def _head_in(conn: sqlite3.Connection, stream: str) -> int:
        row = conn.execute(
            "SELECT MAX(version) FROM eskit_events WHERE stream_id = ?", (stream,)
        ).fetchone()
        return int(row[0] or 0)

    def _find(self, conn: sqlite3.Connection, batch: Sequence[PendingEvent]) -> dict[UUID, Event]:
        found: dict[UUID, Event] = {}
        ids = [p.event_id.bytes for p in batch]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                f"{_SELECT} WHERE event_id IN ({marks})", chunk
            ).fetchall()
            for event in decode_rows(rows):
                found[event.event_id] = event
        return found

    # -- reading ------------------------------------------------------------------------

    def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        sql = f"{_SELECT} WHERE stream_id = ? AND version > ?"
        params: list[Any] = [stream, from_version]
        if to_version is not None:
            sql += " AND version <= ?"
            params.append(to_version)
        sql += " ORDER BY version DESC" if backwards else " ORDER BY version"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return decode_rows(rows, stream_id)

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # Positions here are SQLite integers (below 2**63); the contract admits any
        # position up to 2**128 - 1, and nothing lies after one beyond the largest.
        if after >= _MAX_INTEGER:
            return []
        with self._reading() as conn:
            rows = conn.execute(
                f"{_SELECT} WHERE position > ? ORDER BY position LIMIT ?",
                (after, limit),
            ).fetchall()
        return decode_rows(rows)

    def _head_version(self, stream: str) -> int:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT MAX(version) FROM eskit_events WHERE stream_id = ?", (stream,)
            ).fetchone()
        return int(row[0] or 0)

    def _version_at(self, stream: str, as_of: datetime) -> int:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT MAX(version) FROM eskit_events WHERE stream_id = ? AND recorded_at <= ?",
                (stream, timestamp_to_micros(as_of)),
            ).fetchone()
        return int(row[0] or 0)

    def _head_position(self) -> int:
        with self._reading() as conn:
            row = conn.execute("SELECT MAX(position) FROM eskit_events").fetchone()
        return int(row[0] or 0)

    def _list_streams(self) -> list[StreamInfo]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT stream_id, MAX(version), MAX(position), MAX(recorded_at) "
                "FROM eskit_events GROUP BY stream_id ORDER BY MIN(position)"
            ).fetchall()
        return [
            StreamInfo(stream_id_from_key(s), v, p, micros_to_timestamp(t)) for s, v, p, t in rows
        ]


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _translated:  # lower case: it reads like the function it replaced, _translated(path)
    """Turn sqlite3 errors into eskit errors at the edge of the store.

    A class rather than a ``@contextmanager`` generator: it wraps every read and
    append, and a generator-based context manager cost a few microseconds each.
    """

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        if exc is None or not isinstance(exc, sqlite3.DatabaseError):
            return
        path = self.path
        if isinstance(exc, sqlite3.OperationalError):
            if _is_busy(exc):
                raise StoreBusyError(f"{path!r} stayed locked by other writers: {exc}") from exc
            raise StoreError(f"SQLite error on {path!r}: {exc}") from exc
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise NotAnEskitStoreError(f"{path!r} is not an eskit store: {exc}") from exc
        raise StoreError(f"SQLite error on {path!r}: {exc}") from exc


class _Reading(_translated):
    """``_reading()`` for a file: the thread's reader connection, errors translated."""

    __slots__ = ("store",)

    def __init__(self, store: SQLiteEventStore) -> None:
        super().__init__(store.path)
        self.store = store

    def __enter__(self) -> sqlite3.Connection:  # type: ignore[override]
        try:
            return self.store._reader()
        except sqlite3.DatabaseError as exc:  # opening the connection can fail too
            self.__exit__(type(exc), exc, None)
            raise
