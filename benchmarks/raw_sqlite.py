"""The SQLite baseline: the same work done by hand with the standard ``sqlite3`` driver.

Same table shape as eskit's (one row per event, a global integer position, a
unique event id, ``UNIQUE(stream_id, version)``, JSON text payloads encoded
with orjson), WAL and the same ``synchronous`` setting, one ``BEGIN IMMEDIATE``
transaction per append that reads the stream head first. No validation, no
codec tags (the amount is stored as a plain JSON string), no event objects.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import uuid4

import orjson

from benchmarks.model import EVENT_TYPE, fold_rows

__all__ = ["RawSQLite"]

SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY,
    event_id    BLOB    NOT NULL UNIQUE,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    UNIQUE (stream_id, version)
)"""
COLUMNS = "position, event_id, stream_id, version, type, recorded_at, data, metadata"
HEAD = "SELECT MAX(version) FROM events WHERE stream_id = ?"
INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, recorded_at, data, metadata) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
READ_STREAM = f"SELECT {COLUMNS} FROM events WHERE stream_id = ? AND version > ? ORDER BY version"
READ_ALL = f"SELECT {COLUMNS} FROM events ORDER BY position"

Row = tuple[int, bytes, str, int, str, int, dict[str, Any], dict[str, Any]]


class RawSQLite:
    """One connection to a file (WAL) or ``":memory:"`` database."""

    def __init__(self, path: str, synchronous: str | None) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        if synchronous is not None:
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute(SCHEMA)

    def append(self, stream: str, expected: int, amounts: Sequence[Decimal]) -> None:
        """Append one deposit per amount if the stream is at ``expected``."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            head = conn.execute(HEAD, (stream,)).fetchone()[0] or 0
            if head != expected:
                raise RuntimeError(f"stream {stream!r} is at {head}, expected {expected}")
            now = time.time_ns() // 1000
            meta = orjson.dumps({}).decode()
            conn.executemany(INSERT, [
                (uuid4().bytes, stream, head + i + 1, EVENT_TYPE, now,
                 orjson.dumps({"amount": str(a)}).decode(), meta)
                for i, a in enumerate(amounts)
            ])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def command(self, stream: str, amount: Decimal) -> None:
        """Read the stream's head, then append one deposit expecting that head."""
        head = self.conn.execute(HEAD, (stream,)).fetchone()[0] or 0
        self.append(stream, head, [amount])

    def _read_stream(self, stream: str) -> list[Row]:
        rows = self.conn.execute(READ_STREAM, (stream, 0)).fetchall()
        loads = orjson.loads
        return [(p, e, s, v, t, at, loads(d), loads(m)) for p, e, s, v, t, at, d, m in rows]

    def read_stream(self, stream: str) -> tuple[int, int]:
        rows = self._read_stream(stream)
        return len(rows), rows[-1][3]

    def load_balance(self, stream: str) -> tuple[int, Decimal]:
        """The raw equivalent of ``Repository.get``: read, decode, fold the state."""
        return fold_rows(self._read_stream(stream), version=3, data=6)

    def read_all(self) -> tuple[int, str, int]:
        """Read every event in position order; return (count, last stream, last version)."""
        loads = orjson.loads
        count = 0
        row: Row | None = None
        for p, e, s, v, t, at, d, m in self.conn.execute(READ_ALL):
            row = (p, e, s, v, t, at, loads(d), loads(m))
            count += 1
        assert row is not None
        return count, row[2], row[3]

    def stored(self, streams: Sequence[str]) -> int:
        marks = ", ".join("?" * len(streams))
        query = f"SELECT COUNT(*) FROM events WHERE stream_id IN ({marks})"
        return int(self.conn.execute(query, list(streams)).fetchone()[0])

    def wait_readable(self) -> None:
        pass  # a committed SQLite transaction is visible at once

    def close(self) -> None:
        self.conn.close()
