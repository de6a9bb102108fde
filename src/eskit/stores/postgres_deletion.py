"""Schema 6: deleted streams and tombstones on PostgreSQL (SQL only, no I/O).

A deleted stream has a row in ``eskit_deleted_streams``: ``hard = false`` hides
its events from every read (restorable), ``hard = true`` is a tombstone. The
append-only statement trigger still refuses every DELETE except in a transaction
that set :data:`DELETING` (transaction-local; only ``delete_stream`` does), and a
row trigger then lets a row go only if its stream has a tombstone, which the same
transaction wrote first. A tombstone can be neither removed nor made soft again.
What this does not stop: a role that owns the tables can set the flag by hand
(it can also drop the triggers). See docs/storage.md.
"""

from __future__ import annotations

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.stores.postgres_compression import COMPACTING

__all__ = [
    "DELETING", "STREAM_DELETED", "DeletionStatements", "deletion_migration", "visible_row",
    "visible_stream",
]

DELETING = "eskit.deleting"
"""The transaction-local setting under which the triggers admit a hard delete."""

STREAM_DELETED = "ESK02"
"""The SQLSTATE of an insert into a deleted stream, refused by the trigger."""


def deletion_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 5 -> 6 for ``schema`` (already validated)."""
    s = sql.Identifier(schema)
    events = sql.SQL("{}.eskit_events").format(s)
    deleted = sql.SQL("{}.eskit_deleted_streams").format(s)
    return [
        sql.SQL(
            """CREATE TABLE {deleted} (
                   stream_id  text        PRIMARY KEY,
                   hard       boolean     NOT NULL,
                   version    bigint      NOT NULL,  -- the stream's head when deleted
                   tx_id      xid8        NOT NULL,  -- its last event's position
                   seq        bigint      NOT NULL,  --   ('0', 0: none)
                   deleted_at timestamptz NOT NULL
               )"""
        ).format(deleted=deleted),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_refuse_change() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF TG_OP = 'UPDATE' AND current_setting({compacting}, true) = 'on' THEN
                       RETURN NULL;  -- eskit_check_compact checks each row
                   END IF;
                   IF TG_OP = 'DELETE' AND current_setting({deleting}, true) = 'on' THEN
                       RETURN NULL;  -- eskit_check_delete checks each row
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only';
               END $$"""
        ).format(schema=s, compacting=sql.Literal(COMPACTING), deleting=sql.Literal(DELETING)),
        sql.SQL(
            """CREATE FUNCTION {schema}.eskit_check_delete() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF current_setting({deleting}, true) = 'on' AND EXISTS (
                       SELECT FROM {deleted} WHERE stream_id = OLD.stream_id AND hard)
                   THEN
                       RETURN OLD;
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only: only a hard-deleted'
                       ' stream''s events may be removed';
               END $$"""
        ).format(schema=s, deleting=sql.Literal(DELETING), deleted=deleted),
        sql.SQL(
            """CREATE TRIGGER eskit_events_delete_tombstoned BEFORE DELETE ON {events}
               FOR EACH ROW EXECUTE FUNCTION {schema}.eskit_check_delete()"""
        ).format(events=events, schema=s),
        # The append statement checks for a tombstone too, but with the snapshot it
        # took before waiting for the stream's lock, which a delete holds: an append
        # queued behind a hard delete would then store its event after it (a race test
        # caught one). This trigger runs after the insert, and its query takes a fresh
        # snapshot (READ COMMITTED), so it sees a delete that committed meanwhile.
        # Once per statement, over the inserted rows only.
        sql.SQL(
            """CREATE FUNCTION {schema}.eskit_refuse_deleted() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF EXISTS (SELECT FROM eskit_new_rows n JOIN {deleted} d
                              ON d.stream_id = n.stream_id) THEN
                       RAISE EXCEPTION USING ERRCODE = {sqlstate},
                           MESSAGE = 'eskit: the stream is deleted';
                   END IF;
                   RETURN NULL;
               END $$"""
        ).format(schema=s, deleted=deleted, sqlstate=sql.Literal(STREAM_DELETED)),
        sql.SQL(
            """CREATE TRIGGER eskit_events_not_deleted AFTER INSERT ON {events}
               REFERENCING NEW TABLE AS eskit_new_rows
               FOR EACH STATEMENT EXECUTE FUNCTION {schema}.eskit_refuse_deleted()"""
        ).format(events=events, schema=s),
        sql.SQL(
            """CREATE FUNCTION {schema}.eskit_keep_tombstone() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF OLD.hard THEN
                       RAISE EXCEPTION 'eskit tombstones are permanent';
                   END IF;
                   RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
               END $$"""
        ).format(schema=s),
        sql.SQL(
            """CREATE TRIGGER eskit_tombstones_stay BEFORE UPDATE OR DELETE ON {deleted}
               FOR EACH ROW EXECUTE FUNCTION {schema}.eskit_keep_tombstone()"""
        ).format(deleted=deleted, schema=s),
    ]


def visible_stream(schema: str, alias: str) -> sql.Composed:
    """`` AND NOT EXISTS (...)``: the row of ``alias`` is of a stream not deleted."""
    return sql.SQL(
        " AND NOT EXISTS (SELECT FROM {}.eskit_deleted_streams d WHERE d.stream_id = {}.stream_id)"
    ).format(sql.Identifier(schema), sql.Identifier(alias))


def visible_row(schema: str, alias: str) -> sql.Composed:
    """:func:`visible_stream` for the read_all page: a scalar subquery, which stays a
    per-row primary-key probe. NOT EXISTS became an anti join, and without fresh
    statistics the planner then read every row after the position for one page."""
    return sql.SQL(
        " AND coalesce((SELECT false FROM {}.eskit_deleted_streams d"
        " WHERE d.stream_id = {}.stream_id), true)"
    ).format(sql.Identifier(schema), sql.Identifier(alias))


class DeletionStatements:
    """What ``delete_stream`` and ``restore_stream`` run, for one schema."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        events = sql.SQL("{}.eskit_events").format(s)
        deleted = sql.SQL("{}.eskit_deleted_streams").format(s)
        self.start = sql.SQL("SELECT set_config({}, 'on', true)").format(sql.Literal(DELETING))
        self.state = sql.SQL(
            "SELECT hard, version, tx_id::text, seq FROM {} WHERE stream_id = %s"
        ).format(deleted)
        self.head = sql.SQL(
            """SELECT version, tx_id::text, seq FROM {} WHERE stream_id = %s
               ORDER BY version DESC LIMIT 1"""
        ).format(events)
        self.write = sql.SQL(
            """INSERT INTO {} (stream_id, hard, version, tx_id, seq, deleted_at)
               VALUES (%s, %s, %s, %s::text::xid8, %s, now())
               ON CONFLICT (stream_id) DO UPDATE
               SET hard = excluded.hard, deleted_at = excluded.deleted_at"""
        ).format(deleted)
        self.remove_events = sql.SQL("DELETE FROM {} WHERE stream_id = %s").format(events)
        self.remove_snapshots = sql.SQL(
            "DELETE FROM {}.eskit_snapshots WHERE stream_id = %s"
        ).format(s)
        self.restore = sql.SQL(
            "DELETE FROM {} WHERE stream_id = %s AND NOT hard"
        ).format(deleted)
