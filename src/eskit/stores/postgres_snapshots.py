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
  transaction has committed: a snapshot never holds an append back. With
  ``keep=N`` the same statement also deletes the aggregate's snapshots below
  its N newest (data-modifying CTEs on the primary key: still one round trip);
  a concurrent save's newer snapshot is invisible to it, so it is never what
  gets deleted.
* **Pruning in batches.** :meth:`PostgresSnapshotStore.prune` walks the
  primary key, ``batch_size`` aggregates per statement (one ``DELETE`` joined to
  the batch's keys, one round trip), so no batch scans the table and an
  interrupted pass keeps what it committed.
"""

from __future__ import annotations

from typing import Any

from eskit.errors import MissingExtraError, StoreError

try:
    from psycopg import sql
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.dcb import set_tags
from eskit.events import Event, StreamId
from eskit.snapshots import (
    AggregateKey,
    Snapshot,
    SnapshotStore,
    check_keep,
    no_event_there,
    snapshot_from_row,
)
from eskit.stores.model import MAX_VERSION
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_dcb import DCB_SCHEMA_VERSION
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
        # Save and prune in one statement (one round trip, atomic). Its parts all see
        # the table as it was before it, so the cut is the keep-th newest of the old
        # versions and the new one; a new version below the cut is not written (it
        # would be pruned at once); old rows below it go. Returns whether the event
        # is there, so that a refused save can be told from one pruned at once.
        self.save_keeping = sql.SQL(
            """WITH found AS (
                   SELECT EXISTS (
                       SELECT 1 FROM {events}
                       WHERE stream_id = %(stream)s::text AND version = %(version)s::bigint
                         AND event_id = %(event_id)s::uuid
                   ) AS there
               ), cut AS (
                   SELECT v FROM (
                       SELECT version AS v FROM {snapshots}
                       WHERE stream_id = %(stream)s::text AND aggregate_type = %(type)s::text
                       UNION SELECT %(version)s::bigint
                   ) AS versions
                   ORDER BY v DESC LIMIT 1 OFFSET %(offset)s
               ), saved AS (
                   INSERT INTO {snapshots}
                       (stream_id, aggregate_type, version, event_id, state_version, taken_at,
                        state)
                   SELECT %(stream)s::text, %(type)s::text, %(version)s::bigint,
                          %(event_id)s::uuid, %(state_version)s::integer,
                          %(taken_at)s::timestamptz, %(state)s::json
                   WHERE (SELECT there FROM found)
                     AND %(version)s::bigint >= coalesce((SELECT v FROM cut), 0)
                   ON CONFLICT (stream_id, aggregate_type, version) DO UPDATE
                   SET event_id = excluded.event_id, state_version = excluded.state_version,
                       taken_at = excluded.taken_at, state = excluded.state
                   RETURNING 1
               ), pruned AS (
                   DELETE FROM {snapshots}
                   WHERE stream_id = %(stream)s::text AND aggregate_type = %(type)s::text
                     AND (SELECT there FROM found)
                     AND version < (SELECT v FROM cut)
                   RETURNING 1
               )
               SELECT (SELECT there FROM found), (SELECT count(*) FROM pruned)"""
        ).format(snapshots=snapshots, events=events)
        # The newest snapshot and the events to replay with it, in one statement (and
        # one round trip): the snapshot joined to its own event (part 0), then the
        # events after it (part 1); without a snapshot, part 1 is the whole stream.
        # From the DCB schema each event row ends with its tags (NULL for none): one
        # probe of the tags' (tx_id, seq) index per event, still one round trip.
        tail = sql.SQL(
            """WITH s AS (
                   SELECT version, event_id, state_version, taken_at, state::text AS state
                   FROM {snapshots}
                   WHERE stream_id = %(stream)s AND aggregate_type = %(type)s
                     AND version <= %(max)s
                   ORDER BY version DESC LIMIT 1
               ), e AS (
                   SELECT {columns}{tags}
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
        )
        self.latest_with_tail = tail.format(snapshots=snapshots, events=events,
                                            columns=sql.SQL(EVENT_COLUMNS), tags=sql.SQL(""))
        self.latest_with_tail_tagged = tail.format(
            snapshots=snapshots, events=events, columns=sql.SQL(EVENT_COLUMNS),
            tags=sql.SQL(
                ", (SELECT array_agg(t.tag ORDER BY t.ord) FROM {}.eskit_event_tags AS t"
                " WHERE t.tx_id = {}.tx_id AND t.seq = {}.seq) AS tags").format(s, events, events))
        # Prune a whole batch of aggregates in one statement (one round trip, not one
        # each): below the keep-th newest; the subquery is NULL (nothing goes) with fewer.
        batch = """DELETE FROM {snapshots} AS s
               USING unnest(%(streams)s::text[], %(types)s::text[]) AS k(stream_id, kind)
               WHERE s.stream_id = k.stream_id AND s.aggregate_type = k.kind"""
        self.prune_batch = sql.SQL(batch + """ AND s.version < (
                   SELECT x.version FROM {snapshots} AS x
                   WHERE x.stream_id = k.stream_id AND x.aggregate_type = k.kind
                   ORDER BY x.version DESC LIMIT 1 OFFSET %(offset)s
               )""").format(snapshots=snapshots)
        self.prune_batch_all = sql.SQL(batch).format(snapshots=snapshots)
        self.first_keys = sql.SQL(
            """SELECT DISTINCT stream_id, aggregate_type FROM {}
               ORDER BY stream_id, aggregate_type LIMIT %s"""
        ).format(snapshots)
        self.keys_after = sql.SQL(
            """SELECT DISTINCT stream_id, aggregate_type FROM {}
               WHERE (stream_id, aggregate_type) > (%s, %s)
               ORDER BY stream_id, aggregate_type LIMIT %s"""
        ).format(snapshots)
        self.count_keys = sql.SQL(
            "SELECT count(*) FROM (SELECT DISTINCT stream_id, aggregate_type FROM {}) AS k"
        ).format(snapshots)
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


def save_keeping_params(stream: str, snapshot: Snapshot, keep: int) -> dict[str, Any]:
    return {**save_params(stream, snapshot), "offset": keep - 1}


def prune_batch_statement(statements: SnapshotStatements, keys: list[AggregateKey], keep: int
                          ) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement that prunes a batch of aggregates to their ``keep`` newest snapshots."""
    params: dict[str, Any] = {
        "streams": [k[0] for k in keys], "types": [k[1] for k in keys], "offset": keep - 1,
    }
    return (statements.prune_batch_all if keep == 0 else statements.prune_batch), params


def keys_query(statements: SnapshotStatements, after: AggregateKey | None, limit: int
               ) -> tuple[sql.Composed, tuple[Any, ...]]:
    if after is None:
        return statements.first_keys, (limit,)
    return statements.keys_after, (*after, limit)


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
    aggregate_id: StreamId, aggregate_type: str, rows: list[Any], *, tagged: bool = False
) -> tuple[Snapshot | None, list[Event]]:
    """The snapshot row and the event rows of ``latest_with_tail`` (``tagged``: of
    ``latest_with_tail_tagged``, each event row ending with its tags), decoded."""
    snapshot = None
    event_rows = []
    tags: list[Any] = []
    for row in rows:
        if row[0] == 0:
            snapshot = snapshot_from(aggregate_id, aggregate_type, row[1:6])
        if row[6] is not None:
            if tagged:
                event_rows.append(row[6:-1])
                tags.append(row[-1])
            else:
                event_rows.append(row[6:])
    events = decode_rows(event_rows, aggregate_id)
    for event, names in zip(events, tags, strict=False):
        if names:
            set_tags(event, tuple(names))
    return snapshot, events


def tail_statement(statements: SnapshotStatements, schema_version: int) -> Any:
    """``latest_with_tail``, with the events' tags from the DCB schema on."""
    if schema_version >= DCB_SCHEMA_VERSION:
        return statements.latest_with_tail_tagged
    return statements.latest_with_tail


class PostgresSnapshotStore(SnapshotStore):
    """Snapshots kept in the same PostgreSQL schema as ``event_store``'s events.

    Uses the event store's connection pool. Raises :class:`~eskit.StoreError`
    if the schema has no snapshot table yet (see :func:`missing_table`).
    ``keep=N``: each save also deletes, in its transaction, that aggregate's
    snapshots below its N newest.
    """

    event_store: PostgresEventStore

    def __init__(self, event_store: PostgresEventStore, *, keep: int | None = None) -> None:
        if not isinstance(event_store, PostgresEventStore):
            raise StoreError(
                "PostgresSnapshotStore needs a PostgresEventStore, "
                f"got {type(event_store).__name__}"
            )
        self.keep = None if keep is None else check_keep(keep, minimum=1)
        self.event_store = event_store
        self.sql = SnapshotStatements(event_store.schema)
        row = event_store._run(lambda conn: conn.execute(self.sql.table_exists).fetchone())
        if not row or row[0] is None:
            raise missing_table(event_store.schema)

    def _save(self, stream: str, snapshot: Snapshot) -> None:
        with self.event_store._connection() as conn:
            if self.keep is None:
                stored = conn.execute(self.sql.save, save_params(stream, snapshot)).rowcount == 1
            else:
                row = conn.execute(self.sql.save_keeping,
                                   save_keeping_params(stream, snapshot, self.keep)).fetchone()
                stored = bool(row and row[0])
        if not stored:
            raise no_event_there(snapshot)

    def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]]:
        params = latest_with_tail_params(stream, aggregate_type, max_version)
        statement = tail_statement(self.sql, self.event_store.sql.version)
        # A read: retried on a fresh connection if this one dropped.
        rows = self.event_store._run(lambda conn: conn.execute(statement, params).fetchall())
        snapshot, events = split_rows(aggregate_id, aggregate_type, rows,
                                      tagged=statement is self.sql.latest_with_tail_tagged)
        # Exactly what read_stream returns: stored events pass the registry's rules.
        return snapshot, self.event_store.registry.upcast(events)

    def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        params = latest_params(stream, aggregate_type, max_version)
        row = self.event_store._run(lambda conn: conn.execute(self.sql.latest, params).fetchone())
        return snapshot_from(aggregate_id, aggregate_type, row)

    def _aggregates_after(self, after: AggregateKey | None, limit: int) -> list[AggregateKey]:
        query, params = keys_query(self.sql, after, limit)
        rows = self.event_store._run(lambda conn: conn.execute(query, params).fetchall())
        return [(stream, kind) for stream, kind in rows]

    def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        with self.event_store._connection() as conn:
            return conn.execute(*prune_batch_statement(self.sql, keys, keep)).rowcount

    def _count_aggregates(self) -> int:
        row = self.event_store._run(lambda conn: conn.execute(self.sql.count_keys).fetchone())
        return 0 if row is None else int(row[0])
