"""Wake-ups for SQLite subscriptions: a commit by any connection or process is seen.

SQLite has no notifications, but ``PRAGMA data_version`` changes on a connection
whenever another connection has committed to the file since that connection
last looked, and reading it costs no disk I/O in WAL mode (it comes from the
shared-memory index). So a subscription keeps one connection of its own and
looks every :data:`~eskit.subscription.SQLITE_CHECK_INTERVAL` seconds while it
waits: a commit by another process is seen within about that long, without
reading the events table. https://www.sqlite.org/pragma.html#pragma_data_version

:class:`DataVersionWatch` is the one check, used by the sync waiter here and by
the async one (:mod:`eskit.aio.sqlite`), so the two cannot drift.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from eskit.errors import StoreError
from eskit.subscription import SQLITE_CHECK_INTERVAL, PollingWaiter, Waiter

__all__ = ["DataVersionWaiter", "DataVersionWatch"]

_log = logging.getLogger("eskit.subscription")

# Connections a child process inherited in use: never closed nor freed there (freeing
# closes, and closing an inherited connection can delete the parent's -wal file).
_INHERITED: list[sqlite3.Connection] = []


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


class DataVersionWatch:
    """Whether another connection has committed to a SQLite file since the last look.

    Holds one connection of its own (opened with ``connect``), never used to write,
    so its own commits cannot hide others'. Safe to call from any thread, one look
    at a time. Fork-aware (the store registers it): the connection is closed just
    before ``os.fork()`` and reopened at the next look, which then reports a change,
    since commits in between cannot be known.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._version = 0
        self._lost_track = False  # the connection was closed for a fork
        self._closed = False
        self._fork_locked = False

    def changed(self) -> bool:
        """Look once: ``True`` if a commit may have happened since the last look.

        The first look only takes the baseline (``False``). Raises ``sqlite3.Error``
        or :class:`~eskit.StoreError` when the file cannot be read.
        """
        with self._lock:
            if self._closed:
                return False
            conn = self._conn
            fresh = conn is None
            try:
                if conn is None:
                    conn = self._conn = self._connect()
                version = _data_version(conn)
            except BaseException:
                # Start again from a new connection; what happened meanwhile is unknown.
                self._conn = None
                self._lost_track = True
                if conn is not None:
                    conn.close()
                raise
            if fresh:
                self._version = version
                lost, self._lost_track = self._lost_track, False
                return lost
            if version == self._version:
                return False
            self._version = version
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- fork(): called by the fork hooks of eskit.stores.sqlite -------------------------

    def _before_fork(self) -> None:
        # A look holds the lock for one PRAGMA: waiting for it is short.
        self._fork_locked = self._lock.acquire(timeout=5.0)
        if self._fork_locked and self._conn is not None:
            self._conn.close()
            self._conn = None
            self._lost_track = True

    def _after_fork_in_parent(self) -> None:
        if self._fork_locked:
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        if self._conn is not None:  # still open: in use by another thread at the fork
            _INHERITED.append(self._conn)
            self._conn = None
            self._lost_track = True
        self._lock = threading.Lock()


class DataVersionWaiter(PollingWaiter):
    """The sync SQLite file waiter: woken by appends through the store object and,
    within about :data:`~eskit.subscription.SQLITE_CHECK_INTERVAL` seconds, by a
    commit of any other connection or process; every wait still ends after its
    timeout. If the file cannot be read, it falls back to sleeping out the timeout.
    """

    def __init__(
        self, watch: DataVersionWatch, forget: Callable[[Waiter], None]
    ) -> None:
        super().__init__()
        self._watch = watch
        self._forget = forget
        self._watch.changed()  # the baseline, taken before the subscription's first read

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._event.is_set():
            try:
                if self._watch.changed():
                    break
            except (sqlite3.Error, StoreError) as exc:
                _log.debug("eskit: PRAGMA data_version failed: %s", exc)
                self._event.wait(max(0.0, deadline - time.monotonic()))
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._event.wait(min(SQLITE_CHECK_INTERVAL, remaining))
        self._event.clear()

    def close(self) -> None:
        super().close()
        self._forget(self)
        self._watch.close()
