"""``append_many`` on PostgreSQL: several streams in one transaction (sync and async).

How one call runs, in one READ COMMITTED transaction (or a savepoint of the
caller's):

1. Take the *exclusive* advisory lock of every stream of the call (the lock a
   single append takes shared, see ``Statements.lock_stream``), all in one
   statement, in the order of their lock keys. Every writer of several streams
   takes its locks in that one order, so two of them never wait for each other
   in a cycle; a single append holds one stream's lock only. From the DCB schema
   on, then the shared locks of all the call's event keys (see
   :mod:`eskit.stores.postgres_dcb`), sorted, so that the call and a conditional
   append never wait for each other's keys in a cycle either.
2. Read, in statements of their own (so their snapshots see every append that
   held a lock before), which streams are deleted, the heads of the streams and
   which of the call's event ids are stored; decide with
   :func:`~eskit.stores.multi.resolve_many` (a conflict naming every stream, a
   retry, or go).
3. Insert each stream's batch with the single append's statement, in the order
   of the call: one transaction id, increasing sequence numbers, so the events'
   positions increase in that order.

The global order needs nothing new: like a single append, the transaction takes
the events table's ``ROW EXCLUSIVE`` lock in its first insert, before it has a
transaction id (the locks and reads before assign none), so the read horizon
(:mod:`eskit.stores.postgres_schema`) holds readers back until it ends. Later
inserts of the same transaction pass the append trigger, which admits a
transaction whose own events are already stored; in a caller's transaction that
wrote elsewhere first, every insert gets the late stamp of the first one
(:mod:`eskit.stores.postgres_late`).

With a DCB condition, step 1 takes the condition's query keys *exclusive* along with
the call's event keys (one sorted lock statement, as a conditional single append
does after its stream lock), and a statement of its own after it looks for an
event matching the query after the condition's position: a later snapshot, which
sees every append that could match committed (the proof is the single append's,
in :mod:`eskit.stores.postgres_dcb`). The decision then comes after step 2's: a
stored retry is a duplicate and a moved stream a conflict before a failed
condition is reported.

With libpq 14 or newer the statements go out in pipeline mode (steps 1 and 2 in
one round trip, step 3 in another); they stay separate statements all the same.

The price of the exclusive locks: appends to the streams of a call wait while it
runs (a few round trips), and calls that share a stream run one after the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Any, Protocol

from eskit.errors import InvalidInputError, StoreError

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.dcb import AppendCondition, event_lock_keys, lock_plan, query_lock_keys
from eskit.events import Event
from eskit.stores.deletion import deleted_error
from eskit.stores.model import AppendResult
from eskit.stores.multi import PreparedAppend, all_event_ids, condition_failed, resolve_many
from eskit.stores.postgres_connection import translate
from eskit.stores.postgres_dcb import DCB_SCHEMA_VERSION, check_statement
from eskit.stores.postgres_deletion import visible_stream
from eskit.stores.postgres_schema import (
    Statements,
    append_params,
    inserted_result,
    unpack_position,
)
from eskit.stores.rows import decode_rows

__all__: list[str] = []

SAVEPOINT = "eskit_append_many"
PIPELINE = psycopg.Pipeline.is_supported()
"""Whether libpq has pipeline mode (14 or newer): without it, one round trip a statement."""
MAX_ATTEMPTS = 10
"""Whole-call attempts after a unique violation or a deadlock, which only a writer
outside eskit's locks (raw SQL, or an id reused in another stream meanwhile) causes."""


class MultiStatements:
    """The statements of ``append_many`` for one schema (the inserts are ``Statements.append``)."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        events = sql.SQL("{}.eskit_events").format(s)
        # The same key as Statements.lock_stream. DISTINCT: streams whose keys
        # collide share a lock, taken once. The locks are taken as the rows leave
        # the sorted subquery, so in the order of their keys.
        self.lock_streams = sql.SQL(
            """SELECT count(pg_advisory_xact_lock(k)) FROM (
                   SELECT DISTINCT hashtextextended({prefix} || s, 0) AS k
                   FROM unnest(%s::text[]) AS s
                   ORDER BY k
               ) AS keys"""
        ).format(prefix=sql.Literal(f"eskit-append:{schema}:"))
        # The stored heads, deleted streams included (they are refused before).
        self.heads = sql.SQL(
            "SELECT stream_id, max(version) FROM {} WHERE stream_id = ANY(%s::text[])"
            " GROUP BY stream_id"
        ).format(events)
        self.deleted = sql.SQL(
            "SELECT stream_id, hard FROM {}.eskit_deleted_streams"
            " WHERE stream_id = ANY(%s::text[])"
        ).format(s)
        # From the DCB schema: the shared locks of every event key of the call, sorted,
        # before any insert. Each insert takes its own again (held already: no wait),
        # so the call never holds one key while it waits for another that a
        # conditional append (which locks its keys sorted too) holds.
        self.lock_event_keys = sql.SQL(
            """SELECT count(*) FROM (
                   SELECT pg_advisory_xact_lock_shared(k.hi, k.lo)::text
                   FROM unnest(%s::int[], %s::int[]) WITH ORDINALITY AS k(hi, lo, ord)
                   ORDER BY k.ord) AS locked"""
        )
        # With a condition: the same, each key in its mode (the query's exclusive).
        self.lock_condition_keys = sql.SQL(
            """SELECT count(*) FROM (
                   SELECT CASE WHEN k.x THEN pg_advisory_xact_lock(k.hi, k.lo)::text
                               ELSE pg_advisory_xact_lock_shared(k.hi, k.lo)::text END
                   FROM unnest(%s::int[], %s::int[], %s::bool[])
                        WITH ORDINALITY AS k(hi, lo, x, ord)
                   ORDER BY k.ord) AS locked"""
        )


class ConditionPlan:
    """What a conditional call runs: its keys (each in its mode) and its check."""

    def __init__(self, schema: str, prepared: list[PreparedAppend],
                 condition: AppendCondition) -> None:
        self.condition = condition
        self.keys = lock_plan(
            event_lock_keys((p.event_type, p.tags) for a in prepared for p in a.batch),
            query_lock_keys(condition.fail_if_events_match),
        )
        self.check, params = check_statement(
            schema, condition.fail_if_events_match, visible_stream(schema, "eskit_events"))
        after_tx, after_seq = unpack_position(condition.after_position)
        self.params: dict[str, Any] = {**params, "after_tx": after_tx, "after_seq": after_seq}


def condition_plan(schema: str, version: int, prepared: list[PreparedAppend],
                   condition: AppendCondition | None) -> ConditionPlan | None:
    """The plan of a conditional call on ``schema`` (at eskit schema ``version``);
    refused on a schema before DCB."""
    if condition is None:
        return None
    if version < DCB_SCHEMA_VERSION:
        raise StoreError(
            f"schema {schema} has eskit schema version {version}; DCB "
            f"conditions need {DCB_SCHEMA_VERSION}: run `eskit migrate` first")
    return ConditionPlan(schema, prepared, condition)


def conditional_in_transaction() -> InvalidInputError:
    """The refusal of a conditional call on the caller's connection (as for one stream)."""
    return InvalidInputError(
        "a conditional append_many runs its own transaction: give it a store with a pool "
        "or DSN")


def event_keys(prepared: list[PreparedAppend]) -> tuple[list[int], list[int]]:
    """The call's event lock keys, sorted (see ``MultiStatements.lock_event_keys``)."""
    hi, lo, _ = lock_plan(
        event_lock_keys((p.event_type, p.tags) for a in prepared for p in a.batch), set())
    return hi, lo


class ManyStore(Protocol):
    """What ``append_many`` needs of a PostgreSQL store, sync or async."""

    sql: Statements
    sql_multi: MultiStatements
    compress_threshold: int | None
    _notify: bool


def _refuse_deleted(prepared: list[PreparedAppend], rows: list[Any]) -> None:
    deleted = {stream: bool(hard) for stream, hard in rows}
    for a in prepared:
        if a.stream in deleted:
            raise deleted_error(a.stream_id, deleted[a.stream])


def _found(rows: list[Any]) -> dict[Any, Event]:
    return {e.event_id: e for e in decode_rows(rows)}


def _results(prepared: list[PreparedAppend], rows: list[list[Any]]) -> list[AppendResult]:
    results: list[AppendResult] = []
    for a, inserted in zip(prepared, rows, strict=True):
        result = inserted_result(a.stream_id, a.batch, inserted)
        if result is None:
            raise _moved(a.stream)
        results.append(result)
    return results


@asynccontextmanager
async def _no_async_pipeline() -> AsyncIterator[None]:
    yield


def _moved(stream: str) -> StoreError:
    return StoreError(
        f"stream {stream!r} moved while append_many held its lock: something writes to the "
        "events table without eskit's locks; nothing was written"
    )


# -- sync --------------------------------------------------------------------------------


def append_many_on(
    store: ManyStore, conn: psycopg.Connection[Any], prepared: list[PreparedAppend],
    plan: ConditionPlan | None = None,
) -> list[AppendResult]:
    """The call on ``conn``, in the transaction (or savepoint) the caller opened.

    In pipeline mode where libpq has it: the lock and the reads go in one round trip,
    the inserts in another (they stay separate statements, each with its own
    snapshot, so the reads see every append that held a lock before).
    """
    statements, multi, streams = store.sql, store.sql_multi, [a.stream for a in prepared]
    with conn.pipeline() if PIPELINE else nullcontext():
        conn.execute(multi.lock_streams, (streams,))
        matched = None
        if plan is not None:
            conn.execute(multi.lock_condition_keys, plan.keys)
            matched = conn.execute(plan.check, plan.params)  # after the keys: see above
        elif statements.version >= DCB_SCHEMA_VERSION:
            conn.execute(multi.lock_event_keys, event_keys(prepared))
        deleted = conn.execute(multi.deleted, (streams,)) if statements.version >= 6 else None
        heads = conn.execute(multi.heads, (streams,))
        found = conn.execute(statements.find_events, (all_event_ids(prepared),))
        if deleted is not None:
            _refuse_deleted(prepared, deleted.fetchall())
        retried = resolve_many(
            prepared, {s: int(v) for s, v in heads.fetchall()}, _found(found.fetchall())
        )
        if retried is not None:
            return retried
        if matched is not None and matched.fetchone() is not None:
            assert plan is not None
            raise condition_failed(prepared, plan.condition)
        threshold = statements.payload_threshold(store.compress_threshold)
        inserts = [
            conn.execute(statements.append, append_params(a.stream, a.expected, a.batch,
                                                          threshold))
            for a in prepared
        ]
        return _results(prepared, [cursor.fetchall() for cursor in inserts])


def append_many_in_savepoint(
    store: ManyStore, conn: psycopg.Connection[Any], prepared: list[PreparedAppend]
) -> list[AppendResult]:
    """The call inside the caller's open transaction on ``conn``, in a savepoint.

    A refusal rolls back to the savepoint, so the caller's transaction stays
    usable; eskit never commits. The NOTIFY is sent in the transaction (delivered
    at its commit).
    """
    try:
        conn.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            results = append_many_on(store, conn, prepared)
        except BaseException:
            if not conn.closed and conn.info.transaction_status in (
                TransactionStatus.INERROR, TransactionStatus.INTRANS
            ):
                conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
            raise
        conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        if store._notify and not results[0].duplicate:
            conn.execute(store.sql.notify, (store.sql.channel,))
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return results


# -- async -------------------------------------------------------------------------------


async def append_many_on_async(
    store: ManyStore, conn: psycopg.AsyncConnection[Any], prepared: list[PreparedAppend],
    plan: ConditionPlan | None = None,
) -> list[AppendResult]:
    """:func:`append_many_on`, awaited."""
    statements, multi, streams = store.sql, store.sql_multi, [a.stream for a in prepared]
    async with conn.pipeline() if PIPELINE else _no_async_pipeline():
        await conn.execute(multi.lock_streams, (streams,))
        matched = None
        if plan is not None:
            await conn.execute(multi.lock_condition_keys, plan.keys)
            matched = await conn.execute(plan.check, plan.params)
        elif statements.version >= DCB_SCHEMA_VERSION:
            await conn.execute(multi.lock_event_keys, event_keys(prepared))
        deleted = (
            await conn.execute(multi.deleted, (streams,)) if statements.version >= 6 else None
        )
        heads = await conn.execute(multi.heads, (streams,))
        found = await conn.execute(statements.find_events, (all_event_ids(prepared),))
        if deleted is not None:
            _refuse_deleted(prepared, await deleted.fetchall())
        retried = resolve_many(
            prepared, {s: int(v) for s, v in await heads.fetchall()},
            _found(await found.fetchall()),
        )
        if retried is not None:
            return retried
        if matched is not None and await matched.fetchone() is not None:
            assert plan is not None
            raise condition_failed(prepared, plan.condition)
        threshold = statements.payload_threshold(store.compress_threshold)
        inserts = [
            await conn.execute(statements.append, append_params(a.stream, a.expected,
                                                                a.batch, threshold))
            for a in prepared
        ]
        return _results(prepared, [await cursor.fetchall() for cursor in inserts])


async def append_many_in_savepoint_async(
    store: ManyStore, conn: psycopg.AsyncConnection[Any], prepared: list[PreparedAppend]
) -> list[AppendResult]:
    """:func:`append_many_in_savepoint`, awaited."""
    try:
        await conn.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            results = await append_many_on_async(store, conn, prepared)
        except BaseException:
            if not conn.closed and conn.info.transaction_status in (
                TransactionStatus.INERROR, TransactionStatus.INTRANS
            ):
                await conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
            raise
        await conn.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        if store._notify and not results[0].duplicate:
            await conn.execute(store.sql.notify, (store.sql.channel,))
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return results


def retry_whole_call(exc: StoreError) -> bool:
    """Whether a failed attempt of a store-owned call may simply run again."""
    return isinstance(exc.__cause__, pg_errors.UniqueViolation | pg_errors.DeadlockDetected)
