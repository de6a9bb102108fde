"""SQL and row decoding for the PostgreSQL stores, shared by the sync and async front ends.

Nothing here does I/O: each function builds a statement (identifiers quoted by
``psycopg.sql``, values always passed as parameters) or turns rows into events.

**The global order.** A sequence or identity column is handed out when a row is
inserted, not when its transaction commits, so a reader polling "position > last
seen" can skip an event whose transaction commits after a later one. eskit stamps
each event with its writing transaction's id (``pg_current_xact_id()``, type
``xid8``) and orders by (transaction id, sequence). A reader only takes rows whose
transaction id is below a *horizon* computed in the same statement, below which
no row can ever appear later; writers never lock each other out. (The stamping is
the technique Emmett uses; see https://event-driven.io/en/ordering_in_postgres_outbox/.)

**The horizon** (schema version 3; ``eskit_read_horizon`` below, the proof is in
docs/postgres.md). The reader's statement snapshot S = (xmin, xmax, xip). A row
that is not visible to S yet but may become visible later with a transaction id
below xmax can only come from a transaction in xip (every later transaction gets
an id >= xmax). Of those, only transactions that *may still append* hold readers
back: those holding (or awaiting) the ``ROW EXCLUSIVE`` lock on this events table,
checked first, and those that have ended since S and stored events here, checked
second (with a newer snapshot, which sees their events). That is sound for a
transaction that takes the table lock before its id exists (a reader whose
snapshot lists the id also finds the lock, or finds the transaction over); one
that already had an id (a late appender) gets a later stamp (schema 4, below).
Version 2 used the snapshot xmin, so any transaction in the cluster holding an id
(another database, another table, a projection batch) held every reader back.

The position users see packs the pair into one int, ``tx_id << 64 | seq``: it
orders exactly like the pair and is passed back unchanged as a checkpoint.

Caveats, stated plainly:

* A transaction that appends holds readers back until it ends: events committed
  after it took its id are not returned yet. Nothing is skipped, but readers lag.
  :meth:`PostgresEventStore.oldest_transaction_age` reports the age of the
  oldest such transaction; set ``idle_in_transaction_session_timeout``.
* A transaction that wrote elsewhere before its first append (schema 4, a
  *late* appender: ``store.in_transaction(conn)``) already holds an id when it
  takes the table lock; its rows are stamped with ``max(its id, the latest id
  that has ended)`` taken in the trigger once the lock is held, and
  ``writer_xid`` records the real writer for the horizon's third lookup (proof in
  docs/postgres.md, "Appending in your transaction"). Under REPEATABLE READ or
  SERIALIZABLE it is refused with :class:`~eskit.errors.AppendNotFirstWriteError`
  (the trigger has no fresh snapshot there).
* Transaction ids belong to one cluster: restoring a dump into another cluster
  needs the events re-stamped (a migration eskit will provide when needed).
* Appends must go to the primary; PostgreSQL 13 or newer is required. On a hot
  standby the horizon is the snapshot xmin (the primary's locks are not visible
  there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC
from typing import Any
from uuid import UUID

from eskit.errors import (
    InvalidInputError,
    MissingExtraError,
    StoreBusyError,
    StoreError,
)

try:
    from psycopg import sql
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.events import Event, StreamId
from eskit.stores.arguments import expected_range, stream_id_from_key
from eskit.stores.compression import DEFAULT_COMPRESS_THRESHOLD, stored_data
from eskit.stores.filtered import ReadFilter
from eskit.stores.model import ANY, STREAM_EXISTS, AppendResult, Expected, PendingEvent, StreamInfo
from eskit.stores.partitions import stream_hash
from eskit.stores.postgres_archive import ArchiveStatements, archive_migration
from eskit.stores.postgres_chain import CHAIN_SCHEMA_VERSION, chain_migration, digests
from eskit.stores.postgres_compression import compression_migration
from eskit.stores.postgres_dcb import (
    DCB_SCHEMA_VERSION,
    append_statement,
    dcb_migration,
    dcb_params,
    lock_statement,
    stream_lock_key,
)
from eskit.stores.postgres_deletion import (
    DeletionStatements,
    deletion_migration,
    visible_row,
    visible_stream,
)
from eskit.stores.postgres_filtered import filtered_migration, filtered_page_query
from eskit.stores.postgres_insert import insert_batch
from eskit.stores.postgres_late import APPEND_NOT_FIRST_WRITE, LATE_STAMP, late_append_migration
from eskit.stores.postgres_truncation import TruncationStatements, truncation_migration
from eskit.stores.prefix_range import prefix_upper_bound

__all__ = ["APPEND_NOT_FIRST_WRITE", "LATE_STAMP"]

SCHEMA_VERSION = 12
PARTITION_SCHEMA_VERSION = 12
"""From this schema each event stores its ``stream_hash`` (eskit.stores.partitions)."""
MIN_SERVER_VERSION = 130000
_SEQ_BITS = 64
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


def check_schema_name(name: object) -> str:
    """Schema names are validated (and later quoted): letters, digits, underscores."""
    if type(name) is not str or not _IDENTIFIER.match(name):
        raise InvalidInputError(
            f"schema name must be 1-63 letters, digits or underscores, not {name!r}"
        )
    return name


EVENT_COLUMNS = (
    # The row shape eskit.stores.rows.decode_rows reads (StoredRow). Every cast column
    # gets an alias of its own: an unaliased "tx_id::text" would be named tx_id, and
    # ORDER BY tx_id would then sort the *text* (so "100000" before "99999"), skipping
    # events once transaction ids gain a digit. An xid8 is an epoch (32 bits, far
    # below 2**31 in practice) above a 32-bit xid, so it fits a bigint. The id is
    # read as its 16 bytes and the time as microseconds: building the UUID and the
    # datetime in eskit is cheaper than the driver's loaders, and lets events of one
    # batch share one datetime.
    "tx_id::text::bigint AS tx_number, seq, uuid_send(event_id) AS event_id_bytes, "
    "stream_id, version, event_type, schema_version, "
    "(extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_micros, "
    "coalesce(data::text, '\\x' || encode(data_zstd, 'hex')) AS data_text, "
    "metadata::text AS metadata_text"
)
# Before schema 5 (a store opened with setup=False on an older schema) there is no
# data_zstd column: every payload is json.
EVENT_COLUMNS_BEFORE_5 = EVENT_COLUMNS.replace(
    "coalesce(data::text, '\\x' || encode(data_zstd, 'hex'))", "data::text"
)


def pack_position(tx_id: str | int, seq: int) -> int:
    return (int(tx_id) << _SEQ_BITS) | seq


_MAX_SEQ = 2**63 - 1  # seq is a bigint


def unpack_position(position: int) -> tuple[str, int]:
    # A seq part beyond the bigint range (a position up to 2**128 - 1 is valid input)
    # is clamped: "(tx, seq) > (t, s)" with s above every seq means "tx > t" either way.
    return str(position >> _SEQ_BITS), min(position & _SEQ_MASK, _MAX_SEQ)


class Statements:
    """Every statement the PostgreSQL stores run, for one schema."""

    def __init__(self, schema: str) -> None:
        self.schema = check_schema_name(schema)
        s = sql.Identifier(schema)
        events = sql.SQL("{}.eskit_events").format(s)
        meta = sql.SQL("{}.eskit_meta").format(s)
        # A channel name is an identifier (63 bytes at most); schemas sharing a long
        # prefix then share a channel, which only costs a spurious wake-up.
        self.channel = f"eskit_{schema}"[:63]
        self.lock_key = f"eskit-setup:{schema}"
        self.create_schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s)
        self.create_meta = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value text NOT NULL)"
        ).format(meta)
        # The schema name is validated above, so quoting it into a regclass literal is safe.
        self.meta_exists = sql.SQL("SELECT to_regclass({})").format(
            sql.Literal(f'"{schema}".eskit_meta')
        )
        self.read_schema_version = sql.SQL(
            "SELECT value FROM {} WHERE key = 'schema_version'"
        ).format(meta)
        self.write_schema_version = sql.SQL(
            "INSERT INTO {} (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ).format(meta)
        # MIGRATIONS[n] takes the schema from version n to n + 1. Payloads are json, not
        # jsonb: jsonb reorders keys, rejects \u0000 and turns the float 1e20 into an int.
        self.migrations: list[list[sql.Composed]] = [
            [
                sql.SQL(
                    """CREATE TABLE {events} (
                        tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
                        seq            bigint      GENERATED ALWAYS AS IDENTITY,
                        event_id       uuid        NOT NULL,
                        stream_id      text        NOT NULL,
                        version        bigint      NOT NULL,
                        event_type     text        NOT NULL,
                        schema_version integer     NOT NULL,
                        recorded_at    timestamptz NOT NULL,
                        data           json        NOT NULL,
                        metadata       json        NOT NULL,
                        CONSTRAINT eskit_events_stream_version PRIMARY KEY (stream_id, version),
                        CONSTRAINT eskit_events_event_id UNIQUE (event_id)
                    )"""
                ).format(events=events),
                sql.SQL("CREATE INDEX eskit_events_order ON {} (tx_id, seq)").format(events),
                sql.SQL(
                    """CREATE FUNCTION {schema}.eskit_refuse_change() RETURNS trigger
                       LANGUAGE plpgsql AS $$
                       BEGIN RAISE EXCEPTION 'eskit events are append-only'; END $$"""
                ).format(schema=s),
                sql.SQL(
                    """CREATE TRIGGER eskit_events_append_only
                       BEFORE UPDATE OR DELETE ON {events}
                       FOR EACH STATEMENT EXECUTE FUNCTION {schema}.eskit_refuse_change()"""
                ).format(events=events, schema=s),
                sql.SQL(
                    "INSERT INTO {} (key, value) VALUES ('format', 'eskit-event-store')"
                ).format(meta),
            ],
            # 1 -> 2: snapshots (eskit.stores.postgres_snapshots). A cache beside the
            # events, so not append-only: a snapshot may be replaced, deleting is safe.
            [
                sql.SQL(
                    """CREATE TABLE {snapshots} (
                        stream_id      text        NOT NULL,
                        aggregate_type text        NOT NULL,
                        version        bigint      NOT NULL,
                        event_id       uuid        NOT NULL,
                        state_version  integer     NOT NULL,
                        taken_at       timestamptz NOT NULL,
                        state          json        NOT NULL,
                        CONSTRAINT eskit_snapshots_key
                            PRIMARY KEY (stream_id, aggregate_type, version)
                    )"""
                ).format(snapshots=sql.SQL("{}.eskit_snapshots").format(s)),
            ],
            # 2 -> 3: the read horizon that only appending transactions hold back, and
            # the trigger that makes it sound (see the module docstring).
            [
                sql.SQL(
                    """CREATE FUNCTION {schema}.eskit_check_append() RETURNS trigger
                       LANGUAGE plpgsql AS $$
                       BEGIN
                           -- Allowed: a transaction without an id yet (it takes one
                           -- after this statement has locked the table), or one whose
                           -- own events are already here (an earlier insert that was
                           -- allowed; its lock is still held). Rows of a rolled-back
                           -- savepoint are gone, as is the lock it took.
                           -- Never pg_current_xact_id() here: it would assign the id.
                           -- The first test is a simple expression, which plpgsql runs
                           -- without the executor: eskit's own appends stop there.
                           IF pg_current_xact_id_if_assigned() IS NULL THEN
                               RETURN NULL;
                           END IF;
                           IF EXISTS (SELECT FROM {events}
                                      WHERE tx_id = pg_current_xact_id_if_assigned()) THEN
                               RETURN NULL;
                           END IF;
                           RAISE EXCEPTION USING
                               ERRCODE = {sqlstate},
                               MESSAGE = 'eskit: an append must be the first write'
                                   || ' of its transaction',
                               DETAIL = 'This transaction already holds transaction id '
                                   || pg_current_xact_id_if_assigned()
                                   || '; readers could skip events it appends.',
                               HINT = 'Append in a transaction of its own, or insert'
                                   || ' the events before writing anything else.';
                       END $$"""
                ).format(schema=s, events=events, sqlstate=sql.Literal(APPEND_NOT_FIRST_WRITE)),
                sql.SQL(
                    """CREATE TRIGGER eskit_events_append_first
                       BEFORE INSERT ON {events}
                       FOR EACH STATEMENT EXECUTE FUNCTION {schema}.eskit_check_append()"""
                ).format(events=events, schema=s),
                sql.SQL(
                    """CREATE FUNCTION {schema}.eskit_read_horizon(snap pg_snapshot)
                       RETURNS xid8 LANGUAGE plpgsql AS $$
                       DECLARE
                           appending text[];
                           x xid8;
                           fresh boolean := current_setting('transaction_isolation')
                                            = 'read committed';
                       BEGIN
                           IF pg_snapshot_xmin(snap) = pg_snapshot_xmax(snap) THEN
                               RETURN pg_snapshot_xmax(snap);  -- nothing was in progress
                           END IF;
                           IF pg_is_in_recovery() THEN
                               -- A standby's pg_locks does not show the primary's
                               -- appenders (and its snapshots may list them apart
                               -- from xip): keep the plain xmin there.
                               RETURN pg_snapshot_xmin(snap);
                           END IF;
                           -- First: the transactions holding or awaiting the lock every
                           -- append takes before its transaction id exists (a prepared
                           -- transaction's rows have no pid but a virtualtransaction).
                           SELECT array_agg(t.transactionid::text) INTO appending
                           FROM pg_locks AS r
                           JOIN pg_locks AS t ON t.virtualtransaction = r.virtualtransaction
                           WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock'
                             AND r.relation = {events_name}::regclass
                             AND r.database = (SELECT oid FROM pg_database
                                               WHERE datname = current_database())
                             AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
                             AND t.granted;
                           -- Then, later: whether each other id of the snapshot has
                           -- ended since. One that held the lock at the snapshot and
                           -- ended before the lookup above is caught here if it stored
                           -- events: a query with a new snapshot (READ COMMITTED gives
                           -- each statement one), taken after it ended, sees them.
                           FOR x IN SELECT * FROM pg_snapshot_xip(snap) ORDER BY 1 LOOP
                               IF (x::text::bigint % 4294967296)::text = ANY(appending) THEN
                                   RETURN x;
                               END IF;
                               IF pg_xact_status(x) IS DISTINCT FROM 'in progress' THEN
                                   IF NOT fresh THEN
                                       RETURN x;  -- this transaction's snapshot is S itself
                                   END IF;
                                   IF EXISTS (SELECT FROM {events} WHERE tx_id = x) THEN
                                       RETURN x;
                                   END IF;
                               END IF;
                           END LOOP;
                           RETURN pg_snapshot_xmax(snap);
                       END $$"""
                ).format(
                    schema=s, events=events, events_name=sql.Literal(f'"{schema}".eskit_events')
                ),
            ],
            # 3 -> 4: late appends (eskit.stores.postgres_late).
            late_append_migration(schema),
            # 4 -> 5: compressed payloads (eskit.stores.compression).
            compression_migration(schema),
            # 5 -> 6: deleted streams and tombstones (eskit.stores.postgres_deletion).
            deletion_migration(schema),
            # 6 -> 7: per-stream truncation (eskit.stores.postgres_truncation).
            truncation_migration(schema),
            # 7 -> 8: the indexes of filtered reads (eskit.stores.postgres_filtered).
            filtered_migration(schema),
            # 8 -> 9: DCB tags and lock keys (eskit.stores.postgres_dcb).
            dcb_migration(schema),
            # 9 -> 10: archived streams (eskit.archive, eskit.stores.postgres_archive).
            archive_migration(schema),
            # 10 -> 11: hash chains (eskit.integrity, eskit.stores.postgres_chain).
            chain_migration(schema),
            # 11 -> 12: each event's stream_hash, for partitioned reads (no rewrite:
            # a nullable column; old rows keep NULL, see eskit.stores.partitions).
            [sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS stream_hash bigint"
                     ).format(events)],
        ]
        # One statement, one round trip, one short transaction: read the head, check
        # the expectation, insert the whole batch. Two writers of one stream collide
        # on the primary key (stream_id, version); the loser gets a unique violation.
        # The arrays go in binary (%b): psycopg escapes every element of a text-format
        # array with a regular expression, which took half the client's time on JSON.
        #
        # The stream's advisory lock: every append takes it shared, before it inserts
        # (``turn`` feeds ``head``, which feeds the insert). An append that lost a race
        # retries in a transaction that first takes it exclusive, in a statement of its
        # own: that waits for the appends in flight and holds new ones back (queued
        # behind it), and its append's snapshot, taken after, sees every one of them.
        # So a retry cannot lose again to another eskit append.
        stream_lock = stream_lock_key(schema)
        self.lock_stream = sql.SQL("SELECT pg_advisory_xact_lock({})").format(stream_lock)
        # From schema 7: DCB (eskit.stores.postgres_dcb).
        self._append_dcb = append_statement(schema, stream_lock)
        # From schema 10: with each event's chain hash (eskit.stores.postgres_chain).
        self._append_chained = append_statement(schema, stream_lock, chained=True)
        # From schema 12: with the stream's stream_hash (eskit.stores.partitions).
        self._append_hashed = append_statement(schema, stream_lock, chained=True, hashed=True)
        self.lock_condition = lock_statement(stream_lock)
        append_5 = sql.SQL(
            """WITH turn AS (
                   SELECT pg_advisory_xact_lock_shared({stream_lock})
               ), head AS (
                   SELECT (SELECT coalesce(max(version), 0) FROM {events}
                           WHERE stream_id = %(stream)s) AS v
                   FROM turn
               ), ins AS (
                   {insert}
               )
               SELECT head.v, ins.version, ins.tx, ins.seq
               FROM head LEFT JOIN ins ON true
               ORDER BY ins.version"""
        )
        returning = sql.SQL("version, tx_id::text AS tx, seq")
        self._append_5 = append_5.format(
            events=events, stream_lock=stream_lock,
            insert=insert_batch(events, sql.SQL(""), returning),
        )
        # From schema 6: nothing is inserted into a deleted stream (the caller then
        # looks up why, off the hot path).
        self._append_6 = append_5.format(
            events=events, stream_lock=stream_lock, insert=insert_batch(events, sql.SQL(
                " AND NOT EXISTS (SELECT FROM {}.eskit_deleted_streams"
                " WHERE stream_id = %(stream)s)"
            ).format(s), returning),
        )
        # Before schema 5: no data_zstd column (append_params then compresses nothing).
        self._append_4 = sql.SQL(
            """WITH turn AS (
                   SELECT pg_advisory_xact_lock_shared({stream_lock})
               ), head AS (
                   SELECT (SELECT coalesce(max(version), 0) FROM {events}
                           WHERE stream_id = %(stream)s) AS v
                   FROM turn
               ), ins AS (
                   INSERT INTO {events} (event_id, stream_id, version, event_type,
                                         schema_version, recorded_at, data, metadata)
                   SELECT u.event_id, %(stream)s, head.v + u.ord, u.event_type,
                          u.schema_version, u.recorded_at, u.data::json, u.metadata::json
                   FROM head,
                        unnest(%(ids)b::uuid[], %(types)b::text[], %(schema_versions)b::int[],
                               %(recorded)b::timestamptz[], %(data)b::text[], %(meta)b::text[])
                        WITH ORDINALITY AS u(event_id, event_type, schema_version,
                                             recorded_at, data, metadata, ord)
                   WHERE head.v BETWEEN %(lo)s AND %(hi)s
                   ORDER BY u.ord
                   RETURNING version, tx_id::text AS tx, seq
               )
               SELECT head.v, ins.version, ins.tx, ins.seq
               FROM head LEFT JOIN ins ON true
               ORDER BY ins.version"""
        ).format(events=events, stream_lock=stream_lock)
        self.notify = sql.SQL("SELECT pg_notify(%s, '')")
        self.notify_payload = sql.SQL("SELECT pg_notify(%s, %s)")
        self.listen = sql.SQL("LISTEN {}").format(sql.Identifier(self.channel))
        self.deletion = DeletionStatements(schema)
        self.truncation = TruncationStatements(schema)
        self.archive = ArchiveStatements(schema)
        self.use_schema_version(SCHEMA_VERSION)
        # The transactions the horizon waits for: an id, and the events table's
        # ROW EXCLUSIVE lock (a prepared transaction's start is its prepare time).
        # Without pg_read_all_stats a role does not see other roles' xact_start
        # (verified on PostgreSQL 15): the second column counts those it cannot time.
        self.oldest_transaction_age = sql.SQL(
            """SELECT coalesce(extract(epoch FROM now() - min(coalesce(a.xact_start,
                                                                     p.prepared))), 0),
                      count(*) FILTER (WHERE a.xact_start IS NULL AND p.prepared IS NULL)
               FROM pg_locks AS r
               JOIN pg_locks AS t ON t.virtualtransaction = r.virtualtransaction
               LEFT JOIN pg_stat_activity AS a ON a.pid = r.pid
               LEFT JOIN pg_prepared_xacts AS p ON p.transaction = t.transactionid
               WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock'
                 AND r.relation = {events_name}::regclass
                 AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
                 AND r.pid IS DISTINCT FROM pg_backend_pid()"""
        ).format(events_name=sql.Literal(f'"{schema}".eskit_events'))

    def use_schema_version(self, version: int) -> None:
        """Read with the horizon the schema at ``version`` supports.

        A store opened with ``setup=False`` on a schema not yet migrated to version
        3 reads below the snapshot xmin (sound, but held back by every transaction
        holding an id), until :meth:`~eskit.PostgresEventStore.setup` migrates it.
        """
        events = sql.SQL("{}.eskit_events").format(sql.Identifier(self.schema))
        self.version = version
        self.append = (
            self._append_hashed if version >= PARTITION_SCHEMA_VERSION
            else self._append_chained if version >= CHAIN_SCHEMA_VERSION
            else self._append_dcb if version >= DCB_SCHEMA_VERSION
            else self._append_6 if version >= 6
            else self._append_5 if version >= 5 else self._append_4
        )
        # From schema 6: the events of deleted streams are hidden from every read.
        shown: sql.Composable = (
            visible_stream(self.schema, "eskit_events") if version >= 6 else sql.SQL("")
        )
        self.head_version = sql.SQL(
            "SELECT coalesce(max(version), 0) FROM {} WHERE stream_id = %s{}"
        ).format(events, shown)
        self.version_at = sql.SQL(
            "SELECT coalesce(max(version), 0) FROM {} WHERE stream_id = %s"
            " AND recorded_at <= %s{}"
        ).format(events, shown)
        self.list_streams = sql.SQL(
            """SELECT last.stream_id, last.version, last.tx_id::text AS tx_text, last.seq,
                      last.recorded_at
               FROM (SELECT DISTINCT ON (stream_id) stream_id, version, tx_id, seq, recorded_at
                     FROM {events} WHERE true{shown}
                     ORDER BY stream_id, version DESC) AS last
               -- The stream's first stored event: version 1 unless truncate_stream
               -- removed it (one probe of the primary key either way).
               CROSS JOIN LATERAL (SELECT f.tx_id, f.seq FROM {events} AS f
                                   WHERE f.stream_id = last.stream_id
                                   ORDER BY f.version LIMIT 1) AS first
               ORDER BY first.tx_id, first.seq"""
        ).format(events=events, shown=shown)
        # locate_event: the UNIQUE index on event_id; deleted streams stay hidden.
        self.locate_event = sql.SQL(
            "SELECT stream_id, version FROM {events} WHERE event_id = %s{shown}"
        ).format(events=events, shown=shown)
        # list_streams_page: code-point order (COLLATE "C", as SQLite and Python
        # compare), cut by the cursor and the prefix's range; a NULL bound is no bound.
        # The inner query finds each stream's head by GROUP BY, which walks an index on
        # stream_id COLLATE "C" in order and stops after LIMIT streams (DISTINCT ON
        # with version DESC made PostgreSQL sort the range first: 10x slower). The
        # join back reads the head rows through the primary key, whose collation is
        # the database's: hence COLLATE "default" on that side.
        self.streams_page = sql.SQL(
            """SELECT e.stream_id, e.version, e.tx_id::text AS tx_text, e.seq, e.recorded_at
               FROM (SELECT stream_id COLLATE "C" AS sid, max(version) AS version
                     FROM {events}
                     WHERE (%(after)s::text IS NULL OR stream_id COLLATE "C" > %(after)s::text)
                       AND stream_id COLLATE "C" >= %(prefix)s::text
                       AND (%(upper)s::text IS NULL
                            OR stream_id COLLATE "C" < %(upper)s::text){shown}
                     GROUP BY stream_id COLLATE "C"
                     ORDER BY stream_id COLLATE "C"
                     LIMIT %(limit)s) AS page
               JOIN {events} AS e
                 ON e.stream_id = page.sid COLLATE "default" AND e.version = page.version
               ORDER BY page.sid"""
        ).format(events=events, shown=shown)
        cols = sql.SQL(EVENT_COLUMNS if version >= 5 else EVENT_COLUMNS_BEFORE_5)
        self.find_events = sql.SQL(
            "SELECT {cols} FROM {events} WHERE event_id = ANY(%b::uuid[])"
        ).format(cols=cols, events=events)
        self._read_stream = sql.SQL(
            "SELECT {cols} FROM {events} WHERE stream_id = %s AND version > %s{shown}"
        ).format(cols=cols, events=events, shown=shown)
        # From the DCB schema: each row ends with its event's tags (NULL for none), one
        # probe of the tags' (tx_id, seq) index per event. One statement instead of the
        # rows then their tags: 1.29x the loads/s of 10-event streams on this machine,
        # 0.91x for a 10,000-event stream (raw statements timed, interleaved); loads
        # are mostly short (snapshots keep them so), so a load takes the one statement.
        self._read_stream_tagged = sql.SQL(
            "SELECT {cols}, (SELECT array_agg(t.tag ORDER BY t.ord) FROM {s}.eskit_event_tags"
            " AS t WHERE t.tx_id = eskit_events.tx_id AND t.seq = eskit_events.seq) AS tags"
            " FROM {events} WHERE stream_id = %s AND version > %s{shown}"
        ).format(cols=cols, s=sql.Identifier(self.schema), events=events, shown=shown)
        # The horizon is computed in the same statement as the read: separate
        # statements would see separate snapshots (pg_current_snapshot() is the
        # statement's own). Below the snapshot xmin every transaction has ended, so
        # that test comes first and the horizon function (an InitPlan, run at most
        # once, and only when a row is at or above the xmin) is skipped when a page
        # lies wholly below it. Both bounds are safe; the order only saves work.
        visible: sql.Composable = sql.SQL("tx_id < pg_snapshot_xmin(pg_current_snapshot())")
        if version >= 3:
            visible = sql.SQL(
                "(tx_id < pg_snapshot_xmin(pg_current_snapshot())"
                " OR tx_id < (SELECT {}.eskit_read_horizon(pg_current_snapshot())))"
            ).format(sql.Identifier(self.schema))
        # The page is the first LIMIT rows in order, then cut at the horizon. That is
        # the same set as filtering first (rows below the horizon come first in
        # (tx_id, seq) order), but it always walks the index: with both conditions in
        # one WHERE, a table without fresh statistics got a bitmap scan and a sort of
        # *every* row after the position, for each page, so reading a log from the
        # start grew with the square of its length.
        self.read_all_page = sql.SQL(
            """SELECT {cols} FROM (
                   SELECT * FROM {events}
                   WHERE (tx_id, seq) > (%s::text::xid8, %s){shown}
                   ORDER BY tx_id, seq
                   LIMIT %s
               ) AS page
               WHERE {visible}
               ORDER BY tx_id, seq"""
        ).format(
            cols=cols, events=events, visible=visible,
            shown=visible_row(self.schema, "eskit_events") if version >= 6 else sql.SQL(""),
        )
        self._filtered_parts = (
            events, cols,
            visible_row(self.schema, "eskit_events") if version >= 6 else sql.SQL(""),
        )
        self.head_position = sql.SQL(
            """SELECT tx_id::text AS tx_text, seq FROM {events}
               WHERE {visible}
               ORDER BY tx_id DESC, seq DESC LIMIT 1"""
        ).format(events=events, visible=visible)
        if version >= 6:
            # A hard delete of the newest events must not take the head back.
            self.head_position = sql.SQL(
                """SELECT tx_id::text AS tx_text, seq FROM (
                       ({head})
                       UNION ALL
                       (SELECT tx_id, seq FROM {schema}.eskit_deleted_streams
                        WHERE hard ORDER BY tx_id DESC, seq DESC LIMIT 1)
                   ) AS heads ORDER BY tx_id DESC, seq DESC LIMIT 1"""
            ).format(
                head=sql.SQL(
                    """SELECT tx_id, seq FROM {events} WHERE {visible}
                       ORDER BY tx_id DESC, seq DESC LIMIT 1"""
                ).format(events=events, visible=visible),
                schema=sql.Identifier(self.schema),
            )

    def filtered_page(
        self, wanted: ReadFilter, after: int, upto: int, limit: int
    ) -> tuple[sql.Composed, list[Any]]:
        """One filtered page of events with ``after < position <= upto`` (see
        eskit.stores.postgres_filtered: ``upto`` is a head, no horizon cut)."""
        if self.version < PARTITION_SCHEMA_VERSION:  # no stream_hash: tested in Python
            wanted = wanted.unpartitioned()
        return filtered_page_query(
            *self._filtered_parts, wanted, unpack_position(after), unpack_position(upto), limit
        )

    @property
    def insert_flags(self) -> dict[str, bool]:
        """What an append statement built for this schema writes besides the events
        (``append_statement``'s keywords)."""
        return {"chained": self.version >= CHAIN_SCHEMA_VERSION,
                "hashed": self.version >= PARTITION_SCHEMA_VERSION}

    def payload_threshold(self, threshold: int | None) -> int | None:
        """The store's ``compress_threshold``, or ``None`` on a schema before 5."""
        return threshold if self.version >= 5 else None

    def read_stream(
        self, stream: str, from_version: int, to_version: int | None, backwards: bool,
        limit: int | None, *, tagged: bool = False,
    ) -> tuple[sql.Composed, list[Any]]:
        """A stream read; ``tagged`` (the DCB schema on): each row ends with its tags."""
        query = self._read_stream_tagged if tagged else self._read_stream
        params: list[Any] = [stream, from_version]
        if to_version is not None:
            query = sql.SQL("{} AND version <= %s").format(query)
            params.append(to_version)
        query = sql.SQL("{} ORDER BY version DESC" if backwards else "{} ORDER BY version").format(
            query
        )
        if limit is not None:
            query = sql.SQL("{} LIMIT %s").format(query)
            params.append(limit)
        return query, params


# An append with ANY or STREAM_EXISTS that loses a race for the next version tries
# again at the new head, holding the stream's advisory lock (Statements.lock_stream):
# it can then lose only to a writer that bypasses eskit (raw SQL). Reaching this
# bound is a StoreBusyError, never a ConcurrencyError.
MAX_APPEND_ATTEMPTS = 1000

NOTIFY_INTERVAL = 0.005
"""Seconds between two NOTIFYs: appends in between share one wake-up."""

EVENT_ID_CONSTRAINT = "eskit_events_event_id"
"""The unique constraint on event ids (see the first migration in ``Statements``)."""


# The decisions of setup and append, written once for the sync and async stores.


def check_server_version(server_version: int) -> None:
    if server_version < MIN_SERVER_VERSION:
        raise StoreError(f"eskit needs PostgreSQL 13 or newer, the server is {server_version}")


def pending_migrations(statements: Statements, current: int) -> list[sql.Composed]:
    """The statements that take a schema from version ``current`` to the newest."""
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"schema {statements.schema!r} has eskit schema version {current}; this eskit "
            f"knows only up to {SCHEMA_VERSION}: upgrade eskit"
        )
    return [s for target in range(current, SCHEMA_VERSION) for s in statements.migrations[target]]


def too_busy(stream: str) -> StoreBusyError:
    return StoreBusyError(
        f"append to stream {stream!r} lost the race for the next version "
        f"{MAX_APPEND_ATTEMPTS} times in a row; nothing was written"
    )


def inserted_result(
    stream_id: StreamId, batch: Sequence[PendingEvent], rows: Sequence[Any]
) -> AppendResult | None:
    """The result of the append statement; ``None`` if its expectation did not hold.

    The statement returns one row per inserted event, ``(head, version, tx, seq)``,
    or a single row ``(head, NULL, NULL, NULL)`` when it inserted nothing.
    """
    if rows[0][1] is None:
        return None
    events = tuple(
        p.recorded(stream_id, version, pack_position(tx, seq))
        for p, (_, version, tx, seq) in zip(batch, rows, strict=True)
    )
    return AppendResult(stream_id, events[-1].version, events[-1].position or 0, events)


def retry_after_lost_race(expected: Expected, found: dict[UUID, Event]) -> bool:
    """Whether an append that lost the race for the next version should try again.

    Only appends that do not name a version (``ANY``, ``STREAM_EXISTS``) and
    whose events are not stored yet simply go again at the new head; anything
    else is decided by :func:`~eskit.stores.arguments.resolve_conflict`.
    """
    return not found and (expected is ANY or expected is STREAM_EXISTS)


def append_params(
    stream: str, expected: Expected, batch: list[PendingEvent],
    compress_threshold: int | None = DEFAULT_COMPRESS_THRESHOLD,
) -> dict[str, Any]:
    lo, hi = expected_range(expected)
    stored = [stored_data(p.data, compress_threshold) for p in batch]
    return {
        "stream": stream,
        "ids": [p.event_id for p in batch],
        "types": [p.event_type for p in batch],
        "schema_versions": [p.schema_version for p in batch],
        "recorded": [p.timestamp for p in batch],
        # Each event's payload goes in one of the two columns, the other is NULL.
        "data": [d if type(d) is str else None for d in stored],
        "zdata": [d if type(d) is bytes else None for d in stored],
        "meta": [p.metadata.decode() for p in batch],
        "lo": lo,
        "hi": hi,
        "digests": digests(stream, batch),
        "stream_hash": stream_hash(stream),
        **dcb_params(batch),
    }


def streams_page_params(prefix: str, after: str | None, limit: int) -> dict[str, Any]:
    """The parameters of ``streams_page`` (sync and async stores share them)."""
    return {"after": after, "prefix": prefix, "upper": prefix_upper_bound(prefix) if prefix
            else None, "limit": limit}


def stream_infos(rows: list[Any]) -> list[StreamInfo]:
    return [
        StreamInfo(stream_id_from_key(s), v, pack_position(tx, seq), at.astimezone(UTC))
        for s, v, tx, seq, at in rows
    ]


def transaction_age(row: Any) -> float:
    """The result of ``oldest_transaction_age``; refuses to report a blocker it cannot time.

    Raises :class:`~eskit.StoreError` when a transaction holds readers back but the
    role may not see when it began: without ``pg_read_all_stats`` (or ``pg_monitor``,
    which includes it) PostgreSQL hides other roles' ``xact_start``, and a 0 would
    claim that nothing blocks readers.
    """
    if row is None:
        return 0.0
    if row[1]:
        raise StoreError(
            f"{row[1]} open transaction(s) of other roles hold readers back, but this role "
            "cannot see when they began: GRANT pg_read_all_stats (or pg_monitor) TO it "
            "to use oldest_transaction_age()"
        )
    return float(row[0])
