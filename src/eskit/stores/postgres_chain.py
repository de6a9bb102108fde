"""Hash chains on PostgreSQL: migration 10 -> 11, the append's links, the verifier's rows.

The append stays one statement (one round trip): the client sends each event's
:func:`~eskit.integrity.content_digest` (``digests``), and the statement, which
reads the stream's head version anyway, also reads the head's hash and finishes
each link with PostgreSQL's own ``sha256``: ``sha256(previous || int8send(version)
|| digest)``, which is :func:`eskit.integrity.link_hash` of
:func:`eskit.integrity.event_bytes`. A batch's links are a recursive CTE over its
events in order. The stream's shared advisory lock and the primary key
``(stream_id, version)`` keep two appends from linking to the same head: the loser
of a race gets the unique violation it always got and retries at the new head.

Rows stored before this migration keep ``NULL`` ("unchained"); every event after
the newest one then is chained (``chained_after`` in ``eskit_meta``). A truncation
records the newest removed event's hash in ``eskit_truncated_streams.anchor``;
compaction's row trigger also keeps ``hash`` as it was. What ``verify_store`` reads is
in :mod:`eskit.stores.postgres_verify`.
"""

from __future__ import annotations

from psycopg import sql

from eskit.integrity import GENESIS
from eskit.stores.chain_links import digests
from eskit.stores.postgres_compression import COMPACTING

__all__ = ["CHAIN_SCHEMA_VERSION", "chain_migration", "digests"]

CHAIN_SCHEMA_VERSION = 11

_GENESIS = sql.SQL("'\\x{}'::bytea").format(sql.SQL(GENESIS.hex()))


def chain_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 10 -> 11 for ``schema`` (already validated)."""
    s = sql.Identifier(schema)
    events = sql.SQL("{}.eskit_events").format(s)
    return [
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS hash bytea").format(events),
        sql.SQL("ALTER TABLE {}.eskit_truncated_streams ADD COLUMN IF NOT EXISTS anchor bytea"
                ).format(s),
        # Every event after the newest one now gets a hash: a NULL there was removed.
        sql.SQL(
            """INSERT INTO {schema}.eskit_meta (key, value)
               SELECT 'chained_after', coalesce(
                   (SELECT tx_id::text || ':' || seq FROM {events}
                    ORDER BY tx_id DESC, seq DESC LIMIT 1), '0:0')
               ON CONFLICT (key) DO NOTHING"""
        ).format(schema=s, events=events),
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_check_compact() RETURNS trigger
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
                      AND NEW.hash IS NOT DISTINCT FROM OLD.hash
                      AND OLD.data IS NOT NULL AND NEW.data IS NULL
                      AND substring(NEW.data_zstd FROM 1 FOR 4) = '\\x28b52ffd'::bytea
                   THEN
                       RETURN NEW;
                   END IF;
                   RAISE EXCEPTION 'eskit events are append-only: compaction may only'
                       ' replace a json payload by a zstd frame of it';
               END $$"""
        ).format(schema=s, flag=sql.Literal(COMPACTING)),
    ]


def head_hash(events: sql.Composable) -> sql.Composed:
    """The ``head`` CTE's second column: the hash of the stream's newest event."""
    return sql.SQL(
        ", (SELECT hash FROM {} WHERE stream_id = %(stream)s ORDER BY version DESC LIMIT 1)"
        " AS h").format(events)


CHAIN_CTE = sql.SQL(
    """chain(ord, h) AS (
           SELECT 0::bigint, head.h FROM head
           UNION ALL
           SELECT c.ord + 1, sha256(coalesce(c.h, {genesis}) || int8send(head.v + c.ord + 1)
                                    || (%(digests)b::bytea[])[c.ord + 1])
           FROM chain AS c, head
           WHERE c.ord < cardinality(%(digests)b::bytea[])
       ), """
).format(genesis=_GENESIS)
"""The links of the batch: ``chain.h`` at ``ord`` n is the hash of the batch's n-th
event (``ord`` 0: the head's own hash). Goes before ``ins`` in a ``WITH RECURSIVE``."""
