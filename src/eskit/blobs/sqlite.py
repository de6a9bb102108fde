"""Blobs in a table of the SQLite store's own file: :class:`SQLiteBlobStore`.

One file to back up, and a blob commits like an event. The cost: SQLite has one
writer per file, so putting a large blob holds appends back for as long as the
write takes (see docs/blobs.md for the measured figures, and
:class:`~eskit.blobs.DirectoryBlobStore` for the alternative).
"""

from __future__ import annotations

import sqlite3
import time

from eskit.blobs.base import BlobStore
from eskit.blobs.ref import DEFAULT_MAX_BLOB_BYTES
from eskit.stores.sqlite import SQLiteEventStore

__all__ = ["SQLiteBlobStore"]

_CREATE = """CREATE TABLE IF NOT EXISTS eskit_blobs (
    digest    TEXT    PRIMARY KEY,  -- the SHA-256 of data, 64 hex digits
    size      INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    stored_at INTEGER NOT NULL      -- microseconds since 1970-01-01 UTC
)"""


class SQLiteBlobStore(BlobStore):
    """Blobs in the table ``eskit_blobs`` of ``store``'s database (created on first put).

    Uses the store's connections: it is closed with the store, and safe across
    threads, processes and ``fork()`` as the store is.
    """

    def __init__(self, store: SQLiteEventStore, *,
                 max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.store = store
        self.max_blob_bytes = max_blob_bytes
        self._created = False

    @property
    def location(self) -> str:
        return f"{self.store.path} (table eskit_blobs)"

    def _table(self, conn: sqlite3.Connection) -> bool:
        if not self._created:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'eskit_blobs'"
            ).fetchone()
            self._created = found is not None
        return self._created

    def _put(self, key: str, data: bytes) -> None:
        if self._has(key):  # the common repeat: no write lock taken at all
            return
        with self.store._maintenance() as conn:
            conn.execute(_CREATE)
            conn.execute(
                "INSERT INTO eskit_blobs (digest, size, data, stored_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (digest) DO NOTHING",
                (key, len(data), data, time.time_ns() // 1000),
            )
        self._created = True

    def _get(self, key: str) -> bytes | None:
        with self.store._reading() as conn:
            if not self._table(conn):
                return None
            row = conn.execute("SELECT data FROM eskit_blobs WHERE digest = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _has(self, key: str) -> bool:
        with self.store._reading() as conn:
            if not self._table(conn):
                return False
            return conn.execute(
                "SELECT 1 FROM eskit_blobs WHERE digest = ?", (key,)).fetchone() is not None

    def _delete(self, key: str) -> bool:
        if not self._has(key):
            return False
        with self.store._maintenance() as conn:
            return conn.execute("DELETE FROM eskit_blobs WHERE digest = ?", (key,)).rowcount > 0
