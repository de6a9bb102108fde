"""The insert every PostgreSQL append statement shares (schema 5 on: ``data_zstd``).

One ``INSERT ... SELECT`` of the batch's arrays (sent in binary, ``%b``) at the
versions after ``head.v``, guarded by the expected-version range; the statements
of :mod:`eskit.stores.postgres_schema` and :mod:`eskit.stores.postgres_dcb` wrap it
in their own lock and head steps and choose what it returns.
"""

from __future__ import annotations

from psycopg import sql

__all__ = ["insert_batch"]


def insert_batch(events: sql.Composable, guard: sql.Composable,
                 returning: sql.Composable, *, chained: bool = False,
                 hashed: bool = False) -> sql.Composed:
    """The ``ins`` step: insert the batch after ``head.v`` where ``guard`` (more
    ``AND`` conditions, or empty) holds, returning ``returning``. ``chained``: each
    event's ``hash`` from the ``chain`` CTE (:mod:`eskit.stores.postgres_chain`);
    ``hashed`` (schema 12 on): the stream's ``stream_hash`` (:mod:`eskit.stores.partitions`)."""
    return sql.SQL(
        """INSERT INTO {events} (event_id, stream_id, version, event_type,
                                 schema_version, recorded_at, data, metadata,
                                 data_zstd{hash_column}{stream_hash_column})
           SELECT u.event_id, %(stream)s, head.v + u.ord, u.event_type,
                  u.schema_version, u.recorded_at, u.data::json, u.metadata::json,
                  u.zdata{hash_value}{stream_hash_value}
           FROM head{chain},
                unnest(%(ids)b::uuid[], %(types)b::text[], %(schema_versions)b::int[],
                       %(recorded)b::timestamptz[], %(data)b::text[], %(meta)b::text[],
                       %(zdata)b::bytea[])
                WITH ORDINALITY AS u(event_id, event_type, schema_version,
                                     recorded_at, data, metadata, zdata, ord)
           WHERE head.v BETWEEN %(lo)s AND %(hi)s{guard}{chain_match}
           ORDER BY u.ord
           RETURNING {returning}"""
    ).format(
        events=events, guard=guard, returning=returning,
        hash_column=sql.SQL(", hash" if chained else ""),
        hash_value=sql.SQL(", chain.h" if chained else ""),
        stream_hash_column=sql.SQL(", stream_hash" if hashed else ""),
        stream_hash_value=sql.SQL(", %(stream_hash)s::bigint" if hashed else ""),
        chain=sql.SQL(", chain" if chained else ""),
        chain_match=sql.SQL(" AND chain.ord = u.ord" if chained else ""),
    )
