"""Appending inside a transaction the caller owns, on PostgreSQL (asyncio front end).

The async twin of :mod:`eskit.stores.postgres_transaction`, with the same
statements, the same savepoint around each append and the same decisions
(:func:`~eskit.stores.arguments.resolve_conflict`); see that module and
docs/transactions.md for what is and is not guaranteed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eskit.dcb import AppendCondition, check_condition
from eskit.errors import AppendConditionFailed, InvalidInputError

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by postgres.py
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.events import Event, StreamId
from eskit.observability import _hooks
from eskit.stores import postgres_tx_conditions as tx_conditions
from eskit.stores.arguments import check_expected, prepare_batch, resolve_conflict, stream_key
from eskit.stores.model import (
    ANY,
    AppendInput,
    AppendResult,
    Expected,
    PendingEvent,
    StreamAppend,
)
from eskit.stores.multi import prepare_appends
from eskit.stores.postgres_connection import translate
from eskit.stores.postgres_multi import append_many_in_savepoint_async
from eskit.stores.postgres_schema import (
    EVENT_ID_CONSTRAINT,
    MAX_APPEND_ATTEMPTS,
    append_params,
    inserted_result,
    retry_after_lost_race,
    too_busy,
)
from eskit.stores.postgres_transaction import (
    SAVEPOINT,
    AppendingStore,
    check_caller_connection,
)
from eskit.stores.rows import decode_rows
from eskit.stores.sqlalchemy import is_sqlalchemy

__all__ = ["AsyncPostgresTransaction"]


async def _in_savepoint(conn: psycopg.AsyncConnection[Any], statements: Sequence[Any],
                        params: dict[str, Any]) -> list[Any] | None:
    # As the sync _in_savepoint: a failure or an unmet expectation leaves nothing.
    await conn.execute(f"SAVEPOINT {SAVEPOINT}")
    try:
        rows: list[Any] = []
        for statement in statements:
            rows = await (await conn.execute(statement, params)).fetchall()
    except psycopg.Error:
        if conn.info.transaction_status == TransactionStatus.INERROR:
            await conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        raise
    if rows[0][1] is None:
        await conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        return None
    await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
    return rows


class AsyncPostgresTransaction:
    """Appends to an :class:`~eskit.aio.AsyncPostgresEventStore` inside the caller's transaction.

    Made by :meth:`AsyncPostgresEventStore.in_transaction` from a psycopg
    ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection``
    (``await session.connection()`` for an ``AsyncSession``). Same guarantees as
    :class:`~eskit.stores.postgres_transaction.PostgresTransaction`: the events
    commit or roll back with the caller's transaction, a failed append is rolled
    back to its savepoint, eskit never commits.
    """

    def __init__(self, store: AppendingStore, connection: Any) -> None:
        if not is_sqlalchemy(connection):
            check_caller_connection(connection, psycopg.AsyncConnection, need_transaction=False)
        self.store = store
        self.connection = connection

    async def _driver(self) -> psycopg.AsyncConnection[Any]:
        conn = self.connection
        if not is_sqlalchemy(conn):
            return conn  # type: ignore[no-any-return]
        from sqlalchemy.ext.asyncio import AsyncConnection

        if not isinstance(conn, AsyncConnection):
            raise InvalidInputError(
                f"expected a SQLAlchemy AsyncConnection, got {type(conn).__name__}"
            )
        if not conn.in_transaction():
            await conn.begin()  # so that conn.commit() sends COMMIT (eskit.stores.sqlalchemy)
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if not isinstance(driver, psycopg.AsyncConnection):
            raise InvalidInputError("eskit needs SQLAlchemy's psycopg driver (postgresql+psycopg)")
        return driver

    async def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append ``events`` in the caller's transaction; else as the store's append.

        ``condition``: as :meth:`PostgresTransaction.append
        <eskit.stores.postgres_transaction.PostgresTransaction.append>` (the first
        write of the transaction, under READ COMMITTED; checked atomically with it).
        """
        store = self.store
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        batch = prepare_batch(
            stream, events, registry=store.registry, max_event_bytes=store.max_event_bytes
        )
        conn = await self._driver()
        check_caller_connection(conn, psycopg.AsyncConnection, need_transaction=True)
        if (observer := _hooks.active) is None:
            return await _append(store, conn, stream_id, stream, expected, batch, condition)
        with observer.append(store, stream, batch):  # a span; its context into metadata
            return await _append(store, conn, stream_id, stream, expected, batch, condition)

    async def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Several streams in the caller's transaction, all or none; else as the store's."""
        store = self.store
        prepared = prepare_appends(
            appends, registry=store.registry, max_event_bytes=store.max_event_bytes
        )
        conn = await self._driver()
        check_caller_connection(conn, psycopg.AsyncConnection, need_transaction=True)
        return await append_many_in_savepoint_async(store, conn, prepared)

    async def __aenter__(self) -> AsyncPostgresTransaction:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None  # the caller commits or rolls back its own transaction


async def append_on(
    store: AppendingStore, conn: psycopg.AsyncConnection[Any], stream_id: StreamId, stream: str,
    expected: Expected, batch: list[PendingEvent],
) -> AppendResult:
    """eskit's append, on ``conn`` in its current transaction, in a savepoint."""
    params = append_params(
        stream, expected, batch, store.sql.payload_threshold(store.compress_threshold)
    )
    sql = store.sql
    try:
        for attempt in range(MAX_APPEND_ATTEMPTS):
            statements = [sql.append] if attempt == 0 else [sql.lock_stream, sql.append]
            try:
                rows = await _in_savepoint(conn, statements, params)
            except pg_errors.UniqueViolation as exc:
                found = await _find(store, conn, batch)
                if exc.diag.constraint_name != EVENT_ID_CONSTRAINT and (
                    retry_after_lost_race(expected, found)
                ):
                    continue
                return resolve_conflict(
                    stream_id, stream, expected, await _head(store, conn, stream), batch,
                    found,
                )
            if rows is None:
                return resolve_conflict(
                    stream_id, stream, expected, await _head(store, conn, stream), batch,
                    await _find(store, conn, batch),
                )
            result = inserted_result(stream_id, batch, rows)
            assert result is not None
            if store._notify:
                await conn.execute(sql.notify, (sql.channel,))  # delivered at commit
            return result
    except psycopg.Error as exc:
        raise translate(exc) from exc
    raise too_busy(stream)


async def _append(
    store: AppendingStore, conn: psycopg.AsyncConnection[Any], stream_id: StreamId, stream: str,
    expected: Expected, batch: list[PendingEvent], condition: AppendCondition | None,
) -> AppendResult:
    if condition is None:
        return await append_on(store, conn, stream_id, stream, expected, batch)
    return await append_if_on(store, conn, stream_id, stream, expected, batch, condition)


async def append_if_on(
    store: AppendingStore, conn: psycopg.AsyncConnection[Any], stream_id: StreamId, stream: str,
    expected: Expected, batch: list[PendingEvent], condition: AppendCondition,
) -> AppendResult:
    """The sync ``append_if_on``, awaited (see :mod:`eskit.stores.postgres_tx_conditions`)."""
    lock, statement, params = tx_conditions.plan(store, stream, expected, batch, condition)
    try:
        first = await (await conn.execute(tx_conditions.FIRST_WRITE)).fetchone()
        tx_conditions.refuse_unless_first_write(first, stream_id)
        await conn.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            await conn.execute(lock, params)
            blocked, rows = tx_conditions.outcome(
                await (await conn.execute(statement, params)).fetchall()
            )
        except BaseException:
            if not conn.closed and conn.info.transaction_status == TransactionStatus.INERROR:
                await _undo(conn)
            raise
        result = None if blocked else inserted_result(stream_id, batch, rows)
        if result is None:
            await _undo(conn)
        else:
            await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
    except pg_errors.UniqueViolation:
        return resolve_conflict(
            stream_id, stream, expected, await _head(store, conn, stream), batch,
            await _find(store, conn, batch),
        )
    except psycopg.Error as exc:
        raise translate(exc) from exc
    if result is not None:
        if store._notify:
            await conn.execute(store.sql.notify, (store.sql.channel,))  # delivered at commit
        return result
    found = await _find(store, conn, batch)
    if blocked and not found:
        raise AppendConditionFailed(stream_id, condition)
    return resolve_conflict(
        stream_id, stream, expected, await _head(store, conn, stream), batch, found
    )


async def _undo(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
    await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")


async def _find(store: AppendingStore, conn: psycopg.AsyncConnection[Any],
                batch: list[PendingEvent]) -> dict[Any, Event]:
    cur = await conn.execute(store.sql.find_events, ([p.event_id for p in batch],))
    return {e.event_id: e for e in decode_rows(await cur.fetchall())}


async def _head(store: AppendingStore, conn: psycopg.AsyncConnection[Any],
                stream: str) -> int:
    row = await (await conn.execute(store.sql.head_version, (stream,))).fetchone()
    return int(row[0]) if row else 0
