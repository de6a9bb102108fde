"""Schema 4: appends that come after other writes in their transaction (*late* appends).

SQL only, no I/O: the migration that takes an eskit PostgreSQL schema from version
3 to 4 (see :mod:`eskit.stores.postgres_schema` for the others, and docs/postgres.md,
"Appending in your transaction", for the proof).

A transaction that already has an id when it first inserts into the events table
gets a stamp no reader can have passed: max(its id, the latest id that has ended
once it holds the table lock). The trigger computes it and hands it to the column
defaults (evaluated after BEFORE STATEMENT triggers) through a transaction-local
setting; ``writer_xid`` records the real writer (NULL when it equals ``tx_id``) so
the horizon finds the rows once the writer has ended. ADD COLUMN without a default
and SET DEFAULT rewrite nothing; the partial index holds late rows only.
"""

from __future__ import annotations

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

__all__ = ["APPEND_NOT_FIRST_WRITE", "LATE_STAMP", "late_append_migration"]

APPEND_NOT_FIRST_WRITE = "ESK01"
"""The SQLSTATE of the trigger's refusal of an append it cannot order safely.

Since schema 4 only a *late* append (its transaction wrote elsewhere first) under
REPEATABLE READ or SERIALIZABLE isolation; see ``LATE_STAMP``."""
LATE_STAMP = "eskit.late_stamp"
"""The transaction-local setting through which the trigger hands a late append's
order key (``tx_id``) to the column defaults of the same statement."""


def late_append_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 3 -> 4 for ``schema`` (already validated)."""
    s = sql.Identifier(schema)
    events = sql.SQL("{}.eskit_events").format(s)
    return [
        sql.SQL("ALTER TABLE {events} ADD COLUMN writer_xid xid8").format(
            events=events
        ),
        sql.SQL(
            """ALTER TABLE {events}
               ALTER COLUMN tx_id SET DEFAULT coalesce(
                   nullif(current_setting({stamp}, true), '')::xid8,
                   pg_current_xact_id()),
               ALTER COLUMN writer_xid SET DEFAULT CASE
                   WHEN current_setting({stamp}, true) <> ''
                   THEN pg_current_xact_id() END"""
        ).format(events=events, stamp=sql.Literal(LATE_STAMP)),
        sql.SQL(
            "CREATE INDEX eskit_events_writer ON {events} (writer_xid)"
            " WHERE writer_xid IS NOT NULL"
        ).format(events=events),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_check_append() RETURNS trigger
               LANGUAGE plpgsql AS $$
               DECLARE
                   -- Never pg_current_xact_id() here: it would assign the id.
                   x xid8 := pg_current_xact_id_if_assigned();
                   v xid8;
               BEGIN
                   -- Every path sets the stamp the defaults read, so a value
                   -- left by anyone else (a SET by hand) never applies.
                   IF x IS NULL THEN
                       -- The usual append: its id is assigned after this
                       -- statement locked the table. Simple expressions only:
                       -- plpgsql runs them without the executor.
                       IF current_setting({stamp}, true) <> '' THEN
                           PERFORM set_config({stamp}, '', true);
                       END IF;
                       RETURN NULL;
                   END IF;
                   -- An earlier insert of this transaction stamped with its
                   -- own id (its lock is still held): keep that stamp.
                   IF EXISTS (SELECT FROM {events}
                              WHERE tx_id = x AND writer_xid IS NULL) THEN
                       IF current_setting({stamp}, true) <> '' THEN
                           PERFORM set_config({stamp}, '', true);
                       END IF;
                       RETURN NULL;
                   END IF;
                   -- A late append: its id predates the lock. Reuse the stamp
                   -- of an earlier late insert of this transaction, or take
                   -- one above every snapshot taken before the lock was.
                   SELECT tx_id INTO v FROM {events} WHERE writer_xid = x LIMIT 1;
                   IF v IS NULL THEN
                       IF current_setting('transaction_isolation')
                          <> 'read committed' THEN
                           RAISE EXCEPTION USING
                               ERRCODE = {sqlstate},
                               MESSAGE = 'eskit: under '
                                   || current_setting('transaction_isolation')
                                   || ' an append must be the first write'
                                   || ' of its transaction',
                               DETAIL = 'This transaction already holds'
                                   || ' transaction id ' || x || ' and its'
                                   || ' snapshot is older than the append;'
                                   || ' readers could skip events it appends.',
                               HINT = 'Use READ COMMITTED, or insert the'
                                   || ' events before writing anything else.';
                       END IF;
                       -- A new snapshot (READ COMMITTED), taken now that this
                       -- statement holds the table lock: its xmax - 1 is the
                       -- latest id that has ended. Every earlier snapshot's xmax
                       -- is at most one above it; rows of that id (or stamped
                       -- with it) that a reader can have returned were inserted
                       -- before now, so their seq is below this insert's. Not
                       -- xmax itself: no reader could pass it until some newer
                       -- id ends, which on an idle server may be never.
                       v := greatest(x, (pg_snapshot_xmax(pg_current_snapshot())
                                         ::text::bigint - 1)::text::xid8);
                   END IF;
                   PERFORM set_config({stamp}, CASE WHEN v = x THEN ''
                                                    ELSE v::text END, true);
                   RETURN NULL;
               END $$"""
        ).format(
            schema=s, events=events, stamp=sql.Literal(LATE_STAMP),
            sqlstate=sql.Literal(APPEND_NOT_FIRST_WRITE),
        ),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_read_horizon(snap pg_snapshot)
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
                       RETURN pg_snapshot_xmin(snap);  -- see schema 3
                   END IF;
                   SELECT array_agg(t.transactionid::text) INTO appending
                   FROM pg_locks AS r
                   JOIN pg_locks AS t ON t.virtualtransaction = r.virtualtransaction
                   WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock'
                     AND r.relation = {events_name}::regclass
                     AND r.database = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                     AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock'
                     AND t.granted;
                   FOR x IN SELECT * FROM pg_snapshot_xip(snap) ORDER BY 1 LOOP
                       IF (x::text::bigint % 4294967296)::text = ANY(appending) THEN
                           RETURN x;
                       END IF;
                       IF pg_xact_status(x) IS DISTINCT FROM 'in progress' THEN
                           IF NOT fresh THEN
                               RETURN x;  -- this transaction's snapshot is S itself
                           END IF;
                           -- Its events: stamped with its id, or late (stamped
                           -- above its id, found by their writer).
                           IF EXISTS (SELECT FROM {events} WHERE tx_id = x)
                              OR EXISTS (SELECT FROM {events} WHERE writer_xid = x)
                           THEN
                               RETURN x;
                           END IF;
                       END IF;
                   END LOOP;
                   RETURN pg_snapshot_xmax(snap);
               END $$"""
        ).format(
            schema=s, events=events, events_name=sql.Literal(f'"{schema}".eskit_events')
        ),
    ]
