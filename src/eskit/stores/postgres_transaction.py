"""Appending inside a transaction the caller owns, on PostgreSQL (sync front end).

``store.in_transaction(conn)`` gives a :class:`PostgresTransaction`: its
:meth:`~PostgresTransaction.append` runs eskit's append statement on the caller's
psycopg connection, inside the caller's open transaction, so the application's
own writes and its events commit or roll back together. eskit never commits,
rolls back (beyond its own savepoint) or closes that connection.

Why this is safe for readers (schema 4; the proof is in docs/postgres.md,
"Appending in your transaction"): a transaction that wrote elsewhere before its
first append already holds a transaction id; the trigger then stamps its events
with an order key above every snapshot taken before it locked the events table,
so no reader can have moved past them. Under REPEATABLE READ or SERIALIZABLE
such a *late* append is refused (:class:`~eskit.AppendNotFirstWriteError`):
the trigger cannot take the fresh snapshot the stamp needs.

Each append runs in a ``SAVEPOINT``: a conflict, a duplicate or a refusal rolls
back the append alone and leaves the caller's transaction usable (retry, carry
on, or roll back). Nothing is retried on a dropped connection: the caller's
transaction is gone with it, and its outcome is the caller's to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from eskit.dcb import AppendCondition, check_condition
from eskit.errors import AppendConditionFailed, InvalidInputError, StoreUnavailableError

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by postgres.py
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.events import Event, EventRegistry, StreamId
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
from eskit.stores.postgres_multi import MultiStatements, append_many_in_savepoint
from eskit.stores.postgres_schema import (
    EVENT_ID_CONSTRAINT,
    MAX_APPEND_ATTEMPTS,
    Statements,
    append_params,
    inserted_result,
    retry_after_lost_race,
    too_busy,
)
from eskit.stores.rows import decode_rows


class AppendingStore(Protocol):
    """What an append needs of the store (a protocol: the store module imports this one)."""

    sql: Statements
    sql_multi: MultiStatements
    registry: EventRegistry
    max_event_bytes: int
    compress_threshold: int | None
    _notify: bool

__all__ = ["AppendingStore", "PostgresTransaction", "check_caller_connection"]

SAVEPOINT = "eskit_append"


def check_caller_connection(conn: object, cls: type, *, need_transaction: bool) -> None:
    """Refuse, before any I/O, a connection eskit cannot append on without committing.

    ``cls`` is ``psycopg.Connection`` or ``psycopg.AsyncConnection``. A connection
    in autocommit mode with no open transaction has no transaction to join
    (``need_transaction``); one whose transaction failed must be rolled back first.
    """
    if not isinstance(conn, cls):
        raise InvalidInputError(
            f"expected a {cls.__module__}.{cls.__qualname__}, got {type(conn).__name__}"
        )
    assert isinstance(conn, psycopg.Connection | psycopg.AsyncConnection)
    if conn.closed:
        raise InvalidInputError("the connection is closed")
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise InvalidInputError(
            "the connection's transaction has failed: roll it back before appending"
        )
    if status == TransactionStatus.UNKNOWN:
        raise StoreUnavailableError("the connection is broken")
    if need_transaction and status == TransactionStatus.IDLE and conn.autocommit:
        raise InvalidInputError(
            "the connection is in autocommit mode with no open transaction: open one "
            "(with conn.transaction(): ...) so that eskit has a transaction to join"
        )


def _in_savepoint(conn: psycopg.Connection[Any], statements: Sequence[Any],
                  params: dict[str, Any]) -> list[Any] | None:
    """Run ``statements`` in a savepoint; the last one's rows, or ``None`` if it inserted none.

    A failed statement is rolled back to the savepoint (the caller's transaction
    stays usable) and re-raised; an append whose expectation did not hold is rolled
    back too, so that it leaves nothing behind (no table lock, no stamp).
    """
    # In a non-autocommit connection with no transaction yet, psycopg sends BEGIN first.
    conn.execute(f"SAVEPOINT {SAVEPOINT}")
    try:
        rows: list[Any] = []
        for statement in statements:
            rows = conn.execute(statement, params).fetchall()
    except BaseException:  # an error, or an interrupt that cancelled the statement
        if not conn.closed and conn.info.transaction_status == TransactionStatus.INERROR:
            conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        raise
    if rows[0][1] is None:
        conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        return None
    conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
    return rows


def append_on(
    store: AppendingStore, conn: psycopg.Connection[Any], stream_id: StreamId,
    stream: str, expected: Expected, batch: list[PendingEvent],
) -> AppendResult:
    """eskit's append, on ``conn`` in its current transaction, in a savepoint."""
    params = append_params(
        stream, expected, batch, store.sql.payload_threshold(store.compress_threshold)
    )
    sql = store.sql
    try:
        for attempt in range(MAX_APPEND_ATTEMPTS):
            # After a lost race (ANY, STREAM_EXISTS): the stream's lock first, in a
            # statement of its own (see Statements.lock_stream). Note it is held
            # until the caller's transaction ends.
            statements = [sql.append] if attempt == 0 else [sql.lock_stream, sql.append]
            try:
                rows = _in_savepoint(conn, statements, params)
            except pg_errors.UniqueViolation as exc:
                found = _find(store, conn, batch)
                if exc.diag.constraint_name != EVENT_ID_CONSTRAINT and retry_after_lost_race(
                    expected, found
                ):
                    continue
                return resolve_conflict(
                    stream_id, stream, expected, _head(store, conn, stream), batch, found
                )
            if rows is None:
                return resolve_conflict(
                    stream_id, stream, expected, _head(store, conn, stream), batch,
                    _find(store, conn, batch),
                )
            result = inserted_result(stream_id, batch, rows)
            assert result is not None
            if store._notify:
                # Transactional: delivered when (and only if) the caller commits.
                conn.execute(sql.notify, (sql.channel,))
            return result
    except psycopg.Error as exc:
        raise translate(exc) from exc
    raise too_busy(stream)


def append_if_on(
    store: AppendingStore, conn: psycopg.Connection[Any], stream_id: StreamId,
    stream: str, expected: Expected, batch: list[PendingEvent], condition: AppendCondition,
) -> AppendResult:
    """A conditional append on ``conn``, in a savepoint (see
    :mod:`eskit.stores.postgres_tx_conditions` for why it must be the first write)."""
    lock, statement, params = tx_conditions.plan(store, stream, expected, batch, condition)
    try:
        tx_conditions.refuse_unless_first_write(
            conn.execute(tx_conditions.FIRST_WRITE).fetchone(), stream_id
        )
        conn.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            conn.execute(lock, params)
            blocked, rows = tx_conditions.outcome(conn.execute(statement, params).fetchall())
        except BaseException:
            if not conn.closed and conn.info.transaction_status == TransactionStatus.INERROR:
                _undo(conn)
            raise
        result = None if blocked else inserted_result(stream_id, batch, rows)
        if result is None:
            _undo(conn)  # nothing inserted: no locks left behind either
        else:
            conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
    except pg_errors.UniqueViolation:  # an event id stored already: a retry, or a reuse
        return resolve_conflict(
            stream_id, stream, expected, _head(store, conn, stream), batch,
            _find(store, conn, batch),
        )
    except psycopg.Error as exc:
        raise translate(exc) from exc
    if result is not None:
        if store._notify:
            conn.execute(store.sql.notify, (store.sql.channel,))  # delivered at commit
        return result
    found = _find(store, conn, batch)
    if blocked and not found:
        raise AppendConditionFailed(stream_id, condition)
    # A retry of this append (its own events match), or the stream was not at expected.
    return resolve_conflict(stream_id, stream, expected, _head(store, conn, stream), batch, found)


def _undo(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
    conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")


def _find(store: AppendingStore, conn: psycopg.Connection[Any],
          batch: list[PendingEvent]) -> dict[Any, Event]:
    rows = conn.execute(store.sql.find_events, ([p.event_id for p in batch],)).fetchall()
    return {e.event_id: e for e in decode_rows(rows)}


def _head(store: AppendingStore, conn: psycopg.Connection[Any], stream: str) -> int:
    row = conn.execute(store.sql.head_version, (stream,)).fetchone()
    return int(row[0]) if row else 0


class PostgresTransaction:
    """Appends to a :class:`~eskit.PostgresEventStore` inside the caller's transaction.

    Made by :meth:`PostgresEventStore.in_transaction`. Guaranteed: the events
    become visible exactly when the caller's transaction commits, together with
    its other writes, and vanish if it rolls back; readers never skip them (see
    docs/postgres.md). A failed append (:class:`~eskit.ConcurrencyError`,
    :class:`~eskit.DuplicateEventError`, :class:`~eskit.AppendNotFirstWriteError`)
    is rolled back to its savepoint, so the transaction stays usable. Not
    guaranteed: anything after a dropped connection (the caller's transaction
    is lost; nothing is retried), and late appends under REPEATABLE READ or
    SERIALIZABLE (refused). Until the caller commits, readers of the store wait
    for this transaction: keep it short.
    """

    def __init__(self, store: AppendingStore, conn: psycopg.Connection[Any]) -> None:
        check_caller_connection(conn, psycopg.Connection, need_transaction=False)
        self.store = store
        self.connection = conn

    def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY,
        *, condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append ``events`` in the caller's transaction; as :meth:`EventStore.append` otherwise.

        The result's positions are final: they are what readers see once the
        transaction commits. Events keep their DCB tags. With ``condition`` (an
        :class:`~eskit.AppendCondition`) the append must be the transaction's first
        write, under READ COMMITTED (else :class:`~eskit.AppendNotFirstWriteError`);
        its check is atomic with the whole transaction: the query's locks are held
        until the caller commits, so appends that could match it wait until then.
        A failed check raises :class:`~eskit.AppendConditionFailed` and rolls back
        this append alone (roll back the transaction to drop the rest).
        """
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        check_condition(condition)
        batch = prepare_batch(
            stream, events, registry=self.store.registry,
            max_event_bytes=self.store.max_event_bytes,
        )
        check_caller_connection(self.connection, psycopg.Connection, need_transaction=True)
        if (observer := _hooks.active) is None:
            return self._append(stream_id, stream, expected, batch, condition)
        with observer.append(self.store, stream, batch):  # a span; its context into metadata
            return self._append(stream_id, stream, expected, batch, condition)

    def _append(self, stream_id: StreamId, stream: str, expected: Expected,
                batch: list[PendingEvent], condition: AppendCondition | None) -> AppendResult:
        if condition is None:
            return append_on(self.store, self.connection, stream_id, stream, expected, batch)
        return append_if_on(self.store, self.connection, stream_id, stream, expected, batch,
                            condition)

    def append_many(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Several streams in the caller's transaction, all or none; as
        :meth:`EventStore.append_many` otherwise. A refusal rolls back to its savepoint.
        The streams' locks are held until the caller's transaction ends.
        """
        store = self.store
        prepared = prepare_appends(
            appends, registry=store.registry, max_event_bytes=store.max_event_bytes
        )
        check_caller_connection(self.connection, psycopg.Connection, need_transaction=True)
        return append_many_in_savepoint(store, self.connection, prepared)

    def __enter__(self) -> PostgresTransaction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Nothing to do: the caller commits or rolls back its own transaction.
        return None



