"""SQLiteTarget: read models, checkpoints and parked events in a SQLite file."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eskit.errors import StoreError
from eskit.projections.checkpoints import (
    ProjectionTarget,
)
from eskit.projections.sql import Dialect
from eskit.stores.sqlite import keep_inherited, watch_forks

__all__ = ["SQLiteTarget"]


class SQLiteTarget(ProjectionTarget):
    """Read models, checkpoints and parked events in a SQLite file.

    Usually the event store's own file (``SQLiteTarget(store.path)``), so one file
    holds everything; any other file works too. WAL and ``synchronous=FULL``
    like the store.
    """

    dialect: Dialect = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0,
        synchronous: str = "FULL",
    ) -> None:
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise StoreError("SQLiteTarget needs a file: an in-memory database is private "
                             "to one connection")
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous}")
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._unusable = ""
        self._fork_quiet = self._fork_locked = False
        self.setup()
        watch_forks(self)

    @property
    def connection(self) -> sqlite3.Connection:
        """The target's connection, opened when first needed (and again after a fork)."""
        with self._lock:
            if self._unusable:
                raise StoreError(self._unusable)
            if self._closed:
                raise StoreError(f"the target {self.path!r} is closed")
            if self._connection is None:
                try:
                    conn = sqlite3.connect(self.path, timeout=self._busy_timeout,
                                           isolation_level=None, check_same_thread=False)
                    try:
                        self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
                        conn.execute(f"PRAGMA synchronous={self._synchronous}")
                    except BaseException:
                        conn.close()
                        raise
                except sqlite3.Error as exc:
                    raise StoreError(f"cannot open {self.path!r}: {exc}") from exc
                self._connection = conn
            return self._connection

    def _retry_busy(self, action: Any) -> Any:
        # BEGIN IMMEDIATE and journal-mode changes can report SQLITE_BUSY without
        # waiting on the busy handler when another process is mid-setup.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def setup(self) -> None:
        with self.transaction() as conn:
            for statement in self._tables_sql("REAL"):
                conn.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self.connection
            try:
                self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a transaction on {self.path!r}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"commit failed on {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # fork(): like the event store (see eskit.stores.sqlite), the target closes its
    # connection before a fork, so that no process inherits it; an inherited
    # connection to the file makes even the child's own connections lose appends.
    def _before_fork(self) -> None:
        self._fork_locked = self._lock.acquire(timeout=self._busy_timeout)
        conn = self._connection
        # Not quiet: another thread kept the lock, or this very thread forks inside
        # a transaction (the lock is reentrant).
        self._fork_quiet = self._fork_locked and not (conn is not None and conn.in_transaction)
        if self._fork_quiet and conn is not None:
            conn.close()
            self._connection = None

    def _after_fork_in_parent(self) -> None:
        if self._fork_locked:
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        if not self._fork_quiet and self._connection is not None:
            keep_inherited(self._connection)  # in use at fork(): never touch it
            self._connection = None
            self._unusable = (f"the target {self.path!r} was in use when this process was "
                              "forked; open a new target in the child")
        self._lock = threading.RLock()
