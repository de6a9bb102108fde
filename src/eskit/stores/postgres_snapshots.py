"""Snapshots in the schema of a :class:`~eskit.stores.postgres.PostgresEventStore`.

The table ``eskit_snapshots`` is created by the schema's second migration
(``setup()``, or ``eskit migrate``). The statements here are shared with the
asyncio store (:mod:`eskit.aio.postgres_snapshots`), like
:mod:`eskit.stores.postgres_schema` is for events.

Design notes:

* **Never above the head.** The insert checks, in the same statement, that
  ``eskit_events`` holds the snapshot's event id at its version; the events
  table is append-only, so once true the check stays true.
* **Replace, do not pile up at one version.** Saving again at the same
  (stream, aggregate type, version) overwrites (``ON CONFLICT ... DO UPDATE``),
  so two processes that snapshot the same version race harmlessly.
* **One short statement** on its own pooled connection, after the events'
  transaction has committed: a snapshot never holds an append back.
"""

from __future__ import annotations

from typing import Any

from eskit.errors import MissingExtraError, StoreError

try:
    from psycopg import sql
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.events import Event, StreamId
from eskit.snapshots import Snapshot, SnapshotStore, no_event_there, snapshot_from_row
from eskit.stores.model import MAX_VERSION
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_schema import EVENT_COLUMNS, check_schema_name
from eskit.stores.rows import decode_rows

__all__ = ["PostgresSnapshotStore"]


class SnapshotStatements:
    """The snapshot statements for one schema (shared by the sync and async stores)."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(check_schema_name(schema))
        snapshots = sql.SQL("{}.eskit_snapshots").format(s)
        events = sql.SQL("{}.eskit_events").format(s)
        # The schema name is validated above, so quoting it into a regclass literal is safe.
        self.table_exists = sql.SQL("SELECT to_regclass({})").format(
            sql.Literal(f'"{schema}".eskit_snapshots')
        )
        self.save = sql.SQL(
            """INSERT INTO {snapshots}
                   (stream_id, aggregate_type, version, event_id, state_version, taken_at, state)
               SELECT %(stream)s::text, %(type)s::text, %(version)s::bigint, %(event_id)s::uuid,
                      %(state_version)s::integer, %(taken_at)s::timestamptz, %(state)s::json
               WHERE EXISTS (
                   SELECT 1 FROM {events}
                   WHERE stream_id = %(stream)s::text AND version = %(version)s::bigint
                     AND event_id = %(event_id)s::uuid
               )
               ON CONFLICT (stream_id, aggregate_type, version) DO UPDATE
               SET event_id = excluded.event_id, state_version = excluded.state_version,
                   taken_at = excluded.taken_at, state = excluded.state"""
        ).format(snapshots=snapshots, events=events)
        # The newest snapshot and the events to replay with it, in one statement (and
        # one round trip): the snapshot joined to its own event (part 0), then the
        # events after it (part 1); without a snapshot, part 1 is the whole stream.
        self.latest_with_tail = sql.SQL(
            """WITH s AS (
                   SELECT version, event_id, state_version, taken_at, state::text AS state
                   FROM {snapshots}
                   WHERE stream_id = %(stream)s AND aggregate_type = %(type)s
                     AND version <= %(max)s
                   ORDER BY version DESC LIMIT 1
               ), e AS (
                   SELECT {columns}
                   FROM {events}
                   WHERE stream_id = %(stream)s
                     AND version >= coalesce((SELECT version FROM s), 1)
                     AND version <= %(max)s
               )
               SELECT 0, s.version, s.event_id, s.state_version, s.taken_at, s.state, e.*
               FROM s LEFT JOIN e ON e.version = s.version
               UNION ALL
               SELECT 1, NULL, NULL, NULL, NULL, NULL, e.* FROM e
               WHERE e.version > coalesce((SELECT version FROM s), 0)
               ORDER BY 1, 11"""
        ).format(snapshots=snapshots, events=events, columns=sql.SQL(EVENT_COLUMNS))
        self.latest = sql.SQL(
            """SELECT version, event_id, state_version, taken_at, state::text FROM {}
               WHERE stream_id = %s AND aggregate_type = %s AND version <= %s
               ORDER BY version DESC LIMIT 1"""
        ).format(snapshots)


def missing_table(schema: str) -> StoreError:
    return StoreError(
        f"schema {schema!r} has no snapshot table: it was created by an older eskit; "
        "run `eskit migrate DSN --schema NAME` or open the store with setup=True"
    )


def save_params(stream: str, snapshot: Snapshot) -> dict[str, Any]:
    return {
        "stream": stream,
        "type": snapshot.aggregate_type,
        "version": snapshot.version,
        "event_id": snapshot.event_id,
        "state_version": snapshot.state_version,
        "taken_at": snapshot.taken_at,
        "state": snapshot.state.decode(),
    }


def latest_params(stream: str, aggregate_type: str, max_version: int | None) -> tuple[Any, ...]:
    return stream, aggregate_type, MAX_VERSION if max_version is None else max_version


def snapshot_from(aggregate_id: StreamId, aggregate_type: str, row: Any) -> Snapshot | None:
    if row is None:
        return None
    version, event_id, state_version, taken_at, state = row
    return snapshot_from_row(
        aggregate_id, aggregate_type, version, event_id, state_version, state, taken_at
    )


def latest_with_tail_params(
    stream: str, aggregate_type: str, max_version: int | None
) -> dict[str, Any]:
    return {
        "stream": stream, "type": aggregate_type,
        "max": MAX_VERSION if max_version is None else max_version,
    }


def split_rows(
    aggregate_id: StreamId, aggregate_type: str, rows: list[Any]
) -> tuple[Snapshot | None, list[Event]]:
    """The snapshot row and the event rows of ``latest_with_tail``, decoded."""
    snapshot = None
    event_rows = []
    for row in rows:
        if row[0] == 0:
            snapshot = snapshot_from(aggregate_id, aggregate_type, row[1:6])
        if row[6] is not None:
            event_rows.append(row[6:])
    return snapshot, decode_rows(event_rows, aggregate_id)


class PostgresSnapshotStore(SnapshotStore):
    """Snapshots kept in the same PostgreSQL schema as ``event_store``'s events.

    Uses the event store's connection pool. Raises :class:`~eskit.StoreError`
    if the schema has no snapshot table yet (see :func:`missing_table`).
    """

    event_store: PostgresEventStore

    def __init__(self, event_store: PostgresEventStore) -> None:
        if not isinstance(event_store, PostgresEventStore):
            raise StoreError(
                "PostgresSnapshotStore needs a PostgresEventStore, "
                f"got {type(event_store).__name__}"
            )
        self.event_store = event_store
        self.sql = SnapshotStatements(event_store.schema)
        row = event_store._run(lambda conn: conn.execute(self.sql.table_exists).fetchone())
        if not row or row[0] is None:
            raise missing_table(event_store.schema)

    def _save(self, stream: str, snapshot: Snapshot) -> None:
        with self.event_store._connection() as conn:
            cursor = conn.execute(self.sql.save, save_params(stream, snapshot))
            stored = cursor.rowcount == 1
        if not stored:
            raise no_event_there(snapshot)

    def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]]:
        params = latest_with_tail_params(stream, aggregate_type, max_version)
        # A read: retried on a fresh connection if this one dropped.
        rows = self.event_store._run(
            lambda conn: conn.execute(self.sql.latest_with_tail, params).fetchall()
        )
        snapshot, events = split_rows(aggregate_id, aggregate_type, rows)
        # Exactly what read_stream returns: stored events pass the registry's rules.
        return snapshot, self.event_store.registry.upcast(events)

    def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        params = latest_params(stream, aggregate_type, max_version)
        row = self.event_store._run(lambda conn: conn.execute(self.sql.latest, params).fetchone())
        return snapshot_from(aggregate_id, aggregate_type, row)
