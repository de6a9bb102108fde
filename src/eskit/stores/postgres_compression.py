"""Schema 5: compressed payloads, and the one rewrite of a stored event it allows.

SQL only, no I/O. A payload is in ``data`` (json) or, compressed, in ``data_zstd``
(bytea, a zstd frame: see :mod:`eskit.stores.compression`), never both (a CHECK
constraint, added NOT VALID so that the migration does not scan the table; it is
enforced for every insert and update all the same). ADD COLUMN without a default
and DROP NOT NULL rewrite nothing.

The append-only trigger still refuses every UPDATE and DELETE, except an UPDATE
in a transaction that set :data:`COMPACTING` (only :func:`eskit.compact` does),
and then a row trigger lets through only the change of a json payload into a
frame, every other column unchanged. PostgreSQL cannot decompress in SQL, so
that the frame holds the same bytes is checked by the compact path, on the row
as stored (``RETURNING``), before it commits. What this does not stop: a role
that owns the table can set the flag by hand (it can also drop the trigger).
"""

from __future__ import annotations

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

__all__ = ["COMPACTING", "CompactStatements", "compression_migration"]

COMPACTING = "eskit.compacting"
"""The transaction-local setting under which the triggers admit a compaction."""


def compression_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 4 -> 5 for ``schema`` (already validated)."""
    s = sql.Identifier(schema)
    events = sql.SQL("{}.eskit_events").format(s)
    return [
        sql.SQL(
            "ALTER TABLE {events} ADD COLUMN data_zstd bytea, ALTER COLUMN data DROP NOT NULL"
        ).format(events=events),
        # A frame does not compress again: TOAST may move a large one out of line but
        # should not spend pglz on it.
        sql.SQL("ALTER TABLE {events} ALTER COLUMN data_zstd SET STORAGE EXTERNAL").format(
            events=events
        ),
        sql.SQL(
            "ALTER TABLE {events} ADD CONSTRAINT eskit_events_one_payload"
            " CHECK ((data IS NULL) <> (data_zstd IS NULL)) NOT VALID"
        ).format(events=events),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_refuse_change() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF TG_OP = 'UPDATE' AND current_setting({flag}, true) = 'on' THEN
                       RETURN NULL;  -- eskit_check_compact checks each row
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only';
               END $$"""
        ).format(schema=s, flag=sql.Literal(COMPACTING)),
        sql.SQL(
            """CREATE FUNCTION {schema}.eskit_check_compact() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   IF current_setting({flag}, true) = 'on'
                      AND NEW.tx_id = OLD.tx_id AND NEW.seq = OLD.seq
                      AND NEW.event_id = OLD.event_id AND NEW.stream_id = OLD.stream_id
                      AND NEW.version = OLD.version AND NEW.event_type = OLD.event_type
                      AND NEW.schema_version = OLD.schema_version
                      AND NEW.recorded_at = OLD.recorded_at
                      AND NEW.metadata::text = OLD.metadata::text
                      AND NEW.writer_xid IS NOT DISTINCT FROM OLD.writer_xid
                      AND OLD.data IS NOT NULL AND NEW.data IS NULL
                      AND substring(NEW.data_zstd FROM 1 FOR 4) = '\\x28b52ffd'::bytea
                   THEN
                       RETURN NEW;
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only: compaction may only'
                       ' replace a json payload by a zstd frame of it';
               END $$"""
        ).format(schema=s, flag=sql.Literal(COMPACTING)),
        sql.SQL(
            """CREATE TRIGGER eskit_events_compact_only BEFORE UPDATE ON {events}
               FOR EACH ROW EXECUTE FUNCTION {schema}.eskit_check_compact()"""
        ).format(events=events, schema=s),
    ]


class CompactStatements:
    """What :func:`eskit.compact` runs on a PostgreSQL store, for one schema."""

    def __init__(self, schema: str) -> None:
        events = sql.SQL("{}.eskit_events").format(sql.Identifier(schema))
        self.start = sql.SQL("SELECT set_config({}, 'on', true)").format(sql.Literal(COMPACTING))
        # In (tx_id, seq) order from a cursor, so a rerun goes on where it stopped
        # and the pass walks the order index once. FOR UPDATE: no other compaction
        # rewrites the same rows meanwhile.
        # tx_id's text under another name: an output column called tx_id would make
        # ORDER BY sort the text ("100000" before "99999": pages out of order, rows
        # passed over, and a sort of the whole table for each page).
        self.candidates = sql.SQL(
            """SELECT tx_id::text AS tx_text, seq, data::text AS data_text FROM {events}
               WHERE (tx_id, seq) > (%s::text::xid8, %s) AND data IS NOT NULL
                 AND recorded_at < %s AND octet_length(data::text) >= %s
               ORDER BY tx_id, seq LIMIT %s FOR UPDATE"""
        ).format(events=events)
        self.count = sql.SQL(
            """SELECT count(*) FROM {events}
               WHERE data IS NOT NULL AND recorded_at < %s AND octet_length(data::text) >= %s"""
        ).format(events=events)
        self.rewrite = sql.SQL(
            """UPDATE {events} SET data = NULL, data_zstd = %s
               WHERE tx_id = %s::text::xid8 AND seq = %s AND data::text = %s
               RETURNING data_zstd"""
        ).format(events=events)
