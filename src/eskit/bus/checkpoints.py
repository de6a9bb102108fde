"""Relay checkpoints and leases, kept in the store's own database.

One row per relay name (table ``eskit_relays``): the position of the last
event whose batch the broker confirmed, the lease (owner token and expiry), the
count published, the last error, the rate, when it last moved. Every operation is
one short transaction: no SQLite write transaction and no PostgreSQL row lock is
ever held across broker I/O.

The lease: a relay takes the row when it has no owner or the owner's lease has
expired, and renews it with every batch and while idle. Moving the checkpoint is
fenced: it succeeds only while the relay's own token is the owner, so a relay
that lost its lease never moves the checkpoint back or forth. Lease expiry uses
the wall clocks of the relays' hosts: they must agree to well within the lease.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from eskit.errors import InvalidInputError, StoreBusyError, StoreError, StoreUnavailableError
from eskit.stores.rows import micros_to_timestamp

__all__ = ["RelayCheckpoints", "RelayRow", "checkpoints_for"]

T = TypeVar("T")


def now_micros() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class RelayRow:
    """One relay's stored state."""

    name: str
    destination: str
    position: int
    published: int
    rate: float
    last_error: str | None
    owner: str | None
    lease_until: datetime | None
    updated_at: datetime | None


_COLUMNS = (
    "name, destination, position, published, rate, last_error, owner, lease_until, updated_at"
)


def _row(values: Any) -> RelayRow:
    name, destination, position, published, rate, error, owner, until, updated = values
    return RelayRow(
        name, destination or "", int(position), int(published), float(rate or 0.0), error,
        owner, None if until is None else micros_to_timestamp(int(until)),
        None if updated is None else micros_to_timestamp(int(updated)),
    )


class RelayCheckpoints(ABC):
    """Where relays keep their checkpoints (async; each call is one short transaction)."""

    @abstractmethod
    async def acquire(self, name: str, owner: str, lease: float, destination: str) -> int | None:
        """Take the lease of ``name`` if free, expired or ours: its checkpoint, else ``None``."""

    @abstractmethod
    async def renew(self, name: str, owner: str, lease: float) -> bool:
        """Extend our lease; ``False`` if it is no longer ours."""

    @abstractmethod
    async def advance(
        self, name: str, owner: str, position: int, published: int, rate: float | None,
        lease: float,
    ) -> bool:
        """Move the checkpoint (and renew the lease) only if we own it; ``False`` if not."""

    @abstractmethod
    async def record_error(self, name: str, owner: str, message: str | None) -> None:
        """Remember (or with ``None`` clear) the relay's last error."""

    @abstractmethod
    async def release(self, name: str, owner: str) -> None:
        """Give the lease up (a clean stop), so another relay need not wait for it to expire."""

    @abstractmethod
    async def rows(self) -> list[RelayRow]:
        """Every relay's state, by name."""

    @abstractmethod
    async def set_position(self, name: str, position: int) -> None:
        """Put ``name``'s checkpoint at ``position`` (an operator's rewind; not fenced)."""

    async def close(self) -> None:  # noqa: B027 - only SQL checkpoints hold a connection
        """Release any connection."""


class MemoryCheckpoints(RelayCheckpoints):
    """Checkpoints in process memory (for an in-memory store): one table per store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}

    def _get(self, name: str) -> dict[str, Any]:
        return self._rows.setdefault(name, {
            "name": name, "destination": "", "position": 0, "published": 0, "rate": 0.0,
            "last_error": None, "owner": None, "lease_until": None, "updated_at": None,
        })

    async def acquire(self, name: str, owner: str, lease: float, destination: str) -> int | None:
        now = now_micros()
        with self._lock:
            row = self._get(name)
            if row["owner"] not in (None, owner) and row["lease_until"] >= now:
                return None
            row.update(owner=owner, lease_until=now + int(lease * 1e6), destination=destination)
            return int(row["position"])

    async def renew(self, name: str, owner: str, lease: float) -> bool:
        with self._lock:
            row = self._get(name)
            if row["owner"] != owner:
                return False
            row["lease_until"] = now_micros() + int(lease * 1e6)
            return True

    async def advance(
        self, name: str, owner: str, position: int, published: int, rate: float | None,
        lease: float,
    ) -> bool:
        now = now_micros()
        with self._lock:
            row = self._get(name)
            if row["owner"] != owner:
                return False
            row.update(position=position, published=row["published"] + published,
                       updated_at=now, lease_until=now + int(lease * 1e6))
            if rate is not None:
                row["rate"] = rate
            return True

    async def record_error(self, name: str, owner: str, message: str | None) -> None:
        with self._lock:
            self._get(name)["last_error"] = None if message is None else message[:2000]

    async def release(self, name: str, owner: str) -> None:
        with self._lock:
            row = self._get(name)
            if row["owner"] == owner:
                row.update(owner=None, lease_until=None)

    async def rows(self) -> list[RelayRow]:
        with self._lock:
            return [_row(tuple(r[c.strip()] for c in _COLUMNS.split(",")))
                    for _, r in sorted(self._rows.items())]

    async def set_position(self, name: str, position: int) -> None:
        _check_position(position)
        with self._lock:
            self._get(name)["position"] = position


def _check_position(position: object) -> None:
    if type(position) is not int or position < 0:
        raise InvalidInputError(f"a position is an int >= 0, got {position!r}")


class SQLCheckpoints(RelayCheckpoints):
    """Checkpoints in an ``eskit_relays`` table of SQLite or PostgreSQL.

    The relay's own connection (never one a store uses for appends), driven from a
    worker thread; each method is one short transaction.
    """

    def __init__(self, connect: Callable[[], Any], *, table: str, dialect: str) -> None:
        self._connect = connect
        self._table = table
        self._dialect = dialect
        self._conn: Any = None
        self._lock = threading.Lock()
        self._ready = False

    def _sql(self, query: str) -> str:
        query = query.replace("eskit_relays", self._table)
        return query.replace("?", "%s") if self._dialect == "postgres" else query

    def _tx(self, work: Callable[[Callable[..., Any]], T], create: bool = True) -> T:
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                try:
                    if self._dialect == "sqlite":
                        conn.execute("BEGIN IMMEDIATE")
                    else:
                        conn.execute("BEGIN")
                    if create and not self._ready:
                        if self._dialect == "postgres":
                            # Concurrent CREATE TABLE IF NOT EXISTS can collide in the
                            # catalog: relays starting together take turns.
                            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                         (f"eskit-relays-setup:{self._table}",))
                        conn.execute(self._sql(_TABLE.format(
                            float="REAL" if self._dialect == "sqlite" else "DOUBLE PRECISION")))
                    result = work(functools.partial(self._execute, conn))
                    conn.execute("COMMIT")
                    self._ready = self._ready or create
                    return result
                except BaseException as exc:
                    self._discard(conn)
                    if attempt == 1 and self._lost(exc):
                        continue  # a dropped connection: the statements are idempotent
                    raise self._translate(exc) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
        return conn.execute(self._sql(query), params)

    def _discard(self, conn: Any) -> None:
        try:
            if self._dialect == "sqlite":
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.close()
                self._conn = None
        except Exception:  # the connection is gone either way
            self._conn = None

    def _lost(self, exc: BaseException) -> bool:
        if self._dialect != "postgres":
            return False
        from eskit.stores.postgres_connection import connection_lost

        return connection_lost(exc)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, StoreError | InvalidInputError) or not isinstance(exc, Exception):
            return exc
        if isinstance(exc, sqlite3.Error):
            text = str(exc).lower()
            if "locked" in text or "busy" in text:
                return StoreBusyError(f"relay checkpoints: {exc}")
            return StoreError(f"relay checkpoints: {exc}")
        if self._lost(exc):
            return StoreUnavailableError(f"relay checkpoints: {exc}")
        return StoreError(f"relay checkpoints: {exc}")

    async def _run(self, work: Callable[[Callable[..., Any]], T], create: bool = True) -> T:
        return await asyncio.to_thread(self._tx, work, create)

    async def acquire(self, name: str, owner: str, lease: float, destination: str) -> int | None:
        def work(run: Callable[..., Any]) -> int | None:
            now = now_micros()
            run("INSERT INTO eskit_relays (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (name,))
            taken = run(
                "UPDATE eskit_relays SET owner = ?, lease_until = ?, destination = ? "
                "WHERE name = ? AND (owner IS NULL OR owner = ? OR lease_until < ?)",
                (owner, now + int(lease * 1e6), destination, name, owner, now),
            ).rowcount
            if taken != 1:
                return None
            rows = run("SELECT position FROM eskit_relays WHERE name = ?", (name,)).fetchall()
            return int(rows[0][0])

        return await self._run(work)

    async def renew(self, name: str, owner: str, lease: float) -> bool:
        def work(run: Callable[..., Any]) -> bool:
            return bool(run(
                "UPDATE eskit_relays SET lease_until = ? WHERE name = ? AND owner = ?",
                (now_micros() + int(lease * 1e6), name, owner),
            ).rowcount == 1)

        return await self._run(work)

    async def advance(
        self, name: str, owner: str, position: int, published: int, rate: float | None,
        lease: float,
    ) -> bool:
        def work(run: Callable[..., Any]) -> bool:
            now = now_micros()
            return bool(run(
                "UPDATE eskit_relays SET position = ?, published = published + ?, "
                "rate = COALESCE(?, rate), updated_at = ?, lease_until = ? "
                "WHERE name = ? AND owner = ?",
                (str(position), published, rate, now, now + int(lease * 1e6), name, owner),
            ).rowcount == 1)

        return await self._run(work)

    async def record_error(self, name: str, owner: str, message: str | None) -> None:
        def work(run: Callable[..., Any]) -> None:
            run("INSERT INTO eskit_relays (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (name,))
            run("UPDATE eskit_relays SET last_error = ? WHERE name = ?",
                (None if message is None else message[:2000], name))

        await self._run(work)

    async def release(self, name: str, owner: str) -> None:
        def work(run: Callable[..., Any]) -> None:
            run("UPDATE eskit_relays SET owner = NULL, lease_until = NULL "
                "WHERE name = ? AND owner = ?", (name, owner))

        await self._run(work)

    async def rows(self) -> list[RelayRow]:
        def work(run: Callable[..., Any]) -> list[RelayRow]:
            if self._dialect == "sqlite":
                found = run("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'eskit_relays'").fetchall()
            else:
                found = run("SELECT to_regclass(?)", (self._table,)).fetchall()[0][0]
            if not found:
                return []  # no relay ever ran: a report creates no table
            return [_row(r) for r in run(
                f"SELECT {_COLUMNS} FROM eskit_relays ORDER BY name").fetchall()]

        return await self._run(work, create=False)

    async def set_position(self, name: str, position: int) -> None:
        _check_position(position)

        def work(run: Callable[..., Any]) -> None:
            run("INSERT INTO eskit_relays (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (name,))
            run("UPDATE eskit_relays SET position = ? WHERE name = ?", (str(position), name))

        await self._run(work)

    async def close(self) -> None:
        def shut() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(shut)


# Positions are text: PostgreSQL positions reach ~2**96, past any SQL integer.
_TABLE = """CREATE TABLE IF NOT EXISTS eskit_relays (
    name        TEXT    NOT NULL PRIMARY KEY,
    destination TEXT,
    position    TEXT    NOT NULL DEFAULT '0',
    published   BIGINT  NOT NULL DEFAULT 0,
    rate        {float} NOT NULL DEFAULT 0,
    last_error  TEXT,
    owner       TEXT,
    lease_until BIGINT,
    updated_at  BIGINT
)"""

_memory_checkpoints: weakref.WeakKeyDictionary[Any, MemoryCheckpoints] = (
    weakref.WeakKeyDictionary()
)
_memory_lock = threading.Lock()


def checkpoints_for(store: object) -> RelayCheckpoints:
    """The relay checkpoints of ``store``: its SQLite file, its PostgreSQL schema, or memory.

    Sync and async stores alike; an in-memory store (sync or async) keeps them in
    memory for as long as the store object lives. Raises
    :class:`~eskit.InvalidInputError` for any other object.
    """
    from eskit.aio.memory import AsyncInMemoryEventStore
    from eskit.aio.sqlite import AsyncSQLiteEventStore
    from eskit.stores.memory import InMemoryEventStore
    from eskit.stores.sqlite import SQLiteEventStore

    inner = store.sync_store if isinstance(
        store, AsyncSQLiteEventStore | AsyncInMemoryEventStore) else store
    if isinstance(inner, InMemoryEventStore):
        with _memory_lock:
            held = _memory_checkpoints.get(inner)
            if held is None:
                held = _memory_checkpoints[inner] = MemoryCheckpoints()
            return held
    if isinstance(inner, SQLiteEventStore):
        path = inner.path
        if path == ":memory:" or path.startswith("file::memory:"):
            raise InvalidInputError("a relay needs a SQLite store in a file, not :memory:")

        def connect_sqlite() -> sqlite3.Connection:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            return conn

        return SQLCheckpoints(connect_sqlite, table="eskit_relays", dialect="sqlite")
    schema = getattr(store, "schema", None)
    pool = getattr(store, "pool", None)
    conninfo = getattr(pool, "conninfo", None)
    if type(schema) is str and type(conninfo) is str:
        def connect_postgres() -> Any:
            import psycopg

            from eskit.stores.postgres_connection import translate

            try:
                return psycopg.connect(conninfo, autocommit=True)
            except psycopg.Error as exc:
                raise translate(exc, "cannot connect to PostgreSQL") from exc

        quoted = '"' + schema.replace('"', '""') + '"'
        return SQLCheckpoints(connect_postgres, table=f"{quoted}.eskit_relays",
                              dialect="postgres")
    raise InvalidInputError(
        f"a relay needs an eskit event store (memory, SQLite or PostgreSQL), "
        f"got {type(store).__name__}"
    )
