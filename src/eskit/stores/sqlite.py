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
* **Tamper evidence.** Each event's chain hash (``eskit.integrity``) is written by
  its own insert, linked to the stream's head that very statement reads or checks,
  so a batch is chained whole or not at all (``eskit.stores.sqlite_chain``).
* **Connections.** One writer connection and a small pool of readers shared by
  all threads; a connection is closed only while no thread uses it, and all of
  them are closed just before ``os.fork()`` (see ``_before_fork`` for why a
  child must inherit none). Reads never yield to the caller while they hold a
  pooled connection, so a pool slot is never held across user code.
* **Hands off other databases.** A non-empty SQLite file that eskit did not
  create is refused before any write (``adopt=True`` to use it anyway).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from eskit.dcb import AppendCondition, Query
from eskit.errors import (
    AppendConditionFailed,
    DamagedStoreError,
    InvalidInputError,
    NotAnEskitStoreError,
    StoreBusyError,
    StoreError,
)
from eskit.events import Event, EventRegistry, StreamId
from eskit.stores import (
    sqlite_chain,
    sqlite_dcb,
    sqlite_deletion,
    sqlite_multi,
    sqlite_truncation,
)
from eskit.stores.arguments import expected_range, resolve_conflict, stream_id_from_key
from eskit.stores.base import EventStore
from eskit.stores.compression import (
    DEFAULT_COMPRESS_THRESHOLD,
    check_compress_threshold,
    stored_data,
)
from eskit.stores.deletion import deleted_error
from eskit.stores.filtered import ReadFilter
from eskit.stores.model import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    Expected,
    PendingEvent,
    StreamInfo,
)
from eskit.stores.multi import PreparedAppend
from eskit.stores.prefix_range import prefix_upper_bound
from eskit.stores.rows import (
    decode_rows,
    decode_tagged,
    micros_to_timestamp,
    timestamp_to_micros,
)
from eskit.stores.sqlite_archive import MIGRATION as SQLITE_ARCHIVE_MIGRATION
from eskit.stores.sqlite_archive import archived_error, archived_in
from eskit.stores.sqlite_dcb import MIGRATION as SQLITE_DCB_MIGRATION
from eskit.stores.sqlite_deletion import MIGRATION as SQLITE_DELETION_MIGRATION
from eskit.stores.sqlite_deletion import VISIBLE, deleted_state
from eskit.stores.sqlite_filtered import MIGRATION as SQLITE_FILTERED_MIGRATION
from eskit.stores.sqlite_filtered import PARTITION_MIGRATION as SQLITE_PARTITION_MIGRATION
from eskit.stores.sqlite_filtered import filtered_page_query
from eskit.stores.sqlite_transaction import SQLiteTransaction
from eskit.stores.sqlite_wakeups import DataVersionWaiter, DataVersionWatch
from eskit.subscription import Waiter

__all__ = ["SQLiteEventStore", "SQLiteTransaction"]

_log = logging.getLogger("eskit.stores.sqlite")
_getpid = os.getpid  # on every call: a fork is detected by the process id changing

# Reader connections kept open, per store, between reads; more may be open while
# more threads read at once. Each holds two file descriptors (database and -wal).
MAX_IDLE_READERS = 8

SCHEMA_VERSION = 10
STORE_FORMAT = "eskit-event-store"

# Numbered migrations: MIGRATIONS[n] takes a store from schema version n to n + 1.
MIGRATIONS: list[Sequence[sqlite_chain.Statement]] = [
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
    # 2 -> 3: compressed payloads (eskit.stores.compression). A compressed payload is
    # a zstd frame stored as a BLOB in the same data column (TEXT affinity keeps a
    # BLOB a BLOB), so no column is added. The append-only trigger now lets through
    # the one rewrite eskit.compact makes: a TEXT payload replaced by a BLOB that
    # starts with the zstd magic, every other column unchanged. That the frame holds
    # the same bytes is checked by compact before it commits: a check in the trigger
    # would need a function of eskit's, and a connection without it could then not
    # even prepare an UPDATE, so raw SQL would meet "no such function" instead of
    # this refusal.
    [
        "DROP TRIGGER eskit_events_no_update",
        """CREATE TRIGGER eskit_events_no_update BEFORE UPDATE ON eskit_events
           WHEN NOT (NEW.position IS OLD.position AND NEW.event_id IS OLD.event_id
                     AND NEW.stream_id IS OLD.stream_id AND NEW.version IS OLD.version
                     AND NEW.event_type IS OLD.event_type
                     AND NEW.schema_version IS OLD.schema_version
                     AND NEW.recorded_at IS OLD.recorded_at
                     AND NEW.metadata IS OLD.metadata
                     AND typeof(OLD.data) = 'text' AND typeof(NEW.data) = 'blob'
                     AND substr(NEW.data, 1, 4) = X'28B52FFD')
           BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""",
    ],
    # 3 -> 4: deleted streams and tombstones (eskit.stores.sqlite_deletion).
    SQLITE_DELETION_MIGRATION,
    # 4 -> 5: archived streams (eskit.archive, eskit.stores.sqlite_archive).
    SQLITE_ARCHIVE_MIGRATION,
    # 5 -> 6: per-stream truncation (eskit.stores.sqlite_truncation).
    sqlite_truncation.MIGRATION,
    # 6 -> 7: the event-type index of filtered reads (eskit.stores.sqlite_filtered).
    SQLITE_FILTERED_MIGRATION,
    # 7 -> 8: DCB tags (eskit.dcb, eskit.stores.sqlite_dcb).
    SQLITE_DCB_MIGRATION,
    # 8 -> 9: hash chains (eskit.integrity, eskit.stores.sqlite_chain).
    sqlite_chain.MIGRATION,
    # 9 -> 10: each event's stream_hash, for partitioned reads (eskit.stores.partitions).
    SQLITE_PARTITION_MIGRATION,
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
# Named parameters: Python 3.12 deprecates numbered ones (?1) bound from a sequence
# (an error from 3.14).
_INSERT_FIRST = (
    "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data, metadata) "
    "SELECT :id, :stream, head.v + 1, :type, :schema, :at, :data, :meta "
    "FROM (SELECT coalesce(MAX(version), 0) AS v FROM eskit_events WHERE stream_id = :stream) "
    "AS head WHERE head.v BETWEEN :lo AND :hi "
    "AND NOT EXISTS (SELECT 1 FROM eskit_deleted_streams WHERE stream_id = :stream) "
    "AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams WHERE stream_id = :stream) "
    "RETURNING position, version"
)
# The same for a file of an older schema opened with create=False (no deletions).
_INSERT_FIRST_V4 = _INSERT_FIRST.replace(
    "AND NOT EXISTS (SELECT 1 FROM eskit_archived_streams WHERE stream_id = :stream) ", ""
)
_INSERT_FIRST_V3 = _INSERT_FIRST_V4.replace(
    "AND NOT EXISTS (SELECT 1 FROM eskit_deleted_streams WHERE stream_id = :stream) ", ""
)
# What decode_rows reads (eskit.stores.rows.StoredRow): tx 0, so the position is seq.
_SELECT = f"SELECT 0, {_COLUMNS} FROM eskit_events"
_ANY_DELETED = "SELECT 1 FROM eskit_deleted_streams LIMIT 1"

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]

_MAX_INTEGER = 2**63 - 1
"""SQLite's largest integer: the largest position and version it can hold."""


class SQLiteEventStore(EventStore):
    """An event store in a SQLite file (or ``":memory:"``).

    The schema is created on first use, in a new or empty file. A SQLite
    database that eskit did not create (other tables in it) is refused with
    :class:`~eskit.errors.NotAnEskitStoreError` and left byte for byte as it
    was, unless ``adopt=True``: then eskit adds its tables beside the others
    and switches the file to WAL. ``create=False`` opens an existing store only
    (for inspection) and refuses anything else. A corrupt file raises
    :class:`~eskit.errors.DamagedStoreError`.

    Safe to share between threads, and between processes on one host. Also
    across ``os.fork()``: the store closes its connections just before a fork
    and each process opens new ones when it next needs them. Not guaranteed:
    other connections to the same file that eskit does not own (your own
    ``sqlite3.connect``) must be closed before forking, or the child's appends
    can be lost when the parent closes them.

    ``store.in_transaction(conn).append(...)`` appends inside the transaction open
    on the caller's ``sqlite3.Connection`` to this file (its main database), in a
    savepoint: the caller's rows and the events commit or roll back together,
    eskit never commits ``conn``, and a failed append undoes only itself. Nothing
    is visible to other readers before the caller commits; SQLite's single writer
    keeps positions in commit order (see
    :class:`~eskit.stores.sqlite_transaction.SQLiteTransaction`).

    Subscriptions on a file are woken by every commit to it, from any connection
    or process, within about :data:`~eskit.subscription.SQLITE_CHECK_INTERVAL`
    seconds (``PRAGMA data_version``; see :mod:`eskit.stores.sqlite_wakeups`).
    """

    db_system = "sqlite"  # OpenTelemetry's db.system.name

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 30.0,
        create: bool = True,
        adopt: bool = False,
        registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
    ) -> None:
        self.compress_threshold = check_compress_threshold(compress_threshold)
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
        self._adopt = adopt
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._pool_lock = threading.Lock()  # a plain lock: `with` on it costs least
        self._pool_changed = threading.Condition(self._pool_lock)  # for close() and fork()
        self._readers: set[sqlite3.Connection] = set()  # open reader connections
        self._idle: list[sqlite3.Connection] = []  # of those, the ones not in use
        self._busy = 0  # readers checked out (or being opened)
        self._closed = False
        self._pid = os.getpid()
        self._unusable = ""  # why this store refuses every call, if it does
        # "" on a file of a schema before deletions opened with create=False.
        self._visible = VISIBLE
        # False on a file of a schema before archives opened with create=False.
        self._archives = True
        self._truncations = True  # False: a file of a schema before eskit_truncated_streams
        # False on a file of a schema before DCB tags opened with create=False.
        self._tags_table = True
        # False on a file of a schema before hash chains opened with create=False.
        self._chained = True
        # False on a file of a schema before stream_hash opened with create=False.
        self._hashed = True
        # stream -> (version, hash) of its head as this writer last appended it: a
        # guess the insert checks (sqlite_chain.INSERT_FIRST_ASSUMED), never trusted alone.
        self._heads: dict[str, tuple[int, bytes | None]] = {}
        self._forking = False
        self._fork_quiet = self._fork_write_locked = self._after_fork = False
        if not create and not self._memory and not Path(self.path).is_file():
            reason = "it is not a file" if Path(self.path).exists() else "the file does not exist"
            raise NotAnEskitStoreError(f"no eskit store at {self.path!r}: {reason}")
        self._writer = self._connect()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        watch_forks(self)

    # -- connections --------------------------------------------------------------------
    #
    # One writer connection, used under ``_write_lock``, and a small pool of reader
    # connections shared by every thread. Why a pool and not one connection per
    # thread: a thread-per-request server starts thousands of short-lived threads,
    # and per-thread connections outlived their threads (two file descriptors
    # each) until the process ran out of them. Why connections are closed only
    # while nobody uses them: closing one while another thread's statement runs on
    # it frees memory under that statement (the process died with SIGSEGV).

    def _connect(self, *, existing: bool = False) -> sqlite3.Connection:
        """A new connection to the store's database; ``existing``: never create the file."""
        if self._after_fork:
            self._after_fork = False
            _log.debug("%r: opening new connections in process %d after a fork",
                       self.path, os.getpid())
        with _translated(self.path):
            if (self._create and not existing) or self._memory:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None,
                    check_same_thread=False,
                )
            else:  # open an existing file, never create one
                conn = sqlite3.connect(
                    Path(self.path).absolute().as_uri() + "?mode=rw", uri=True,
                    timeout=self._busy_timeout, isolation_level=None, check_same_thread=False,
                )
            try:
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.create_function("eskit_link", 3, sqlite_chain.link_function,
                                     deterministic=True)
            except BaseException:
                conn.close()
                raise
        return conn

    # -- wake-ups ---------------------------------------------------------------------

    def _new_waiter(self) -> Waiter:
        """A subscription's waiter: woken by appends through this object and, on a
        file, by any other connection's or process's commit (``PRAGMA data_version``)."""
        if self._memory:  # no other connection can write to it
            return super()._new_waiter()
        self._usable()
        waiter = DataVersionWaiter(self._watch_file(), self._forget_waiter)
        self._add_waiter(waiter)
        return waiter

    def _watch_file(self) -> DataVersionWatch:
        """A new watch on the file's commits, on a connection of its own (internal;
        the async store's waiter uses one too), closed around ``os.fork()``."""
        # existing=True: a watch that reconnects (after a fork or an error) must not
        # create an empty file where the store's was deleted.
        watch = DataVersionWatch(lambda: self._connect(existing=True))
        watch_forks(watch)
        return watch

    def _usable(self) -> None:
        """Raise StoreError if this store must not be used (closed, or inherited)."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._pid != _getpid():
            self._forked_without_hooks()
        if self._unusable:
            raise StoreError(self._unusable)

    def _lock_writer(self, timeout: float = -1) -> sqlite3.Connection | None:
        """Take the write lock and return the writer connection (None on timeout).

        The caller releases ``_write_lock``.
        """
        self._usable()
        lock = self._write_lock
        if not lock.acquire(timeout=timeout):
            return None
        try:
            self._usable()
            conn = self._writer
            if conn is None:
                conn = self._writer = self._connect()
            return conn
        except BaseException:
            lock.release()
            raise

    def _checkout(self) -> sqlite3.Connection:
        """A reader connection of the pool (a new one if none is idle); see _checkin."""
        if self._pid != _getpid() or self._closed or self._unusable:
            self._usable()
        with self._pool_lock:
            while self._forking:
                self._pool_changed.wait()
            if self._closed or self._unusable:
                self._usable()
            self._busy += 1
            if self._idle:
                return self._idle.pop()
        try:
            conn = self._connect()
        except BaseException:
            self._checkin(None)
            raise
        with self._pool_lock:
            if not self._closed:
                self._readers.add(conn)
                return conn
        self._checkin(conn)
        raise StoreError("the store is closed")

    def _checkin(self, conn: sqlite3.Connection | None) -> None:
        with self._pool_lock:
            self._busy -= 1
            if conn is not None:
                if self._closed or len(self._idle) >= MAX_IDLE_READERS:
                    self._readers.discard(conn)
                    conn.close()
                else:
                    self._idle.append(conn)
            if not self._busy and (self._closed or self._forking):
                self._pool_changed.notify_all()

    @contextmanager
    def _maintenance(self) -> Iterator[sqlite3.Connection]:
        """A maintenance write (delete, compact, archive, restore) on the writer.

        One ``BEGIN IMMEDIATE`` transaction under the write lock: committed when the
        block ends, unless the block ended it itself; rolled back if it raises.
        """
        conn = self._lock_writer()
        assert conn is not None  # no timeout given
        try:
            with _translated(self.path):
                self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
                try:
                    yield conn
                    if conn.in_transaction:
                        conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        finally:
            self._write_lock.release()

    @contextmanager
    def _reading_memory(self) -> Iterator[sqlite3.Connection]:
        conn = self._lock_writer()
        assert conn is not None
        try:
            with _translated(self.path):
                yield conn
        finally:
            self._write_lock.release()

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A reader connection, with errors translated (in memory: the writer, locked)."""
        if self._memory:  # one in-memory database means one connection
            return self._reading_memory()
        return _Reading(self)

    def close(self) -> None:
        """Close the store's connections; later calls raise :class:`~eskit.StoreError`.

        Reads running in other threads are interrupted and raise ``StoreError``;
        an append under way finishes first (it is never cut off halfway); waiting
        subscriptions end at once with ``StoreError``. Safe to call more than once
        and from any thread.
        """
        with self._pool_lock:
            self._closed = True
            for conn in self._readers.difference(self._idle):
                conn.interrupt()  # safe: a reader is closed only under this lock
            idle, self._idle = self._idle, []
            for conn in idle:
                self._readers.discard(conn)
                conn.close()
            # The readers still in use are closed by their own _checkin.
            self._pool_changed.wait_for(lambda: not self._busy, timeout=self._busy_timeout)
        if self._write_lock.acquire(timeout=self._busy_timeout):
            try:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            finally:
                self._write_lock.release()
        # Subscriptions waiting on this store read now, fail with StoreError and close
        # their own connections, rather than at the end of their poll interval.
        self._wake_waiters()

    # -- fork() -------------------------------------------------------------------------
    #
    # Why: SQLite connections must not cross fork() (https://www.sqlite.org/howtocorrupt.html,
    # 2.6). Worse, as long as the child holds *any* inherited connection to the file,
    # even the connections it opens itself share the parent's lock bookkeeping (one
    # per file and process in SQLite's unix VFS) and take no locks of their own: the
    # parent's last close then checkpoints and deletes the -wal file the child is
    # still appending to, and acknowledged events vanish. So the parent closes the
    # store's connections just before fork() (waiting for reads and appends under
    # way) and both processes open new ones when next needed.

    def _before_fork(self) -> None:
        self._fork_quiet = False
        if self._closed:
            return
        self._fork_write_locked = self._write_lock.acquire(timeout=self._busy_timeout)
        with self._pool_lock:
            self._forking = True
            idle = self._pool_changed.wait_for(lambda: not self._busy, timeout=self._busy_timeout)
            if not (self._fork_write_locked and idle):
                _log.warning("%r is still in use by another thread at fork(): the child "
                             "process will refuse to use it", self.path)
                return
            self._fork_quiet = True
            if not self._memory:  # an in-memory database is the child's own copy: keep it
                for conn in self._idle:
                    conn.close()
                self._idle.clear()
                self._readers.clear()
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None

    def _after_fork_in_parent(self) -> None:
        if self._closed:
            return
        with self._pool_lock:
            self._forking = False
            self._pool_changed.notify_all()
        if self._fork_write_locked:
            self._write_lock.release()
        self._after_fork = True

    def _after_fork_in_child(self) -> None:
        if self._closed:
            return
        if not self._fork_quiet:
            # Connections in use at fork(): never use, close or even free them here
            # (freeing one closes it, which can delete the parent's -wal file).
            _INHERITED.extend(self._open_connections())
            self._writer = None
            self._unusable = (
                f"{self.path!r} was in use by another thread when this process was "
                "forked; open a new store in the child process"
            )
        self._readers = set()
        self._idle = []
        self._busy = 0
        self._forking = False
        self._pool_lock = threading.Lock()
        self._pool_changed = threading.Condition(self._pool_lock)
        self._write_lock = threading.Lock()
        self._pid = os.getpid()
        self._after_fork = True

    def _open_connections(self) -> list[sqlite3.Connection]:
        return [*self._readers, *([self._writer] if self._writer is not None else [])]

    def _forked_without_hooks(self) -> None:
        # A fork that bypassed os.fork() (and so the hooks above): the inherited
        # connections are live and must stay untouched.
        with _FORK_LOCK:
            if self._pid != os.getpid():
                _INHERITED.extend(self._open_connections())
                self._readers, self._idle, self._writer = set(), [], None
                self._unusable = (
                    f"{self.path!r} was opened in process {self._pid}, which forked without "
                    "os.fork(); open a new store in this process"
                )
                self._pid = os.getpid()
        raise StoreError(self._unusable)

    # -- schema -------------------------------------------------------------------------

    def _setup(self) -> None:
        conn = self._writer
        assert conn is not None
        with _translated(self.path):
            # Look before changing anything: a file that is not an eskit store must be
            # left exactly as it was (no WAL switch, no -wal/-shm files).
            objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
            tables = {name for kind, name in objects if kind == "table"}
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
                if found < 4:  # no eskit_deleted_streams yet: nothing is deleted
                    self._visible = ""
                if found < 5:  # no eskit_archived_streams yet: nothing is archived
                    self._archives = False
                if found < 6:  # no eskit_truncated_streams yet
                    self._truncations = False
                if found < 8:  # no eskit_event_tags yet: no event has tags
                    self._tags_table = False
                if found < 9:  # no hash column yet: appends store no chain
                    self._chained = False
                if found < 10:  # no stream_hash column yet
                    self._hashed = False
                return
            if "eskit_events" in tables and "eskit_meta" not in tables:
                raise NotAnEskitStoreError(
                    f"{self.path!r} has a table eskit_events that eskit did not create"
                )
            if "eskit_meta" not in tables and not self._adopt:
                self._refuse_foreign(conn, objects)
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
                            if callable(statement):
                                statement(conn)
                            else:
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

    def schema_version(self) -> int:
        """The eskit schema version of the file; ``0`` if eskit's tables are absent.

        Lower than the newest only for a store opened with ``create=False``: any
        other open migrates the file first.
        """
        self._usable()
        with self._reading() as conn:
            return self._schema_version(conn)

    def _refuse_foreign(self, conn: sqlite3.Connection, objects: list[Any]) -> None:
        """Raise NotAnEskitStoreError if the database holds anything eskit did not make."""
        # eskit's projection tables (SQLiteTarget) may come first; SQLite's own
        # objects (sqlite_sequence, automatic indexes) come with them.
        foreign = sorted(
            name for _, name in objects if not name.startswith(("eskit_", "sqlite_"))
        )
        marks = [
            f"{pragma} {value}" for pragma in ("application_id", "user_version")
            if (value := conn.execute(f"PRAGMA {pragma}").fetchone()[0])
        ]
        if foreign or marks:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise NotAnEskitStoreError(
                f"{self.path!r} is a SQLite database that eskit did not create "
                f"({'tables ' + shown if foreign else ', '.join(marks)}); it was left "
                "unchanged. Pass adopt=True to add an event store to it"
            )

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
        writer = self._lock_writer()
        assert writer is not None  # no timeout
        conn = writer
        try:
            return self._append_locked(conn, stream_id, stream, expected, batch)
        finally:
            self._write_lock.release()

    def _append_if(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition,
    ) -> AppendResult:
        self._needs_tags()
        writer = self._lock_writer()
        assert writer is not None  # no timeout
        try:
            return self._append_locked(writer, stream_id, stream, expected, batch, condition)
        finally:
            self._write_lock.release()

    def _append_locked(
        self, conn: sqlite3.Connection, stream_id: StreamId, stream: str, expected: Expected,
        batch: list[PendingEvent], condition: AppendCondition | None = None,
    ) -> AppendResult:
        with _translated(self.path):
            self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            committed = False
            try:
                # The write lock is held: nothing can be appended between this check
                # and the insert (see eskit.stores.sqlite_dcb).
                if condition is not None and not sqlite_dcb.condition_holds(
                    conn, condition.fail_if_events_match, condition.after_position,
                    self._visible,
                ):
                    # A retry of this very append matches its own events: a duplicate.
                    found = self._find(conn, batch)
                    conn.execute("ROLLBACK")
                    if found:
                        return resolve_conflict(
                            stream_id, stream, expected, self._head_in(conn, stream), batch,
                            found,
                        )
                    raise AppendConditionFailed(stream_id, condition)
                try:
                    placed = self._insert(conn, stream, expected, batch)
                except sqlite3.IntegrityError:
                    # An event id is stored already: a retried batch, or a reused id.
                    # Roll back first: rows of this batch inserted before the clash
                    # must not be mistaken for a stored copy of it.
                    conn.execute("ROLLBACK")
                    placed = None
                if placed is None:  # the stream is not where the caller expects it
                    return resolve_conflict(
                        stream_id, stream, expected, self._head_in(conn, stream), batch,
                        self._find(conn, batch),
                    )
                conn.execute("COMMIT")
                committed = True
            finally:
                if not committed and conn.in_transaction:
                    conn.execute("ROLLBACK")
        return self._recorded(stream_id, batch, *placed)

    def _append_many(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        if condition is not None:
            self._needs_tags()
        writer = self._lock_writer()
        assert writer is not None  # no timeout
        try:
            return sqlite_multi.append_many_locked(self, writer, prepared, condition)
        finally:
            self._write_lock.release()

    def _insert(
        self, conn: sqlite3.Connection, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> tuple[int, int] | None:
        """Insert the batch in the open transaction: ``(head, start)``, the stream's
        version and the position before it; ``None`` (nothing written) if the stream
        is not at ``expected``. ``sqlite3.IntegrityError`` for an event id stored
        already, after some rows of the batch may be in: roll back then."""
        lo, hi = expected_range(expected)
        if self._chained:
            return sqlite_chain.insert_chained(self, conn, stream, lo, hi, batch)
        threshold = self.compress_threshold
        first = batch[0]
        micros = timestamp_to_micros(first.timestamp)
        insert = (_INSERT_FIRST if self._archives
                  else _INSERT_FIRST_V4 if self._visible else _INSERT_FIRST_V3)
        row = conn.execute(insert, {
            "id": first.event_id.bytes, "type": first.event_type,
            "schema": first.schema_version, "at": micros,
            "data": stored_data(first.data, threshold), "meta": first.metadata.decode(),
            "stream": stream, "lo": lo, "hi": hi,
        }).fetchone()
        if row is None:
            self._refused(conn, stream)
            return None
        position, version = row
        head, start = version - 1, position - 1
        if self._tags_table:
            sqlite_dcb.insert_tags(conn, start, batch)
        elif any(p.tags for p in batch):
            raise StoreError(
                f"{self.path!r} has an eskit schema before DCB tags: open it with "
                "SQLiteEventStore(path) (create=True) once to migrate it"
            )
        if len(batch) > 1:
            conn.executemany(_INSERT, [
                (start + i + 1, p.event_id.bytes, stream, head + i + 1,
                 p.event_type, p.schema_version,
                 micros if p.timestamp is first.timestamp
                 else timestamp_to_micros(p.timestamp),
                 stored_data(p.data, threshold), p.metadata.decode())
                for i, p in enumerate(batch) if i
            ])
        return head, start

    def _refused(self, conn: sqlite3.Connection, stream: str) -> None:
        """Raise if nothing was inserted because the stream is deleted or archived;
        return if it is only not at the expected version."""
        if self._visible and (hard := deleted_state(conn, stream)) is not None:
            raise deleted_error(stream_id_from_key(stream), hard)
        if self._archives and (where := archived_in(conn, stream)) is not None:
            raise archived_error(stream_id_from_key(stream), *where)

    # -- appending in the caller's transaction (eskit.stores.sqlite_transaction) --------

    def in_transaction(self, connection: sqlite3.Connection) -> SQLiteTransaction:
        """Append inside the caller's open transaction on ``connection``.

        ``connection`` is the application's own ``sqlite3.Connection`` whose main
        database is this store's file. Use as ``with store.in_transaction(conn) as
        tx: tx.append(...)``; eskit never commits: the events commit or roll back
        with the caller's other writes. See :class:`SQLiteTransaction`. Raises
        :class:`~eskit.InvalidInputError` for any other connection, and for a store
        in ``":memory:"``, which shares its database with no other connection.
        """
        return SQLiteTransaction(self, connection)

    def _translating(self) -> _translated:
        return _translated(self.path)

    @staticmethod
    def _recorded(
        stream_id: StreamId, batch: list[PendingEvent], head: int, start: int
    ) -> AppendResult:
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
        sql = f"{_SELECT} WHERE stream_id = ? AND version > ?{self._visible}"
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
            # An archived stream has no rows left: an empty read looks, once, whether
            # it was archived, so that it never passes for an empty history.
            if not rows and self._archives and (where := archived_in(conn, stream)):
                raise archived_error(stream_id, *where)
            events = decode_tagged(rows, stream_id, (
                lambda found: sqlite_dcb.attach_range_tags(conn, found, stream=stream)
            ) if self._tags_table else None)
        return events

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # Positions here are SQLite integers (below 2**63); the contract admits any
        # position up to 2**128 - 1, and nothing lies after one beyond the largest.
        if after >= _MAX_INTEGER:
            return []
        with self._reading() as conn:
            # The filter costs a key probe per row (read_all 20-70% slower, measured):
            # skip it while nothing is deleted, one cheap look per page. A delete that
            # commits between the look and the read reads as the read came first.
            visible = self._visible
            if visible and conn.execute(_ANY_DELETED).fetchone() is None:
                visible = ""
            rows = conn.execute(
                f"{_SELECT} WHERE position > ?{visible} ORDER BY position LIMIT ?",
                (after, limit),
            ).fetchall()
            events = decode_tagged(rows, None, (
                lambda found: sqlite_dcb.attach_range_tags(conn, found)
            ) if self._tags_table else None)
        return events

    def _read_filtered_page(
        self, after: int, upto: int, limit: int, wanted: ReadFilter
    ) -> list[Event]:
        if after >= _MAX_INTEGER:
            return []
        with self._reading() as conn:
            visible = self._visible
            if visible and conn.execute(_ANY_DELETED).fetchone() is None:
                visible = ""  # as in _read_all_page
            if not self._hashed:  # no stream_hash column: the partitions tested in Python
                wanted = wanted.unpartitioned()
            sql, params = filtered_page_query(
                _SELECT, visible, wanted, after, min(upto, _MAX_INTEGER), limit
            )
            rows = conn.execute(sql, params).fetchall()
            events = decode_tagged(rows, None, (
                lambda found: sqlite_dcb.attach_range_tags(conn, found, types=wanted.types)
            ) if self._tags_table else None)
        return events

    def _read_events(
        self, query: Query, after: int, limit: int | None
    ) -> tuple[list[Event], int]:
        self._needs_tags()
        if after >= _MAX_INTEGER:
            return [], after
        matching, params = sqlite_dcb.matching_sql(query, self._visible)
        sql = f"{_SELECT} WHERE position IN ({matching}) AND position <= :head ORDER BY position"
        if limit is not None:
            sql += " LIMIT :limit"
        with self._reading() as conn:
            # The head first, then the events up to it: positions follow commit order,
            # so nothing can appear at or below a head once it is read.
            row = conn.execute("SELECT MAX(position) FROM eskit_events").fetchone()
            head = int(row[0] or 0)
            rows = conn.execute(
                sql, {**params, "after": after, "head": head, "limit": limit}
            ).fetchall()
            events = decode_rows(rows)
            sqlite_dcb.attach_tags(conn, events)
        return events, head

    def _needs_tags(self) -> None:
        if not self._tags_table:
            raise StoreError(
                f"{self.path!r} has an eskit schema before DCB tags: open it with "
                "SQLiteEventStore(path) (create=True) once to migrate it"
            )

    def _head_version(self, stream: str) -> int:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT MAX(version) FROM eskit_events WHERE stream_id = ?{self._visible}",
                (stream,),
            ).fetchone()
        return int(row[0] or 0)

    def _version_at(self, stream: str, as_of: datetime) -> int:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT MAX(version) FROM eskit_events WHERE stream_id = ? AND recorded_at <= ?"
                + self._visible,
                (stream, timestamp_to_micros(as_of)),
            ).fetchone()
        return int(row[0] or 0)

    def _head_position(self) -> int:
        with self._reading() as conn:
            row = conn.execute("SELECT MAX(position) FROM eskit_events").fetchone()
            # A hard delete of the newest events must not take the head back.
            gone = conn.execute(
                "SELECT MAX(position) FROM eskit_deleted_streams WHERE hard = 1"
            ).fetchone() if self._visible else (0,)
        return max(int(row[0] or 0), int(gone[0] or 0))

    def _list_streams(self) -> list[StreamInfo]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT stream_id, MAX(version), MAX(position), MAX(recorded_at) "
                f"FROM eskit_events WHERE 1{self._visible} "
                "GROUP BY stream_id ORDER BY MIN(position)"
            ).fetchall()
        return [
            StreamInfo(stream_id_from_key(s), v, p, micros_to_timestamp(t)) for s, v, p, t in rows
        ]

    def _locate_event(self, event_id: UUID) -> tuple[StreamId, int] | None:
        with self._reading() as conn:  # the UNIQUE index on event_id
            row = conn.execute(
                f"SELECT stream_id, version FROM eskit_events WHERE event_id = ?{self._visible}",
                (event_id.bytes,),
            ).fetchone()
        return None if row is None else (stream_id_from_key(row[0]), int(row[1]))

    def _list_streams_page(self, prefix: str, after: str | None, limit: int) -> list[StreamInfo]:
        # A range of the UNIQUE (stream_id, version) index, walked in order: GROUP BY
        # stops after `limit` streams, so a page reads only its own streams' rows.
        # The WHERE is built from constant fragments; every value is a parameter.
        where, params = ["1"], []
        if after is not None:
            where.append("stream_id > ?")
            params.append(after)
        if prefix:
            where.append("stream_id >= ?")
            params.append(prefix)
            upper = prefix_upper_bound(prefix)
            if upper is not None:
                where.append("stream_id < ?")
                params.append(upper)
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT stream_id, MAX(version), MAX(position), MAX(recorded_at) "
                f"FROM eskit_events WHERE {' AND '.join(where)}{self._visible} "
                "GROUP BY stream_id ORDER BY stream_id LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            StreamInfo(stream_id_from_key(s), v, p, micros_to_timestamp(t)) for s, v, p, t in rows
        ]

    # -- deleting (eskit.stores.sqlite_deletion) ----------------------------------------

    def _delete_stream(self, stream_id: StreamId, stream: str, expected: Expected,
                       hard: bool) -> int:
        self._needs_deletions()
        return sqlite_deletion.delete_stream(self, stream_id, stream, expected, hard)

    def _restore_stream(self, stream_id: StreamId, stream: str) -> bool:
        self._needs_deletions()
        return sqlite_deletion.restore_stream(self, stream_id, stream)

    def _truncate_stream(self, stream_id: StreamId, stream: str, before: int,
                         expected: Expected, force: bool) -> int:
        if not self._truncations:
            raise StoreError(
                f"{self.path!r} has an eskit schema before truncation: open it with "
                "SQLiteEventStore(path) (create=True) once to migrate it"
            )
        return sqlite_truncation.truncate_stream(self, stream_id, stream, before, expected,
                                                 force)

    def _needs_deletions(self) -> None:
        if not self._visible:
            raise StoreError(
                f"{self.path!r} has an eskit schema before deletions: open it with "
                "SQLiteEventStore(path) (create=True) once to migrate it"
            )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_SQLITE_HEADER = b"SQLite format 3\x00"


def _looks_like_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


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
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            raise StoreBusyError(f"{path!r} stayed locked by other writers: {exc}") from exc
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
        # SQLITE_NOTADB: no SQLite header, so not ours; unless the header is there and
        # the rest is not, which is damage too.
        if code == sqlite3.SQLITE_CORRUPT or (
            code == sqlite3.SQLITE_NOTADB and _looks_like_sqlite(path)
        ):
            raise DamagedStoreError(
                f"{path!r} is damaged: SQLite reports {exc!s}; restore it from a backup "
                "(sqlite3's .recover command may save part of it)"
            ) from exc
        if code == sqlite3.SQLITE_NOTADB:
            raise NotAnEskitStoreError(f"{path!r} is not an eskit store: {exc}") from exc
        raise StoreError(f"SQLite error on {path!r}: {exc}") from exc


class _Reading(_translated):
    """``_reading()`` for a file: a reader connection of the pool, errors translated."""

    __slots__ = ("conn", "store")

    def __init__(self, store: SQLiteEventStore) -> None:
        self.path = store.path
        self.store = store

    def __enter__(self) -> sqlite3.Connection:  # type: ignore[override]
        try:
            self.conn = self.store._checkout()
        except sqlite3.DatabaseError as exc:  # opening the connection can fail too
            super().__exit__(type(exc), exc, None)
            raise
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        store = self.store
        store._checkin(self.conn)
        if exc is None:
            return
        if store._closed and isinstance(exc, sqlite3.Error):  # interrupted by close()
            raise StoreError(f"{self.path!r}: the store was closed during the read") from exc
        super().__exit__(kind, exc, traceback)


# -- fork() ------------------------------------------------------------------------------
# The stores and targets that close their connections around fork() (see
# SQLiteEventStore._before_fork): any object with _before_fork, _after_fork_in_parent
# and _after_fork_in_child methods.
_FORK_AWARE: weakref.WeakSet[Any] = weakref.WeakSet()
# Connections a child process inherited in use: kept referenced for good, since
# freeing one closes it, and closing it in the child can delete the parent's -wal.
_INHERITED: list[sqlite3.Connection] = []
_FORK_LOCK = threading.Lock()


def watch_forks(obj: Any) -> None:
    """Have ``obj``'s fork methods called around every ``os.fork()`` (internal)."""
    _FORK_AWARE.add(obj)


def keep_inherited(conn: sqlite3.Connection) -> None:
    """Keep a connection a child inherited in use alive, untouched, for good (internal)."""
    _INHERITED.append(conn)


def _each(method: str) -> None:
    for obj in list(_FORK_AWARE):
        try:
            getattr(obj, method)()
        except Exception:  # a hook must not break fork() for everybody else
            _log.exception("%s failed on %r", method, obj)


def _after_fork_in_child() -> None:
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()
    _each("_after_fork_in_child")


os.register_at_fork(
    before=lambda: _each("_before_fork"),
    after_in_parent=lambda: _each("_after_fork_in_parent"),
    after_in_child=_after_fork_in_child,
)
