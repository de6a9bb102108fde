"""The PostgreSQL baseline: the same work done by hand with psycopg 3.

One autocommit connection and one reused cursor per store; statements are
rendered to text once, and psycopg prepares them on the server after their
fifth execution (its default ``prepare_threshold``). The table has the same
shape as eskit's (see :func:`create_table`), in the same schema as eskit's
tables. No validation, no codec tags (the amount is stored as a plain JSON
string), no event objects, no NOTIFY.

* command: ``SELECT max(version)`` then one ``INSERT`` at head + 1, each its
  own implicit transaction (the primary key refuses a lost race);
* batch: ``BEGIN``, read and check the head, one ``INSERT ... SELECT FROM
  unnest(...)`` of the whole batch (measured faster than ``executemany``),
  its arrays sent in binary as eskit sends them (psycopg escapes each element
  of a text-format array with a regular expression), ``COMMIT``;
* reads: the same columns as eskit selects, JSON decoded with ``orjson``;
  ``read_all`` pages of 1,000 by (tx_id, seq) with the same visibility rule as
  eskit (only transactions below the snapshot's xmin), with eskit's page query
  (see the README), one page after another.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import orjson
import psycopg
from psycopg import sql

from benchmarks.model import EVENT_TYPE, fold_rows

__all__ = ["RawPostgres", "create_table"]

TABLE = """CREATE TABLE {table} (
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    recorded_at    timestamptz NOT NULL,
    data           json        NOT NULL,
    metadata       json        NOT NULL,
    PRIMARY KEY (stream_id, version)
)"""
ORDER_INDEX = "CREATE INDEX ON {table} (tx_id, seq)"
# The text form of tx_id gets another name: ORDER BY tx_id must mean the xid8 column
# (an output column of the same name would win, and sort as text).
COLUMNS = (
    "tx_id::text AS tx, seq, event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data::text, metadata::text"
)
HEAD = "SELECT coalesce(max(version), 0) FROM {table} WHERE stream_id = %s"
INSERT_ONE = (
    "INSERT INTO {table} (event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data, metadata) VALUES (%s, %s, %s, %s, 1, %s, %s, %s)"
)
INSERT_BATCH = (
    "INSERT INTO {table} (event_id, stream_id, version, event_type, schema_version, "
    "recorded_at, data, metadata) "
    "SELECT u.event_id, %s, u.version, %s, 1, %s, u.data::json, %s::json "
    "FROM unnest(%b::uuid[], %b::bigint[], %b::text[]) AS u(event_id, version, data)"
)
READ_STREAM = (
    f"SELECT {COLUMNS} FROM {{table}} WHERE stream_id = %s AND version > %s ORDER BY version"
)
READ_ALL_PAGE = (
    # eskit's page query: the first rows after the position, cut at the snapshot's xmin.
    f"SELECT {COLUMNS} FROM (SELECT * FROM {{table}} WHERE (tx_id, seq) > (%s::text::xid8, %s) "
    "ORDER BY tx_id, seq LIMIT %s) AS page "
    "WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id, seq"
)
UNREADABLE = (
    "SELECT count(*) FROM {table} WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())"
)
STORED = "SELECT count(*) FROM {table} WHERE stream_id = ANY(%s)"
PAGE_SIZE = 1000
"""Rows per ``read_all`` page, as eskit's ``read_all``."""

Row = tuple[str, int, Any, str, int, str, int, datetime, dict[str, Any], dict[str, Any]]


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.raw_events").format(sql.Identifier(schema))


def create_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the raw events table (and its ordering index) in ``schema``."""
    for statement in (TABLE, ORDER_INDEX):
        conn.execute(sql.SQL(statement).format(table=_table(schema)))


class RawPostgres:
    """An autocommit connection to the raw table in ``schema``."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.cur = self.conn.cursor()
        table = _table(schema).as_string(self.conn)
        self.head, self.insert_one, self.insert_batch, self.read_stream_sql = (
            q.format(table=table) for q in (HEAD, INSERT_ONE, INSERT_BATCH, READ_STREAM)
        )
        self.read_all_page, self.unreadable, self.stored_sql = (
            q.format(table=table) for q in (READ_ALL_PAGE, UNREADABLE, STORED)
        )

    def command(self, stream: str, amount: Decimal) -> None:
        """Read the stream's head, then insert one deposit at the next version."""
        cur = self.cur
        head = cur.execute(self.head, (stream,)).fetchone()[0]  # type: ignore[index]
        cur.execute(self.insert_one, (
            uuid4(), stream, head + 1, EVENT_TYPE, datetime.now(UTC),
            orjson.dumps({"amount": str(amount)}).decode(), "{}",
        ))

    def append(self, stream: str, expected: int, amounts: Sequence[Decimal]) -> None:
        """Append one deposit per amount, in one transaction, if the stream is at ``expected``."""
        cur = self.cur
        with self.conn.transaction():
            head = cur.execute(self.head, (stream,)).fetchone()[0]  # type: ignore[index]
            if head != expected:
                raise RuntimeError(f"stream {stream!r} is at {head}, expected {expected}")
            cur.execute(self.insert_batch, (
                stream, EVENT_TYPE, datetime.now(UTC), "{}",
                [uuid4() for _ in amounts], list(range(head + 1, head + len(amounts) + 1)),
                [orjson.dumps({"amount": str(a)}).decode() for a in amounts],
            ))

    def _read_stream(self, stream: str) -> list[Row]:
        rows = self.cur.execute(self.read_stream_sql, (stream, 0)).fetchall()
        loads = orjson.loads
        return [
            (tx, seq, e, s, v, t, sv, at, loads(d), loads(m))
            for tx, seq, e, s, v, t, sv, at, d, m in rows
        ]

    def read_stream(self, stream: str) -> tuple[int, int]:
        rows = self._read_stream(stream)
        return len(rows), rows[-1][4]

    def load_balance(self, stream: str) -> tuple[int, Decimal]:
        """The raw equivalent of ``Repository.get``: read, decode, fold the state."""
        return fold_rows(self._read_stream(stream), version=4, data=8)

    def read_all(self) -> tuple[int, str, int]:
        """Page through every event in (tx_id, seq) order; (count, last stream, last version)."""
        cur, loads, query = self.cur, orjson.loads, self.read_all_page
        after_tx, after_seq, count = "0", 0, 0
        row: Row | None = None
        while True:
            rows = cur.execute(query, (after_tx, after_seq, PAGE_SIZE)).fetchall()
            for tx, seq, e, s, v, t, sv, at, d, m in rows:
                row = (tx, seq, e, s, v, t, sv, at, loads(d), loads(m))
                count += 1
            if len(rows) < PAGE_SIZE:
                break
            after_tx, after_seq = rows[-1][0], rows[-1][1]
        assert row is not None
        return count, row[3], row[4]

    def stored(self, streams: Sequence[str]) -> int:
        return int(self.cur.execute(self.stored_sql, (list(streams),)).fetchone()[0])  # type: ignore[index]

    def wait_readable(self, timeout: float = 120.0) -> None:
        """Wait until every stored row is below the snapshot xmin (visible to read_all)."""
        deadline = time.monotonic() + timeout
        while self.cur.execute(self.unreadable).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() > deadline:
                raise RuntimeError("an open transaction elsewhere holds read_all back")
            time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()
