"""LISTEN for an async PostgreSQL store's appends, on psycopg's ``AsyncConnection`` (internal).

The async twin of the sync store's LISTEN waiter, with the same decisions: every
append sends ``NOTIFY`` after it commits; a notification can be lost (the
listening connection dropped, say), so every wait also ends after its timeout,
and a lost notification only delays a subscriber, never loses events. When the
listening connection drops, the wait returns at once (notifications sent
meanwhile are lost, so the subscriber should read now) and the next wait
connects again and re-LISTENs; until that works, waits sleep for their timeout.
Logged on ``eskit.subscription``: WARNING on the drop, INFO once listening again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from eskit.errors import StoreUnavailableError
from eskit.stores.postgres_connection import translate
from eskit.stores.postgres_listen import STANDBY_POLLS
from eskit.stores.postgres_schema import Statements

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__: list[str] = []

_log = logging.getLogger("eskit.subscription")


class ListenSource(Protocol):
    """What the waiter needs of its store (an :class:`~eskit.aio.AsyncPostgresEventStore`).

    A protocol, so that the store imports this module and not the other way round.
    """

    sql: Statements

    async def _current_pool(self) -> AsyncConnectionPool[Any]: ...


class AsyncListenWaiter:
    """Waits on LISTEN for the store's channel, on a connection of its own."""

    def __init__(self, store: ListenSource) -> None:
        self._store = store
        self._woken = asyncio.Event()
        self._pid = os.getpid()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lost = False
        self._standby = False

    @classmethod
    async def open(cls, store: ListenSource) -> AsyncListenWaiter:
        waiter = cls(store)
        try:
            waiter._conn = await waiter._listen()
        except StoreUnavailableError as exc:
            # The server is away: start without LISTEN, the first wait retries.
            _log.warning("eskit: cannot LISTEN yet, will retry: %s", exc)
            waiter._lost = True
        return waiter

    async def _listen(self) -> psycopg.AsyncConnection[Any] | None:
        """A listening connection, or None on a hot standby (no LISTEN there)."""
        pool = await self._store._current_pool()
        # The pool's own connection settings (either may be a function to call).
        conninfo = await _resolved(pool.conninfo)
        kwargs = dict(await _resolved(pool.kwargs) or {})
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, **{**kwargs, "autocommit": True})
        except psycopg.Error as exc:
            raise translate(exc, "cannot LISTEN on PostgreSQL") from exc
        try:
            await conn.execute(self._store.sql.listen)
        except psycopg.errors.ReadOnlySqlTransaction:
            await conn.close()
            self._standby = True
            _log.info(STANDBY_POLLS)
            return None
        except psycopg.Error as exc:
            await conn.close()
            raise translate(exc, "cannot LISTEN on PostgreSQL") from exc
        return conn

    async def wait(self, timeout: float) -> None:
        if self._conn is None:
            try:
                self._conn = None if self._standby else await self._listen()
            except StoreUnavailableError:
                self._conn = None
            if self._conn is None:
                await self._sleep(timeout)  # poll: the server is away, or a standby
                return
            if self._lost:
                _log.info("eskit: LISTEN connection restored")
                self._lost = False
            return  # notifications sent while not listening are lost: read now
        if self._woken.is_set():
            self._woken.clear()
            return
        conn = self._conn
        notified = asyncio.ensure_future(_next_notify(conn, timeout))
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait({notified, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Why cancelling is safe: psycopg consumes input only once the socket is
            # readable, so a wait cancelled before that leaves the connection as it was.
            woken.cancel()
            notified.cancel()
            await asyncio.wait({notified})  # let it end; its outcome is read below
        error = None if notified.cancelled() else notified.exception()
        if isinstance(error, psycopg.Error):
            _log.warning("eskit: LISTEN connection lost, reconnecting: %s", error)
            self._lost = True
            with suppress(psycopg.Error):
                await conn.close()
            self._conn = None
        elif error is not None:
            raise error
        self._woken.clear()

    async def _sleep(self, timeout: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    def wake(self) -> None:
        self._woken.set()

    async def close(self) -> None:
        self._woken.set()
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with suppress(psycopg.Error):
                await conn.close()


async def _next_notify(conn: psycopg.AsyncConnection[Any], timeout: float) -> None:
    async for _ in conn.notifies(timeout=timeout, stop_after=1):
        pass


async def _resolved(setting: Any) -> Any:
    if callable(setting):
        setting = setting()
        if inspect.isawaitable(setting):
            setting = await setting
    return setting
