"""DCB for :class:`~eskit.PostgresEventStore`: conditional appends and ``read_events``.

The I/O of the technique :mod:`eskit.stores.postgres_dcb` describes and builds the
statements for (the async store's twin is :mod:`eskit.aio.postgres_dcb`).
"""

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

# The store is an eskit.PostgresEventStore, typed loosely: importing it here would make
# the two modules import each other.
PostgresEventStore = Any


def append_if(
    store: PostgresEventStore, stream_id: StreamId, stream: str, expected: Expected,
    batch: list[PendingEvent], condition: AppendCondition,
) -> AppendResult:
    needs_tags(store)
    if store._in_caller_transaction():
        raise InvalidInputError(
            "a conditional append runs its own transaction: give it a store with a pool "
            "or DSN"
        )
    query = condition.fail_if_events_match
    shown = visible_stream(store.schema, "eskit_events")
    check, check_params = postgres_dcb.check_statement(store.schema, query, shown)
    after_tx, after_seq = unpack_position(condition.after_position)
    params = append_params(
        stream, expected, batch, store.sql.payload_threshold(store.compress_threshold)
    )
    locks = {"stream": stream, **postgres_dcb.condition_params(batch, condition)}

    statement = postgres_dcb.append_statement(
        store.schema, postgres_dcb.stream_lock_key(store.schema), check,
        **store.sql.insert_flags,
    )
    params.update(check_params, after_tx=after_tx, after_seq=after_seq)

    def attempt(conn: psycopg.Connection[Any]) -> list[Any] | None:
        # See eskit.stores.postgres_dcb for why this order cannot miss an event:
        # the keys first, then the check and the insert in one later statement.
        with conn.transaction():
            conn.execute(store.sql.lock_condition, locks)
            rows = conn.execute(statement, params).fetchall()
        return None if rows[0][0] else [row[1:] for row in rows]

    try:
        rows = store._run(attempt)
    except StoreError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) == STREAM_DELETED:
            store._refuse_if_deleted(stream_id, stream)
        if not isinstance(cause, pg_errors.UniqueViolation):
            raise
        return resolve_conflict(
            stream_id, stream, expected, store._head(stream), batch, store._find(batch)
        )
    if rows is None:
        found = store._find(batch)
        if found:  # a retry of this append: its own events match the query
            return resolve_conflict(
                stream_id, stream, expected, store._head(stream), batch, found
            )
        raise AppendConditionFailed(stream_id, condition)
    result = inserted_result(stream_id, batch, rows)
    if result is None:
        store._refuse_if_deleted(stream_id, stream)
        return resolve_conflict(stream_id, stream, expected, rows[0][0], batch,
                                store._find(batch))
    return result

def needs_tags(store: PostgresEventStore) -> None:
    """Refuse DCB on a schema before tags (a store opened with ``setup=False``)."""
    if store.sql.version < postgres_dcb.DCB_SCHEMA_VERSION:
        raise StoreError(
            f"schema {store.schema} has eskit schema version {store.sql.version}; DCB "
            f"tags and conditions need {postgres_dcb.DCB_SCHEMA_VERSION}: run `eskit migrate` first"
        )

def read_events(
    store: PostgresEventStore, query: Query, after: int, limit: int | None
) -> tuple[list[Event], int]:
    needs_tags(store)
    statement, params = postgres_dcb.read_statement(
        store.schema, query, visible_stream(store.schema, "eskit_events"),
        sql.SQL(EVENT_COLUMNS), limit,
    )
    after_tx, after_seq = unpack_position(after)

    def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], int, list[Any]]:
        # The head first, in statements of their own (eskit.stores.postgres_dcb
        # says why the events up to it are all there for the last statement).
        head_tx, head_seq = "0", 0
        top = conn.execute(postgres_dcb.snapshot_head_statement(store.schema)).fetchone()
        if top is not None:
            head_tx, head_seq, open_ = top
            held = open_ and conn.execute(
                postgres_dcb.KEY_HOLDERS, postgres_dcb.key_holder_params(query)
            ).fetchone()
            if held and held[0]:
                head_row = conn.execute(store.sql.head_position).fetchone()
                head_tx, head_seq = (head_row[0], head_row[1]) if head_row else ("0", 0)
        rows = conn.execute(statement, {
            **params, "after_tx": after_tx, "after_seq": after_seq,
            "head_tx": head_tx, "head_seq": head_seq, "limit": limit,
        }).fetchall()
        tag_rows = conn.execute(
            postgres_dcb.tags_statement(store.schema), postgres_dcb.tag_lookup_params(rows)
        ).fetchall() if rows else []
        return rows, pack_position(head_tx, head_seq), tag_rows

    rows, head, tag_rows = store._run(read)
    events = decode_rows(rows)
    postgres_dcb.attach_tag_rows(events, tag_rows)
    return events, head
