"""The PostgreSQL event store, for asyncio (``pip install 'eskit[postgres]'``).

The async twin of :class:`eskit.stores.postgres.PostgresEventStore`, on
psycopg's ``AsyncConnection`` and ``psycopg_pool.AsyncConnectionPool``. It runs
the very same statements (:class:`~eskit.stores.postgres_schema.Statements`:
the same migrations, the same single-statement append, the same read of
``read_all`` below the read horizon) and decodes rows with the same functions,
so the two front ends store and return identical events and can share one
database and schema. See :mod:`eskit.stores.postgres_schema` for the ordering
technique and its caveats (an open append to the store holds readers back; an
append must be its transaction's first write; PostgreSQL 13+; appends go to the
primary).

Concurrency control rests on the unique key (stream_id, version): two writers
of one stream collide there and the loser gets a unique violation, which is
turned into a :class:`~eskit.ConcurrencyError`, a retry result or a
:class:`~eskit.DuplicateEventError` by the shared
:func:`~eskit.stores.arguments.resolve_conflict`. psycopg errors never leave this
module untranslated: they become :class:`~eskit.StoreError`.

Not guaranteed: an ``append`` cancelled while its statement runs may still
commit (PostgreSQL finishes or aborts the statement on its own); retry it with
the same event ids to find out, the retry returns ``duplicate=True``.

Dropped connections and ``fork()`` are handled as in the sync store, with the same
decisions (:mod:`eskit.stores.postgres_connection`): reads and appends are retried
on a fresh connection after the pool has been checked; a child process opens a
fresh pool of its own at first use (in the event loop it runs), or raises
:class:`~eskit.StoreError` if the pool was passed in.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from functools import partial
from typing import Any, Self, TypeVar
from uuid import UUID

from eskit.errors import (
    InvalidInputError,
    MissingExtraError,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
)

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.aio import postgres_dcb
from eskit.aio.postgres_listen import AsyncListenWaiter
from eskit.aio.postgres_transaction import AsyncPostgresTransaction, append_on
from eskit.aio.store import AsyncEventStore
from eskit.aio.subscription import AsyncWaiter
from eskit.dcb import AppendCondition, Query
from eskit.events import Event, EventRegistry, StreamId
from eskit.stores.arguments import resolve_conflict, stream_id_from_key
from eskit.stores.compression import DEFAULT_COMPRESS_THRESHOLD, check_compress_threshold
from eskit.stores.deletion import deleted_error, must_write_delete
from eskit.stores.filtered import ReadFilter
from eskit.stores.model import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    Expected,
    PendingEvent,
    StreamInfo,
)
from eskit.stores.multi import PreparedAppend
from eskit.stores.postgres_archive import ARCHIVE_SCHEMA, STREAM_ARCHIVED
from eskit.stores.postgres_connection import RECONNECT_ATTEMPTS, connection_lost, translate
from eskit.stores.postgres_dcb import (
    DCB_SCHEMA_VERSION,
    decoded,
    decoded_tagged_rows,
    page_tags,
)
from eskit.stores.postgres_deletion import STREAM_DELETED
from eskit.stores.postgres_multi import MAX_ATTEMPTS as MAX_MANY_ATTEMPTS
from eskit.stores.postgres_multi import (
    MultiStatements,
    append_many_in_savepoint_async,
    append_many_on_async,
    condition_plan,
    conditional_in_transaction,
    retry_whole_call,
)
from eskit.stores.postgres_schema import (
    EVENT_ID_CONSTRAINT,
    MAX_APPEND_ATTEMPTS,
    NOTIFY_INTERVAL,
    SCHEMA_VERSION,
    Statements,
    append_params,
    check_server_version,
    inserted_result,
    pack_position,
    pending_migrations,
    retry_after_lost_race,
    stream_infos,
    streams_page_params,
    too_busy,
    transaction_age,
    unpack_position,
)
from eskit.stores.postgres_transaction import check_caller_connection
from eskit.stores.postgres_truncation import TRUNCATION_SCHEMA
from eskit.stores.rows import decode_rows
from eskit.stores.sqlite_archive import archived_error
from eskit.stores.truncation import truncation_cut

__all__ = ["AsyncPostgresEventStore"]

_log = logging.getLogger("eskit.postgres")

T = TypeVar("T")

# --------------------------------------------------------------------------- the store


class AsyncPostgresEventStore(AsyncEventStore):
    """An event store in a PostgreSQL (13+) database, for asyncio.

    ``__init__`` does no I/O. Open a store with
    ``store = await AsyncPostgresEventStore.open(dsn, schema="eskit")``, or use
    ``async with AsyncPostgresEventStore(dsn) as store:``, which connects on
    entry and closes on exit. Pass a ``dsn`` (eskit then owns an autocommit
    ``AsyncConnectionPool``) or an existing ``psycopg_pool.AsyncConnectionPool``
    whose connections are in autocommit mode (you open and close it). Tables
    live in ``schema``; :meth:`setup` creates or upgrades them exactly like the
    sync store's, idempotently, and safely from several processes at once.
    """

    db_system = "postgresql"  # OpenTelemetry's db.system.name

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
        schema: str = "eskit",
        pool_size: int = 10,
        notify: bool = True,
        registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
        _engine: Any = None,
        _sa_connection: Any = None,
    ) -> None:
        if sum(x is not None for x in (dsn, pool, connection, _engine, _sa_connection)) != 1:
            raise InvalidInputError("pass exactly one of dsn, pool and connection")
        if connection is not None:
            check_caller_connection(connection, psycopg.AsyncConnection, need_transaction=False)
        if pool is not None and not isinstance(pool, AsyncConnectionPool):
            raise InvalidInputError(
                f"pool must be a psycopg_pool.AsyncConnectionPool, got {type(pool).__name__}"
            )
        if type(max_event_bytes) is not int or max_event_bytes < 1:
            raise InvalidInputError("max_event_bytes must be a positive int")
        if registry is not None:
            self.registry = registry
        self.max_event_bytes = max_event_bytes
        self.compress_threshold = check_compress_threshold(compress_threshold)
        self.sql = Statements(schema)
        self.sql_multi = MultiStatements(schema)
        self.schema = schema
        self._notify = notify
        self._notify_pending = False
        self._notify_task: asyncio.Task[None] | None = None
        self._owns_pool = dsn is not None
        self._pool_size = pool_size
        self._pid = os.getpid()
        self._reopening: asyncio.Task[None] | None = None
        self._dsn = dsn
        # Besides a pool: the caller's connection (psycopg, or under a SQLAlchemy
        # AsyncConnection), used under a lock, never retried, committed or closed by
        # eskit; or a SQLAlchemy AsyncEngine's pool (see from_sqlalchemy).
        self._conn = connection
        self._sa_connection = _sa_connection
        self._conn_lock = asyncio.Lock()
        self._engine = _engine
        if dsn is not None:
            pool = self._new_pool(dsn)
        self.pool: AsyncConnectionPool[Any] | None = pool
        self._connected = False

    def _new_pool(self, dsn: str) -> AsyncConnectionPool[Any]:
        # open=False: an async pool must be opened with await, in the loop it serves.
        # No per-checkout ``check`` (a round trip per operation): see _run().
        return AsyncConnectionPool(
            dsn, min_size=1, max_size=self._pool_size, open=False,
            kwargs={"autocommit": True}, name=f"eskit-{self.schema}",
        )

    @classmethod
    async def open(
        cls,
        dsn: str | None = None,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        connection: psycopg.AsyncConnection[Any] | None = None,
        schema: str = "eskit",
        setup: bool = True,
        pool_size: int = 10,
        notify: bool = True,
        registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
    ) -> Self:
        """Create the store, connect and (with ``setup=True``) create or upgrade its schema."""
        store = cls(
            dsn, pool=pool, connection=connection, schema=schema, pool_size=pool_size,
            notify=notify, registry=registry, max_event_bytes=max_event_bytes,
            compress_threshold=compress_threshold,
        )
        await store.connect(setup=setup)
        return store

    async def connect(self, *, setup: bool = True) -> None:
        """Open the pool eskit owns and run :meth:`setup`. Does nothing the second time."""
        if self._connected:
            return
        if self._owns_pool and self.pool is not None:
            try:
                await self.pool.open(wait=True, timeout=10)
            except Exception as exc:
                await self.pool.close()
                # The pool gives up with a PoolTimeout: the server is not reachable.
                raise StoreUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
        self._connected = True
        try:
            if setup:
                await self.setup()
            else:  # read with the horizon the schema as it is supports
                self.sql.use_schema_version(await self.schema_version())
        except BaseException:
            await self.close()
            raise

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def close(self) -> None:
        """Close the pool if eskit opened it (a pool passed in stays open)."""
        if self._pid != os.getpid():
            # A child closing a store it inherited: the pool and the task are the
            # parent's (closing the pool would end the parent's sessions).
            self._connected = False
            return
        task = self._notify_task
        if task is not None and not task.done():
            await task  # send the last NOTIFY before the pool goes
        self._connected = False
        if self._owns_pool and self.pool is not None:
            await self.pool.close()

    @classmethod
    async def from_sqlalchemy(cls, bind: Any, **kwargs: Any) -> Self:
        """An open store on a SQLAlchemy ``AsyncEngine`` or ``AsyncConnection`` (psycopg).

        As the sync :meth:`PostgresEventStore.from_sqlalchemy`: with an engine, a
        connection is borrowed from its pool for each operation; with a connection
        (``await session.connection()``), every operation joins its transaction,
        which eskit never commits. ``setup`` and the constructor's other keyword
        arguments are accepted.
        """
        from eskit.stores import sqlalchemy as glue

        setup = kwargs.pop("setup", True)
        if glue.is_async_engine(bind):
            glue.check_engine(bind)
            store = cls(_engine=bind, **kwargs)
        else:
            await glue.async_driver_connection(bind)  # checks it, begins its transaction
            store = cls(_sa_connection=bind, **kwargs)
        await store.connect(setup=setup)
        return store

    async def _current_pool(self) -> AsyncConnectionPool[Any]:
        if self._pid != os.getpid():
            self._after_fork()
        if self._reopening is not None:
            await asyncio.shield(self._reopening)
        if self.pool is None:
            raise StoreError("this store has no connection pool (it was given a connection)")
        return self.pool

    def _after_fork(self) -> None:
        # Why: as in the sync store, a child never sends on (or closes) the sockets
        # it inherited; it abandons the parent's pool (psycopg leaves connections
        # opened by another process alone when they are garbage-collected) and
        # opens its own in the child's running loop. No await before the swap:
        # other tasks then wait for the same opening.
        if not self._owns_pool:
            raise StoreError(
                f"this AsyncPostgresEventStore was given a pool or connection in process "
                f"{self._pid} and "
                f"is used after fork() in process {os.getpid()}: a pool's connections "
                "cannot be shared with a child; create the pool (and the store) in the child"
            )
        assert self._dsn is not None  # an owned pool was made from the dsn
        self._pid = os.getpid()
        self._notify_task = None  # it belonged to the parent's loop
        self._notify_pending = False
        self.pool = self._new_pool(self._dsn)
        self._reopening = asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            assert self.pool is not None  # just made by _after_fork
            await self.pool.open(wait=True, timeout=10)
        except Exception as exc:
            raise StoreUnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
        finally:
            self._reopening = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        from eskit.stores import sqlalchemy as glue

        if self._pid != os.getpid() and not self._owns_pool:
            self._after_fork()  # raises: the connection or pool is the parent's
        try:
            if self._conn is not None or self._sa_connection is not None:
                async with self._conn_lock:
                    conn = self._conn
                    if self._sa_connection is not None:
                        conn = await glue.async_driver_connection(self._sa_connection)
                    check_caller_connection(
                        conn, psycopg.AsyncConnection, need_transaction=False
                    )
                    assert conn is not None
                    yield conn
            elif self._engine is not None:
                async with glue.async_engine_connection(self._engine) as conn:
                    yield conn
            else:
                pool = await self._current_pool()
                async with pool.connection() as conn:
                    yield conn
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _given_connection(self) -> bool:
        return self._conn is not None or self._sa_connection is not None

    @staticmethod
    def _joins_transaction(conn: psycopg.AsyncConnection[Any]) -> bool:
        """Whether operations on the caller's ``conn`` join its (open or implicit) transaction."""
        return not (conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE)

    async def _run(self, action: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``action`` on a pooled connection, retried on a fresh one if the connection breaks.

        Only for actions that are safe to repeat: reads, and the single-statement
        append (idempotent on event ids; see eskit.stores.postgres_connection).
        """
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            try:
                async with self._connection() as conn:
                    return await action(conn)
            except StoreUnavailableError as exc:
                if (attempt == RECONNECT_ATTEMPTS or not connection_lost(exc.__cause__)
                        or self._given_connection()):  # the caller's: not ours to replace
                    raise
                _log.warning("eskit: PostgreSQL connection lost, retrying (%d): %s",
                             attempt, exc)
                if self.pool is not None:
                    with suppress(Exception):
                        # Test every idle connection and replace the broken ones.
                        await self.pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    async def setup(self) -> None:
        """Create or upgrade eskit's tables in the schema. Idempotent."""
        async with self._connection() as conn:
            if self._given_connection() and self._joins_transaction(conn):
                await self._setup_on(conn)  # in the caller's transaction, committed by it
            else:
                async with conn.transaction():
                    await self._setup_on(conn)
        self.sql.use_schema_version(SCHEMA_VERSION)

    async def _setup_on(self, conn: psycopg.AsyncConnection[Any]) -> None:
        check_server_version(conn.info.server_version)
        # Serialise concurrent setups of the same schema (several processes starting).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.sql.lock_key,))
        await conn.execute(self.sql.create_schema)
        await conn.execute(self.sql.create_meta)
        row = await (await conn.execute(self.sql.read_schema_version)).fetchone()
        current = int(row[0]) if row else 0
        for statement in pending_migrations(self.sql, current):
            await conn.execute(statement)
        if current != SCHEMA_VERSION:
            await conn.execute(self.sql.write_schema_version, (str(SCHEMA_VERSION),))

    async def schema_version(self) -> int:
        """The eskit schema version in the database; ``0`` if eskit's tables are absent."""
        async with self._connection() as conn:
            row = await (await conn.execute(self.sql.meta_exists)).fetchone()
            if not row or row[0] is None:
                return 0
            row = await (await conn.execute(self.sql.read_schema_version)).fetchone()
        return int(row[0]) if row else 0

    # -- writing ------------------------------------------------------------------------

    async def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        if self._given_connection():
            async with self._connection() as conn:
                if self._joins_transaction(conn):
                    return await append_on(self, conn, stream_id, stream, expected, batch)
        if self.sql.version < DCB_SCHEMA_VERSION and any(p.tags for p in batch):
            postgres_dcb.needs_tags(self)
        params = append_params(
            stream, expected, batch, self.sql.payload_threshold(self.compress_threshold)
        )

        async def insert(
            conn: psycopg.AsyncConnection[Any], locked: bool
        ) -> tuple[list[Any], str | None]:
            try:
                if not locked:
                    return await (await conn.execute(self.sql.append, params)).fetchall(), None
                # Lost a race for the next version: go again holding the stream's
                # lock, as the sync store does.
                async with conn.transaction():
                    await conn.execute(self.sql.lock_stream, {"stream": stream})
                    return await (await conn.execute(self.sql.append, params)).fetchall(), None
            except pg_errors.UniqueViolation as exc:
                # Caught inside the block: the connection goes back to the pool
                # clean (autocommit, the failed statement rolled back on its own).
                return [], exc.diag.constraint_name

        for attempt in range(MAX_APPEND_ATTEMPTS):
            # Safe to retry on a dropped connection: same event ids, so an attempt
            # that committed before the drop is found by resolve_conflict below.
            try:
                rows, clash = await self._run(partial(insert, locked=attempt > 0))
            except StoreError as exc:
                if getattr(exc.__cause__, "sqlstate", None) == STREAM_DELETED:  # the trigger
                    await self._refuse_if_deleted(stream_id, stream)
                if getattr(exc.__cause__, "sqlstate", None) == STREAM_ARCHIVED:
                    await self._refuse_if_archived(stream_id, stream)
                raise
            if clash is None:
                result = inserted_result(stream_id, batch, rows)
                if result is not None:
                    self._signal_listeners()
                    return result
                # The expectation did not hold: nothing was inserted.
                await self._refuse_if_deleted(stream_id, stream)
                await self._refuse_if_archived(stream_id, stream)
                return resolve_conflict(
                    stream_id, stream, expected, rows[0][0], batch, await self._find(batch)
                )
            # An event id is stored already, or another writer took the next version.
            head = await self._head(stream)
            found = await self._find(batch)
            if clash == EVENT_ID_CONSTRAINT or not retry_after_lost_race(expected, found):
                return resolve_conflict(stream_id, stream, expected, head, batch, found)
            await asyncio.sleep(0)
        raise too_busy(stream)

    # -- DCB (eskit.aio.postgres_dcb) --------------------------------------------------

    async def _append_if(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition,
    ) -> AppendResult:
        return await postgres_dcb.append_if(self, stream_id, stream, expected, batch, condition)

    async def _read_events(
        self, query: Query, after: int, limit: int | None
    ) -> tuple[list[Event], int]:
        return await postgres_dcb.read_events(self, query, after, limit)

    async def _append_many(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        # As the sync store (eskit.stores.postgres_multi): a savepoint in the caller's
        # transaction, else a transaction of its own, retried whole on a dropped
        # connection (idempotent on event ids) or a unique violation.
        plan = condition_plan(self.schema, self.sql.version, prepared, condition)
        if self._given_connection():
            async with self._connection() as conn:
                if self._joins_transaction(conn):
                    if plan is not None:
                        raise conditional_in_transaction()
                    return await append_many_in_savepoint_async(self, conn, prepared)

        async def attempt(conn: psycopg.AsyncConnection[Any]) -> list[AppendResult]:
            async with conn.transaction():
                return await append_many_on_async(self, conn, prepared, plan)

        for _ in range(MAX_MANY_ATTEMPTS):
            try:
                results = await self._run(attempt)
            except StoreError as exc:
                if not retry_whole_call(exc):
                    raise
                continue
            if not results[0].duplicate:
                self._signal_listeners()
            return results
        raise StoreBusyError(
            f"append_many failed {MAX_MANY_ATTEMPTS} times in a row on unique violations "
            "or deadlocks; nothing was written"
        )

    # -- deleting (eskit.stores.postgres_deletion; as the sync store) --------------------

    async def _refuse_if_deleted(self, stream_id: StreamId, stream: str) -> None:
        if self.sql.version < 6:
            return

        async def state(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(self.sql.deletion.state, (stream,))).fetchone()

        row = await self._run(state)
        if row is not None:
            raise deleted_error(stream_id, bool(row[0]))

    async def _delete_stream(self, stream_id: StreamId, stream: str, expected: Expected,
                             hard: bool) -> int:
        statements = self.sql.deletion
        async with self._connection() as conn:
            self._deletes_here(conn)
            async with conn.transaction():
                await conn.execute(statements.start)
                # Exclusive: appends of the stream (shared) wait, and none is in flight.
                await conn.execute(self.sql.lock_stream, {"stream": stream})
                await self._refuse_if_archived(stream_id, stream, conn)
                head = await (await conn.execute(statements.head, (stream,))).fetchone()
                version, tx, seq = head if head is not None else (0, "0", 0)
                state = await (await conn.execute(statements.state, (stream,))).fetchone()
                if state is not None and int(state[1]) > int(version):  # a hard delete's head
                    version, tx, seq = state[1], state[2], state[3]
                if must_write_delete(stream_id, expected, int(version),
                                     None if state is None else bool(state[0]), hard):
                    await conn.execute(statements.write, (stream, hard, version, tx, seq))
                    removed = 0
                    if hard:
                        cur = await conn.execute(statements.remove_events, (stream,))
                        removed = cur.rowcount
                        # Snapshots hold the same data: a hard delete takes them too.
                        await conn.execute(statements.remove_snapshots, (stream,))
                    _log.info("schema %s: %s-deleted stream %r at version %d (%d events "
                              "removed)", self.schema, "hard" if hard else "soft", stream,
                              version, removed)
        self._signal_listeners()
        return int(version)

    async def _truncate_stream(self, stream_id: StreamId, stream: str, before: int,
                               expected: Expected, force: bool) -> int:
        statements = self.sql.truncation
        async with self._connection() as conn:
            self._deletes_here(conn, TRUNCATION_SCHEMA)
            async with conn.transaction():
                await conn.execute(self.sql.deletion.start)
                # Exclusive: appends of the stream (shared) wait, and none is in flight.
                await conn.execute(self.sql.lock_stream, {"stream": stream})
                await self._refuse_if_archived(stream_id, stream, conn)
                row = await (await conn.execute(statements.state, {"s": stream})).fetchone()
                assert row is not None  # one row of scalar subqueries, always
                head, hard, first, snapshot = row
                cut = truncation_cut(stream_id, expected, int(head), hard,
                                     1 if first is None else int(first), before, snapshot,
                                     force)
                if cut is None:
                    return 0
                await conn.execute(statements.write_for(self.sql.version), (stream, cut))
                cur = await conn.execute(statements.remove_events, (stream, cut))
                removed = int(cur.rowcount)
                # Their events are gone: a snapshot below the cut can never be used again.
                await conn.execute(statements.remove_snapshots, (stream, cut))
                _log.info("schema %s: truncated stream %r before version %d (%d events "
                          "removed)", self.schema, stream, cut, removed)
        self._signal_listeners()
        return removed

    async def _restore_stream(self, stream_id: StreamId, stream: str) -> bool:
        statements = self.sql.deletion
        async with self._connection() as conn:
            self._deletes_here(conn)
            async with conn.transaction():
                state = await (await conn.execute(statements.state, (stream,))).fetchone()
                if state is not None and state[0]:
                    raise deleted_error(stream_id, True)
                if state is not None:
                    await conn.execute(statements.restore, (stream,))
                    _log.info("schema %s: restored soft-deleted stream %r", self.schema, stream)
        return state is not None

    def _deletes_here(self, conn: psycopg.AsyncConnection[Any], needs: int = 6) -> None:
        if self._given_connection() and self._joins_transaction(conn):
            raise InvalidInputError(
                "delete_stream and truncate_stream run their own transaction: give them a "
                "store with a pool or DSN"
            )
        if self.sql.version < needs:
            raise StoreError(
                f"schema {self.schema} has eskit schema version {self.sql.version}; this "
                f"needs {needs}: run `eskit migrate` first"
            )

    def in_transaction(self, connection: Any) -> AsyncPostgresTransaction:
        """Append inside the caller's open transaction on ``connection``.

        ``connection`` is a psycopg ``AsyncConnection`` or a SQLAlchemy
        ``AsyncConnection`` (``await session.connection()``). Use as
        ``async with store.in_transaction(conn) as tx: await tx.append(...)``;
        eskit never commits: the events commit or roll back with the caller's
        other writes. See :class:`~eskit.aio.postgres_transaction.AsyncPostgresTransaction`.
        """
        return AsyncPostgresTransaction(self, connection)

    @property
    def _reads_ahead(self) -> bool:
        return self.pool is not None  # a given connection serves one thing at a time

    async def _new_waiter(self) -> AsyncWaiter:
        if self.pool is None:
            # No conninfo to LISTEN with (a connection or an engine was given): poll.
            return await super()._new_waiter()
        # Subscriptions LISTEN on a connection of their own (eskit.aio.postgres_listen).
        return await AsyncListenWaiter.open(self)

    def _signal_listeners(self) -> None:
        """Have the NOTIFY for this append sent soon, off the append's path.

        As in the sync store: one task sends one NOTIFY for everything appended in
        the last few milliseconds, in a transaction of its own that writes nothing,
        so appends pay no round trip for waking subscribers.
        """
        if not self._notify:
            return
        if self._given_connection() and self._conn is not None and self._joins_transaction(
            self._conn
        ):
            return  # the append sent its NOTIFY inside the caller's transaction
        self._notify_pending = True
        if self._notify_task is None or self._notify_task.done():
            self._notify_task = asyncio.get_running_loop().create_task(self._send_notifies())

    async def _send_notifies(self) -> None:
        while self._notify_pending:
            self._notify_pending = False
            try:
                async with self._connection() as conn:
                    await conn.execute(self.sql.notify, (self.sql.channel,))
            except StoreError as exc:
                _log.warning("eskit: NOTIFY failed, subscribers will poll: %s", exc)
            await asyncio.sleep(NOTIFY_INTERVAL)

    async def _fetchall(self, query: Any, params: Any = None) -> list[Any]:
        async def fetch(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            return await (await conn.execute(query, params)).fetchall()

        return await self._run(fetch)

    async def _fetchone(self, query: Any, params: Any = None) -> Any:
        async def fetch(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(query, params)).fetchone()

        return await self._run(fetch)

    async def _find(self, batch: list[PendingEvent]) -> dict[UUID, Event]:
        rows = await self._fetchall(self.sql.find_events, ([p.event_id for p in batch],))
        return {e.event_id: e for e in decode_rows(rows)}

    async def _head(self, stream: str) -> int:
        row = await self._fetchone(self.sql.head_version, (stream,))
        return int(row[0]) if row else 0

    # -- reading ------------------------------------------------------------------------

    async def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        tagged = self.sql.version >= DCB_SCHEMA_VERSION  # then rows end with their tags
        query, params = self.sql.read_stream(stream, from_version, to_version, backwards, limit,
                                             tagged=tagged)
        rows = await self._fetchall(query, params)
        if not rows:  # an archived stream has no rows: never pass for an empty history
            await self._refuse_if_archived(stream_id, stream)
        if tagged:
            return decoded_tagged_rows(rows, stream_id)
        return decoded((rows, []), stream_id)

    async def _refuse_if_archived(self, stream_id: StreamId, stream: str,
                                  conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Raise StreamArchivedError if ``stream`` is archived (schema 10 on)."""
        if self.sql.version < ARCHIVE_SCHEMA:
            return
        if conn is not None:
            row = await (await conn.execute(self.sql.archive.where, (stream,))).fetchone()
        else:
            row = await self._fetchone(self.sql.archive.where, (stream,))
        if row is not None:
            raise archived_error(stream_id, str(row[0]), str(row[1]))

    async def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # Only rows below the read horizon, computed in the same statement: see
        # "The global order" in eskit.stores.postgres_schema.
        tx, seq = unpack_position(after)
        return decoded(await self._rows_and_tags(self.sql.read_all_page, (tx, seq, limit)))

    async def _read_filtered_page(
        self, after: int, upto: int, limit: int, wanted: ReadFilter
    ) -> list[Event]:
        # Bounded by a head read first, not cut at the horizon: eskit.stores.postgres_filtered.
        query, params = self.sql.filtered_page(wanted, after, upto, limit)
        return decoded(await self._rows_and_tags(query, params, types=wanted.types))

    async def _rows_and_tags(
        self, query: Any, params: Any, *, stream: str | None = None,
        types: Collection[str] | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """The event rows of ``query`` and, on the same connection, their tags' rows
        (see ``eskit.stores.postgres_dcb.page_tags``; none before the schema has tags)."""
        tagged = self.sql.version >= DCB_SCHEMA_VERSION

        async def read(conn: psycopg.AsyncConnection[Any]) -> tuple[list[Any], list[Any]]:
            rows = await (await conn.execute(query, params)).fetchall()
            if not rows or not tagged:
                return rows, []
            found = await conn.execute(*page_tags(self.schema, rows, stream=stream, types=types))
            return rows, await found.fetchall()

        return await self._run(read)

    async def _head_version(self, stream: str) -> int:
        return await self._head(stream)

    async def _version_at(self, stream: str, as_of: datetime) -> int:
        row = await self._fetchone(self.sql.version_at, (stream, as_of))
        return int(row[0]) if row else 0

    async def _head_position(self) -> int:
        row = await self._fetchone(self.sql.head_position)
        return pack_position(row[0], row[1]) if row else 0

    async def _list_streams(self) -> list[StreamInfo]:
        return stream_infos(await self._fetchall(self.sql.list_streams))

    async def _locate_event(self, event_id: UUID) -> tuple[StreamId, int] | None:
        row = await self._fetchone(self.sql.locate_event, (event_id,))
        return None if row is None else (stream_id_from_key(row[0]), int(row[1]))

    async def _list_streams_page(
        self, prefix: str, after: str | None, limit: int
    ) -> list[StreamInfo]:
        params = streams_page_params(prefix, after, limit)
        return stream_infos(await self._fetchall(self.sql.streams_page, params))

    # -- monitoring ---------------------------------------------------------------------

    async def oldest_transaction_age(self) -> float:
        """Seconds the oldest open transaction that appends to this store has run.

        Same as :meth:`eskit.PostgresEventStore.oldest_transaction_age`: only such
        a transaction holds readers back; ``0`` when there is none.

        The role needs ``pg_read_all_stats`` (or ``pg_monitor``) to time other
        roles' transactions; without it this raises :class:`~eskit.StoreError`
        whenever such a transaction is open, rather than report 0.
        """
        return transaction_age(await self._fetchone(self.sql.oldest_transaction_age))
