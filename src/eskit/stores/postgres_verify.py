"""What ``verify_store`` reads from a PostgreSQL store (see :mod:`eskit.stores.verify`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from eskit.errors import StoreError
from eskit.stores.chain_check import ChainRow, StreamStart, stored_json
from eskit.stores.postgres_chain import CHAIN_SCHEMA_VERSION
from eskit.stores.postgres_connection import translate
from eskit.stores.postgres_schema import pack_position
from eskit.stores.rows import timestamp_to_micros

__all__ = ["postgres_rows"]


@contextmanager
def postgres_rows(store: Any, batch: int) -> Iterator[Any]:
    """What :func:`eskit.stores.verify.verify_store` reads from a PostgreSQL store, in
    one ``REPEATABLE READ`` read-only transaction (one snapshot for the whole check)."""
    if store.sql.version < CHAIN_SCHEMA_VERSION:
        raise StoreError(
            f"schema {store.schema} has eskit schema version {store.sql.version}; hash "
            f"chains need {CHAIN_SCHEMA_VERSION}: run `eskit migrate` first")
    s = sql.Identifier(store.schema)
    events = sql.SQL("{}.eskit_events").format(s)
    # The truncation record rides on each row (a probe of a small table's key), so the
    # rows can come in the primary key's order, whatever the database's collation.
    select = sql.SQL(
        """SELECT e.stream_id, e.version, e.tx_id::text, e.seq, e.event_id, e.event_type,
                  e.schema_version, e.recorded_at, e.data::text, e.data_zstd,
                  e.metadata::text, e.hash,
                  t.first_version, t.anchor
           FROM {events} AS e
           LEFT JOIN {schema}.eskit_truncated_streams AS t ON t.stream_id = e.stream_id
           {where} ORDER BY e.stream_id, e.version LIMIT %(limit)s""")
    first = select.format(events=events, schema=s, where=sql.SQL(""))
    after = select.format(events=events, schema=s, where=sql.SQL(
        "WHERE (e.stream_id, e.version) > (%(stream)s, %(version)s)"))
    try:
        with store._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            total = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(events)
                                     ).fetchone()[0])
            row = conn.execute(sql.SQL(
                "SELECT value FROM {}.eskit_meta WHERE key = 'chained_after'").format(s)
            ).fetchone()
            if row is None:
                chained_after = -1
            else:
                tx, _, seq = str(row[0]).partition(":")
                chained_after = pack_position(tx, int(seq))
            starts: dict[str, StreamStart] = {}

            def rows() -> Iterator[ChainRow]:
                page = conn.execute(first, {"limit": batch}).fetchall()
                while True:
                    for (stream, version, tx, seq, eid, etype, sv, at, data, zdata, meta, h,
                         first_version, anchor) in page:
                        if first_version is not None and stream not in starts:
                            starts.clear()  # only the current stream's is ever asked for
                            starts[stream] = StreamStart(
                                int(first_version), None if anchor is None else bytes(anchor))
                        yield ChainRow(stream, int(version), pack_position(tx, int(seq)),
                                       eid.bytes, etype, int(sv), timestamp_to_micros(at),
                                       stored_json(data if zdata is None else bytes(zdata)),
                                       meta.encode("utf-8", "surrogatepass"),
                                       None if h is None else bytes(h))
                    if len(page) < batch:
                        return
                    last = page[-1]
                    page = conn.execute(after, {"limit": batch, "stream": last[0],
                                                "version": last[1]}).fetchall()

            yield total, rows(), starts, chained_after
    except psycopg.Error as exc:
        raise translate(exc) from exc
