"""Schema 7: per-stream truncation on PostgreSQL (SQL only, no I/O).

A truncated stream has a row in ``eskit_truncated_streams`` holding the version
its events now start at. The append-only statement trigger still refuses every
DELETE except in a transaction that set
:data:`~eskit.stores.postgres_deletion.DELETING`, and the row trigger now also
lets an event go if its version is below its stream's ``first_version``, which
the same transaction wrote first. ``first_version`` only grows and the row
cannot be removed. The newest event of a stream is never removed
(eskit.stores.truncation), so every read path stays as it was. What this does
not stop: a role that owns the tables (see eskit.stores.postgres_deletion).
"""

from __future__ import annotations

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.stores.postgres_deletion import DELETING

__all__ = ["TRUNCATION_SCHEMA", "TruncationStatements", "truncation_migration"]

TRUNCATION_SCHEMA = 7
"""The first schema version with truncation."""


def truncation_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 6 -> 7 for ``schema`` (already validated)."""
    s = sql.Identifier(schema)
    deleted = sql.SQL("{}.eskit_deleted_streams").format(s)
    truncated = sql.SQL("{}.eskit_truncated_streams").format(s)
    return [
        sql.SQL(
            """CREATE TABLE {truncated} (
                   stream_id     text        PRIMARY KEY,
                   first_version bigint      NOT NULL,  -- the events below it were removed
                   truncated_at  timestamptz NOT NULL
               )"""
        ).format(truncated=truncated),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_check_delete() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF current_setting({deleting}, true) = 'on' AND (
                       EXISTS (SELECT FROM {deleted} WHERE stream_id = OLD.stream_id AND hard)
                       OR EXISTS (SELECT FROM {truncated} WHERE stream_id = OLD.stream_id
                                  AND OLD.version < first_version))
                   THEN
                       RETURN OLD;
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only: only a hard-deleted'
                       ' stream''s events, or a truncated one''s below its cut, may be removed';
               END $$"""
        ).format(schema=s, deleting=sql.Literal(DELETING), deleted=deleted,
                 truncated=truncated),
        sql.SQL(
            """CREATE FUNCTION {schema}.eskit_keep_truncation() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF TG_OP = 'DELETE' OR NEW.first_version < OLD.first_version THEN
                       RAISE EXCEPTION 'eskit truncations are permanent';
                   END IF;
                   RETURN NEW;
               END $$"""
        ).format(schema=s),
        sql.SQL(
            """CREATE TRIGGER eskit_truncations_stay BEFORE UPDATE OR DELETE ON {truncated}
               FOR EACH ROW EXECUTE FUNCTION {schema}.eskit_keep_truncation()"""
        ).format(truncated=truncated, schema=s),
    ]


class TruncationStatements:
    """What ``truncate_stream`` runs, for one schema (after DeletionStatements.start
    and the stream's exclusive lock)."""

    def write_for(self, version: int) -> sql.Composed:
        """The truncation record's write for a schema at ``version``."""
        return self.write_chained if version >= 10 else self.write

    def __init__(self, schema: str) -> None:
        s = sql.Identifier(schema)
        events = sql.SQL("{}.eskit_events").format(s)
        truncated = sql.SQL("{}.eskit_truncated_streams").format(s)
        # One round trip for what the decision needs: head, deleted state, first
        # version, newest snapshot.
        self.state = sql.SQL(
            """SELECT (SELECT coalesce(max(version), 0) FROM {events} WHERE stream_id = %(s)s),
                      (SELECT hard FROM {schema}.eskit_deleted_streams WHERE stream_id = %(s)s),
                      (SELECT first_version FROM {truncated} WHERE stream_id = %(s)s),
                      (SELECT max(version) FROM {schema}.eskit_snapshots
                       WHERE stream_id = %(s)s)"""
        ).format(events=events, schema=s, truncated=truncated)
        self.write = sql.SQL(
            """INSERT INTO {} (stream_id, first_version, truncated_at) VALUES (%s, %s, now())
               ON CONFLICT (stream_id) DO UPDATE
               SET first_version = excluded.first_version, truncated_at = excluded.truncated_at"""
        ).format(truncated)
        # Schema 10 on: with the hash of the newest event removed, which the chain of
        # the events left links to (eskit.stores.postgres_chain). Same parameters.
        self.write_chained = sql.SQL(
            """INSERT INTO {truncated} (stream_id, first_version, truncated_at, anchor)
               SELECT v.s, v.c, now(),
                      (SELECT e.hash FROM {events} AS e WHERE e.stream_id = v.s
                       AND e.version < v.c ORDER BY e.version DESC LIMIT 1)
               FROM (VALUES (%s::text, %s::bigint)) AS v(s, c)
               ON CONFLICT (stream_id) DO UPDATE
               SET first_version = excluded.first_version,
                   truncated_at = excluded.truncated_at, anchor = excluded.anchor"""
        ).format(truncated=truncated, events=events)
        self.remove_events = sql.SQL(
            "DELETE FROM {} WHERE stream_id = %s AND version < %s"
        ).format(events)
        self.remove_snapshots = sql.SQL(
            "DELETE FROM {}.eskit_snapshots WHERE stream_id = %s AND version < %s"
        ).format(s)
