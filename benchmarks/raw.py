"""The baseline: the same work done by hand with the standard ``sqlite3`` driver.

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

from benchmarks.model import EVENT_TYPE

__all__ = ["RawStore"]

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


class RawStore:
    """One connection to a file (WAL) or ``":memory:"`` database."""

    def __init__(self, path: str, synchronous: str | None) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        if synchronous is not None:
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute(SCHEMA)

    def append(self, stream: str, expected: int, amounts: Sequence[Decimal]) -> int:
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
        return head + len(amounts)

    def read_stream(self, stream: str) -> list[Row]:
        rows = self.conn.execute(READ_STREAM, (stream, 0)).fetchall()
        loads = orjson.loads
        return [(p, e, s, v, t, at, loads(d), loads(m)) for p, e, s, v, t, at, d, m in rows]

    def load_balance(self, stream: str) -> tuple[int, Decimal]:
        """The raw equivalent of ``Repository.get``: read, decode, fold the state."""
        version, balance = 0, Decimal(0)
        for row in self.read_stream(stream):
            balance += Decimal(row[6]["amount"])
            version = row[3]
        return version, balance

    def read_all(self) -> tuple[int, int]:
        """Read every event in position order; return (count, last position)."""
        loads = orjson.loads
        count = last = 0
        for p, e, s, v, t, at, d, m in self.conn.execute(READ_ALL):
            row: Row = (p, e, s, v, t, at, loads(d), loads(m))
            count += 1
            last = row[0]
        return count, last

    def stored(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self.conn.close()
