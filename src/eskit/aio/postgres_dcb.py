"""DCB for :class:`~eskit.aio.AsyncPostgresEventStore`: the sync store's technique
(see :mod:`eskit.stores.postgres_dcb`), with the same statements, awaited."""

from __future__ import annotations

from typing import Any

from eskit.dcb import AppendCondition, Query
from eskit.errors import AppendConditionFailed, InvalidInputError, StoreError
from eskit.events import Event, StreamId
from eskit.stores import postgres_dcb
from eskit.stores.arguments import resolve_conflict
from eskit.stores.model import AppendResult, Expected, PendingEvent
from eskit.stores.postgres_deletion import STREAM_DELETED, visible_stream
from eskit.stores.postgres_schema import (
    EVENT_COLUMNS,
    append_params,
    inserted_result,
    pack_position,
    unpack_position,
)
from eskit.stores.rows import decode_rows

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

__all__: list[str] = []

# The store is an eskit.aio.AsyncPostgresEventStore, typed loosely: importing it here
# would make the two modules import each other.
AsyncPostgresEventStore = Any


def needs_tags(store: AsyncPostgresEventStore) -> None:
    if store.sql.version < postgres_dcb.DCB_SCHEMA_VERSION:
        raise StoreError(
            f"schema {store.schema} has eskit schema version {store.sql.version}; DCB "
            f"tags and conditions need {postgres_dcb.DCB_SCHEMA_VERSION}: run `eskit migrate` first"
        )


async def append_if(
    store: AsyncPostgresEventStore, stream_id: StreamId, stream: str, expected: Expected,
    batch: list[PendingEvent], condition: AppendCondition,
) -> AppendResult:
    needs_tags(store)
    if store._given_connection():
        raise InvalidInputError(
            "a conditional append runs its own transaction: give it a store with a pool or DSN"
        )
    check, check_params = postgres_dcb.check_statement(
        store.schema, condition.fail_if_events_match, visible_stream(store.schema, "eskit_events")
    )
    after_tx, after_seq = unpack_position(condition.after_position)
    check_params.update(after_tx=after_tx, after_seq=after_seq)
    params = append_params(
        stream, expected, batch, store.sql.payload_threshold(store.compress_threshold)
    )
    locks = {"stream": stream, **postgres_dcb.condition_params(batch, condition)}

    statement = postgres_dcb.append_statement(
        store.schema, postgres_dcb.stream_lock_key(store.schema), check,
        **store.sql.insert_flags,
    )
    params.update(check_params)

    async def attempt(conn: psycopg.AsyncConnection[Any]) -> list[Any] | None:
        async with conn.transaction():
            await conn.execute(store.sql.lock_condition, locks)
            rows = await (await conn.execute(statement, params)).fetchall()
        return None if rows[0][0] else [row[1:] for row in rows]

    try:
        rows = await store._run(attempt)
    except StoreError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) == STREAM_DELETED:
            await store._refuse_if_deleted(stream_id, stream)
        if not isinstance(cause, pg_errors.UniqueViolation):
            raise
        return resolve_conflict(
            stream_id, stream, expected, await store._head(stream), batch,
            await store._find(batch),
        )
    if rows is None:
        found = await store._find(batch)
        if found:  # a retry of this append: its own events match the query
            return resolve_conflict(
                stream_id, stream, expected, await store._head(stream), batch, found
            )
        raise AppendConditionFailed(stream_id, condition)
    result = inserted_result(stream_id, batch, rows)
    if result is None:
        await store._refuse_if_deleted(stream_id, stream)
        return resolve_conflict(stream_id, stream, expected, rows[0][0], batch,
                                await store._find(batch))
    store._signal_listeners()
    return result


async def read_events(
    store: AsyncPostgresEventStore, query: Query, after: int, limit: int | None
) -> tuple[list[Event], int]:
    needs_tags(store)
    statement, params = postgres_dcb.read_statement(
        store.schema, query, visible_stream(store.schema, "eskit_events"),
        sql.SQL(EVENT_COLUMNS), limit,
    )
    after_tx, after_seq = unpack_position(after)

    async def read(conn: psycopg.AsyncConnection[Any]) -> tuple[list[Any], int, list[Any]]:
        # The head first, in statements of their own (see eskit.stores.postgres_dcb).
        head_tx, head_seq = "0", 0
        top = await (await conn.execute(
            postgres_dcb.snapshot_head_statement(store.schema))).fetchone()
        if top is not None:
            head_tx, head_seq, open_ = top
            held = open_ and await (await conn.execute(
                postgres_dcb.KEY_HOLDERS, postgres_dcb.key_holder_params(query)
            )).fetchone()
            if held and held[0]:
                head_row = await (await conn.execute(store.sql.head_position)).fetchone()
                head_tx, head_seq = (head_row[0], head_row[1]) if head_row else ("0", 0)
        rows = await (await conn.execute(statement, {
            **params, "after_tx": after_tx, "after_seq": after_seq,
            "head_tx": head_tx, "head_seq": head_seq, "limit": limit,
        })).fetchall()
        tag_rows: list[Any] = []
        if rows:
            tag_rows = await (await conn.execute(
                postgres_dcb.tags_statement(store.schema), postgres_dcb.tag_lookup_params(rows)
            )).fetchall()
        return rows, pack_position(head_tx, head_seq), tag_rows

    rows, head, tag_rows = await store._run(read)
    events = decode_rows(rows)
    postgres_dcb.attach_tag_rows(events, tag_rows)
    return events, head
