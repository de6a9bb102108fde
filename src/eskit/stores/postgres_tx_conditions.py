"""A DCB condition on an append inside the caller's PostgreSQL transaction.

``PostgresTransaction.append(..., condition=...)`` (and the async twin) runs the
conditional append of :mod:`eskit.stores.postgres_conditions` on the caller's
connection, in a savepoint: the lock statement (the stream's lock and the query's
keys exclusive, the events' keys shared), then, in a later statement with a newer
snapshot, the check and the insert. The advisory locks are transaction-scoped, so
they are held until the *caller* commits or rolls back: no concurrent append whose
events the query could match can commit before then, and the check is atomic with
the whole transaction.

Why only as the transaction's **first write**, under **READ COMMITTED** (else
:class:`~eskit.AppendNotFirstWriteError`, and nothing is written): a reader's
consistent position (see :mod:`eskit.stores.postgres_dcb`) relies on every
appending transaction holding its events' keys from before it has a transaction
id; a transaction that wrote before already has one. Under REPEATABLE READ or
SERIALIZABLE the check would read the transaction's first snapshot and could miss
an event committed while it waited for the keys. Later appends in the same
transaction (plain ones, after the conditional one) are as before.
"""

from __future__ import annotations

from typing import Any

from eskit.dcb import AppendCondition
from eskit.errors import AppendNotFirstWriteError, StoreError
from eskit.events import StreamId
from eskit.stores import postgres_dcb
from eskit.stores.model import Expected, PendingEvent
from eskit.stores.postgres_deletion import visible_stream
from eskit.stores.postgres_schema import append_params, unpack_position

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

__all__: list[str] = []

FIRST_WRITE = sql.SQL(
    "SELECT pg_current_xact_id_if_assigned() IS NULL, current_setting('transaction_isolation')"
)
"""Whether the transaction has no id yet (has not written), and its isolation level."""


def plan(
    store: Any, stream: str, expected: Expected, batch: list[PendingEvent],
    condition: AppendCondition,
) -> tuple[sql.Composed, sql.Composed, dict[str, Any]]:
    """The lock statement, the checking append statement and their parameters (no I/O)."""
    if store.sql.version < postgres_dcb.DCB_SCHEMA_VERSION:
        raise StoreError(
            f"schema {store.schema} has eskit schema version {store.sql.version}; DCB "
            f"conditions need {postgres_dcb.DCB_SCHEMA_VERSION}: run `eskit migrate` first"
        )
    check, check_params = postgres_dcb.check_statement(
        store.schema, condition.fail_if_events_match, visible_stream(store.schema, "eskit_events")
    )
    after_tx, after_seq = unpack_position(condition.after_position)
    params = append_params(
        stream, expected, batch, store.sql.payload_threshold(store.compress_threshold)
    )
    params.update(check_params, after_tx=after_tx, after_seq=after_seq, stream=stream,
                  **postgres_dcb.condition_params(batch, condition))
    statement = postgres_dcb.append_statement(
        store.schema, postgres_dcb.stream_lock_key(store.schema), check,
        **store.sql.insert_flags,
    )
    return store.sql.lock_condition, statement, params


def refuse_unless_first_write(row: Any, stream_id: StreamId) -> None:
    """Raise :class:`~eskit.AppendNotFirstWriteError` unless ``FIRST_WRITE``'s row allows it."""
    first, isolation = row
    if not first:
        raise AppendNotFirstWriteError(
            f"a conditional append to {str(stream_id)!r} in a caller's transaction must be "
            "the transaction's first write (it wrote before): append it first, or in a "
            "transaction of its own"
        )
    if isolation != "read committed":
        raise AppendNotFirstWriteError(
            f"a conditional append in a caller's transaction needs READ COMMITTED, not "
            f"{isolation.upper()}: its check must see events committed while it waited"
        )



def outcome(rows: list[Any]) -> tuple[bool, list[Any]]:
    """``(blocked, rows for inserted_result)`` of the checking append statement."""
    return bool(rows[0][0]), [row[1:] for row in rows]
