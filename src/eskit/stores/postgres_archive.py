"""Schema 10: archived streams on PostgreSQL (SQL only, no I/O).

An archived stream's events were moved to a segment (see :mod:`eskit.archive`)
and removed from ``eskit_events``; its row in ``eskit_archived_streams`` names
the archive and the segment. As for deletes, the append-only statement trigger
refuses every DELETE outside a transaction that set
:data:`~eskit.stores.postgres_deletion.DELETING`, and the row trigger now also
lets an event go if its stream has an archive row, which the same transaction
wrote first. The insert trigger refuses an event of an archived stream with
SQLSTATE :data:`STREAM_ARCHIVED`; a restore drops the archive row first, in the
transaction that puts the events back at their original ``(tx_id, seq)``.
What this does not stop: a role that owns the tables (see
eskit.stores.postgres_deletion).
"""

from __future__ import annotations

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.stores.postgres_deletion import DELETING, STREAM_DELETED

__all__ = ["ARCHIVE_SCHEMA", "STREAM_ARCHIVED", "ArchiveStatements", "archive_migration"]

ARCHIVE_SCHEMA = 10
"""The first schema version with archived streams."""

STREAM_ARCHIVED = "ESK03"
"""The SQLSTATE of an insert into an archived stream, refused by the trigger."""


def archive_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 9 -> 10 for ``schema`` (already validated); each
    can run again (a schema moved back to an older version number still migrates)."""
    s = sql.Identifier(schema)
    deleted = sql.SQL("{}.eskit_deleted_streams").format(s)
    truncated = sql.SQL("{}.eskit_truncated_streams").format(s)
    archived = sql.SQL("{}.eskit_archived_streams").format(s)
    return [
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {archived} (
                   stream_id   text        PRIMARY KEY,
                   archive     text        NOT NULL,  -- where (a directory, a URL)
                   segment     text        NOT NULL,  -- the segment holding the events
                   version     bigint      NOT NULL,  -- the stream's head when archived
                   first_pos   numeric     NOT NULL,  -- positions (tx_id << 64 | seq)
                   last_pos    numeric     NOT NULL,
                   events      bigint      NOT NULL,
                   archived_at timestamptz NOT NULL
               )"""
        ).format(archived=archived),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_check_delete() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF current_setting({deleting}, true) = 'on' AND (
                       EXISTS (SELECT FROM {deleted} WHERE stream_id = OLD.stream_id AND hard)
                       OR EXISTS (SELECT FROM {archived} WHERE stream_id = OLD.stream_id)
                       OR EXISTS (SELECT FROM {truncated} WHERE stream_id = OLD.stream_id
                                  AND OLD.version < first_version))
                   THEN
                       RETURN OLD;
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only: only a hard-deleted or'
                       ' archived stream''s events, or a truncated one''s below its cut,'
                       ' may be removed';
               END $$"""
        ).format(schema=s, deleting=sql.Literal(DELETING), deleted=deleted,
                 truncated=truncated, archived=archived),
        # The same statement trigger as deletion's (after the insert, a fresh snapshot):
        # one query per check, over the inserted rows only.
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_refuse_deleted() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF EXISTS (SELECT FROM eskit_new_rows n JOIN {deleted} d
                              ON d.stream_id = n.stream_id) THEN
                       RAISE EXCEPTION USING ERRCODE = {deleted_state},
                           MESSAGE = 'eskit: the stream is deleted';
                   END IF;
                   IF EXISTS (SELECT FROM eskit_new_rows n JOIN {archived} a
                              ON a.stream_id = n.stream_id) THEN
                       RAISE EXCEPTION USING ERRCODE = {archived_state},
                           MESSAGE = 'eskit: the stream is archived';
                   END IF;
                   RETURN NULL;
               END $$"""
        ).format(schema=s, deleted=deleted, archived=archived,
                 deleted_state=sql.Literal(STREAM_DELETED),
                 archived_state=sql.Literal(STREAM_ARCHIVED)),
    ]


class ArchiveStatements:
    """What archiving, restoring and the archived checks run, for one schema."""

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        events = sql.SQL("{}.eskit_events").format(s)
        archived = sql.SQL("{}.eskit_archived_streams").format(s)
        self.where = sql.SQL(
            "SELECT archive, segment FROM {} WHERE stream_id = %s"
        ).format(archived)
        # Every column as stored; the position packed as eskit shows it. Before schema
        # 11 (no hash chains) the rows carry no hash.
        rows = """SELECT (tx_id::text::numeric * 18446744073709551616 + seq)::text,
                      uuid_send(event_id), stream_id, version, event_type, schema_version,
                      ((extract(epoch FROM recorded_at) * 1000000)::numeric)::bigint,
                      data::text, data_zstd, metadata::text, {hash}
               FROM {events} WHERE stream_id = %s ORDER BY version"""
        self.rows = sql.SQL(rows).format(hash=sql.SQL("hash"), events=events)
        self.rows_unchained = sql.SQL(rows).format(hash=sql.SQL("NULL::bytea"), events=events)
        # The stream's DCB tags, by packed position, in their order (from schema 8).
        self.tags = sql.SQL(
            """SELECT (t.tx_id::text::numeric * 18446744073709551616 + t.seq)::text, t.tag
               FROM {} e JOIN {}.eskit_event_tags t ON t.tx_id = e.tx_id AND t.seq = e.seq
               WHERE e.stream_id = %s ORDER BY t.tx_id, t.seq, t.ord"""
        ).format(events, s)
        self.insert_tag = sql.SQL(
            "INSERT INTO {}.eskit_event_tags (tag, tx_id, seq, ord, event_type) "
            "VALUES (%s, %s::text::xid8, %s, %s, %s)"
        ).format(s)
        self.older_than = sql.SQL(
            """SELECT stream_id FROM {events} e
               WHERE NOT EXISTS (SELECT FROM {schema}.eskit_deleted_streams d
                                 WHERE d.stream_id = e.stream_id)
                 AND (%(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s))
               GROUP BY stream_id HAVING max(recorded_at) < %(cutoff)s
               ORDER BY stream_id"""
        ).format(events=events, schema=s)
        self.state = sql.SQL(
            """SELECT (SELECT count(*) FROM {events} WHERE stream_id = %(s)s),
                      (SELECT coalesce(max(version), 0) FROM {events} WHERE stream_id = %(s)s),
                      EXISTS (SELECT FROM {schema}.eskit_deleted_streams WHERE stream_id = %(s)s),
                      (SELECT segment FROM {archived} WHERE stream_id = %(s)s)"""
        ).format(events=events, schema=s, archived=archived)
        self.record = sql.SQL(
            """INSERT INTO {} (stream_id, archive, segment, version, first_pos, last_pos,
                               events, archived_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, now())"""
        ).format(archived)
        self.remove_events = sql.SQL("DELETE FROM {} WHERE stream_id = %s").format(events)
        self.remove_snapshots = sql.SQL(
            "DELETE FROM {}.eskit_snapshots WHERE stream_id = %s"
        ).format(s)
        self.listed = sql.SQL(
            "SELECT stream_id, segment FROM {} ORDER BY stream_id"
        ).format(archived)
        self.unrecord = sql.SQL(
            "DELETE FROM {} WHERE stream_id = %s AND segment = %s"
        ).format(archived)
        # Explicit tx_id and seq: the rows go back at their original positions.
        # writer_xid NULL: as an ordinary (not late) append stored them. From schema 11
        # the chain hash goes back with the row, so the stream verifies as before.
        insert = """INSERT INTO {events} (tx_id, seq, event_id, stream_id, version, event_type,
                                   schema_version, recorded_at, data, data_zstd, metadata,
                                   writer_xid{hash_column})
               OVERRIDING SYSTEM VALUE
               VALUES (%s::text::xid8, %s, %s, %s, %s, %s, %s,
                       'epoch'::timestamptz + %s * interval '1 microsecond',
                       %s::json, %s, %s::json, NULL{hash_value})"""
        self.insert_hashed = sql.SQL(insert).format(  # schema 12 on: and the stream_hash
            events=events, hash_column=sql.SQL(", hash, stream_hash"),
            hash_value=sql.SQL(", %s, %s"))
        self.insert = sql.SQL(insert).format(
            events=events, hash_column=sql.SQL(", hash"), hash_value=sql.SQL(", %s"))
        self.insert_unchained = sql.SQL(insert).format(
            events=events, hash_column=sql.SQL(""), hash_value=sql.SQL(""))
        self.totals = sql.SQL(
            "SELECT count(*), coalesce(sum(events), 0) FROM {}"
        ).format(archived)
