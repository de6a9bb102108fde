"""Live wake-ups for the sync PostgreSQL store: LISTEN waiters and the NOTIFY sender.

Moved out of :mod:`eskit.stores.postgres` unchanged; the store is seen through a
protocol, since that module imports this one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import AbstractContextManager, suppress
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from eskit.errors import StoreError, StoreUnavailableError
from eskit.stores.postgres_connection import translate
from eskit.stores.postgres_schema import NOTIFY_INTERVAL, Statements

__all__ = ["STANDBY_POLLS", "ListenWaiter", "Notifier"]

STANDBY_POLLS = ("eskit: the server is a hot standby, which has no LISTEN: subscribers "
                 "poll it every poll_interval")


class _Store(Protocol):
    sql: Statements
    schema: str

    def _current_pool(self) -> ConnectionPool[Any]: ...

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


class ListenWaiter:
    """Waits on LISTEN for the store's channel, on a connection of its own.

    Appends send ``NOTIFY`` after they commit. A notification can be lost (the
    listening connection dropped, say); every wait therefore also ends after its
    timeout, so a lost notification only delays a subscriber, never loses events.

    When the listening connection drops, the wait returns at once (notifications
    sent meanwhile are lost, so the subscriber should read now) and the next wait
    connects again and re-LISTENs; until that succeeds, waits fall back to sleeping
    for their timeout. Logged on ``eskit.subscription``: WARNING on the drop, INFO
    once listening again. On a hot standby, which refuses LISTEN, waits only sleep
    for their timeout (the subscriber's ``poll_interval``): logged once at INFO.
    """

    def __init__(self, store: _Store) -> None:
        self._store = store
        self._token = f"wake-{id(self)}"
        self._woken = threading.Event()
        self._pid = os.getpid()
        self._conn: psycopg.Connection[Any] | None = None
        self._lost = False
        self._standby = False
        try:
            self._conn = self._listen()
        except StoreUnavailableError as exc:
            # The server is away: start without LISTEN, the first wait retries.
            _sub_log.warning("eskit: cannot LISTEN yet, will retry: %s", exc)
            self._lost = True

    def _listen(self) -> psycopg.Connection[Any] | None:
        """A listening connection, or None on a hot standby (no LISTEN there)."""
        conninfo = self._store._current_pool().conninfo
        if callable(conninfo):
            conninfo = conninfo()
        try:
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise translate(exc, "cannot LISTEN on PostgreSQL") from exc
        try:
            conn.execute(self._store.sql.listen)
        except psycopg.errors.ReadOnlySqlTransaction:
            conn.close()
            self._standby = True
            _sub_log.info(STANDBY_POLLS)
            return None
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc, "cannot LISTEN on PostgreSQL") from exc
        return conn

    def wait(self, timeout: float) -> None:
        if self._conn is None:
            try:
                self._conn = None if self._standby else self._listen()
            except StoreUnavailableError:
                self._conn = None
            if self._conn is None:
                self._woken.wait(timeout)  # poll: the server is away, or a standby
                self._woken.clear()
                return
            if self._lost:
                _sub_log.info("eskit: LISTEN connection restored")
                self._lost = False
            return  # notifications sent while not listening are lost: read now
        try:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as exc:
            _sub_log.warning("eskit: LISTEN connection lost, reconnecting: %s", exc)
            self._lost = True
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()
        try:
            with self._store._connection() as conn:
                conn.execute(
                    self._store.sql.notify_payload, (self._store.sql.channel, self._token)
                )
        except StoreError as exc:
            # The waiter polls while LISTEN is down; _woken ends that sleep.
            _sub_log.debug("eskit: wake-up NOTIFY failed: %s", exc)

    def close(self) -> None:
        self._woken.set()
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()


class Notifier:
    """Sends the NOTIFY that wakes subscribers, from a thread of its own.

    An append only sets a flag, so the wake-up costs the append no round trip (a
    NOTIFY sent with every append cost about a fifth of a command's time). The
    thread then sends one NOTIFY for everything appended since its last one:
    appends within a few milliseconds coalesce. It runs after the appends committed, and in a
    transaction of its own, which writes nothing (no commit record to flush, and
    the notify queue's commit-time lock is held only by this tiny transaction, not
    by the appends). A NOTIFY that fails is logged; subscribers then find the
    events at their next poll.
    """

    def __init__(self, store: _Store) -> None:
        self._store = store
        self._pending = threading.Event()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"eskit-notify-{store.schema}", daemon=True
        )
        self._thread.start()

    def signal(self) -> None:
        self._pending.set()

    def _run(self) -> None:
        store = self._store
        while True:
            self._pending.wait()
            self._pending.clear()
            try:
                with store._connection() as conn:
                    conn.execute(store.sql.notify, (store.sql.channel,))
            except StoreError as exc:
                _log.warning("eskit: NOTIFY failed, subscribers will poll: %s", exc)
            if self._closing:
                return
            # At most one NOTIFY per interval: under a steady stream of appends this
            # turns one round trip per append into a few hundred per second, and
            # delays a subscriber's wake-up by at most the interval.
            time.sleep(NOTIFY_INTERVAL)

    def close(self) -> None:
        """Send a last NOTIFY for anything pending, then stop the thread."""
        self._closing = True
        self._pending.set()
        self._thread.join(timeout=5)


_log = logging.getLogger("eskit.postgres")
_sub_log = logging.getLogger("eskit.subscription")
