"""Blobs in a table of the SQLite store's own file: :class:`SQLiteBlobStore`.

One file to back up, and a blob commits like an event. The cost: SQLite has one
writer per file, so putting a large blob holds appends back for as long as the
write takes (see docs/blobs.md for the measured figures, and
:class:`~eskit.blobs.DirectoryBlobStore` for the alternative).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence

from eskit.blobs.base import TOUCH_AFTER, BlobStore, StoredBlob
from eskit.blobs.ref import DEFAULT_MAX_BLOB_BYTES
from eskit.stores.sqlite import SQLiteEventStore

__all__ = ["SQLiteBlobStore"]

_CREATE = """CREATE TABLE IF NOT EXISTS eskit_blobs (
    digest    TEXT    PRIMARY KEY,  -- the SHA-256 of data, 64 hex digits
    size      INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    stored_at INTEGER NOT NULL      -- microseconds since 1970-01-01 UTC: the last put
)"""
_PAGE = 10_000
_TOUCH_AFTER_MICROS = int(TOUCH_AFTER * 1_000_000)


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
        now = time.time_ns() // 1000
        stored_at = self._stored_at(key)
        if stored_at is not None and now - stored_at <= _TOUCH_AFTER_MICROS:
            return  # the common repeat: no write lock taken at all
        with self.store._maintenance() as conn:
            conn.execute(_CREATE)
            # A put of stored bytes refreshes the time: the blob is in use again.
            conn.execute(
                "INSERT INTO eskit_blobs (digest, size, data, stored_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (digest) DO UPDATE SET stored_at = excluded.stored_at",
                (key, len(data), data, now),
            )
        self._created = True

    def _stored_at(self, key: str) -> int | None:
        with self.store._reading() as conn:
            if not self._table(conn):
                return None
            row = conn.execute(
                "SELECT stored_at FROM eskit_blobs WHERE digest = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

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

    def _listing(self) -> Iterator[StoredBlob]:
        after = ""
        while True:  # pages, each its own read: no snapshot held across the listing
            with self.store._reading() as conn:
                if not self._table(conn):
                    return
                rows = conn.execute(
                    "SELECT digest, size, stored_at FROM eskit_blobs WHERE digest > ? "
                    "ORDER BY digest LIMIT ?", (after, _PAGE)).fetchall()
            for key, size, stored_at in rows:
                yield StoredBlob(str(key), int(size), int(stored_at) / 1_000_000)
            if len(rows) < _PAGE:
                return
            after = str(rows[-1][0])

    def _delete_idle(self, keys: Sequence[str], cutoff: float) -> list[str]:
        if not keys:
            return []
        micros = int(cutoff * 1_000_000)
        deleted: list[str] = []
        with self.store._maintenance() as conn:  # one transaction: the write lock held
            for key in keys:
                row = conn.execute(
                    "DELETE FROM eskit_blobs WHERE digest = ? AND stored_at < ? "
                    "RETURNING digest", (key, micros)).fetchone()
                if row is not None:
                    deleted.append(key)
        return deleted
