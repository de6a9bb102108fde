"""Subject keys in a table of their own in the SQLite store's file.

The table ``eskit_subject_keys`` sits beside the event tables, which are not
changed; it is created on first use, with ``eskit_subject_key_changes``: one row
counting the deletes and updates of keys, kept by triggers on the key table, so
that a process caching unwrapped keys learns of an erasure made by any other
process (or by hand) at its next append or page read. The connection runs with
``PRAGMA secure_delete=ON``, so a deleted key's bytes are overwritten with
zeros in its page rather than left in free space.

What :meth:`SQLiteSubjectKeyStore.purge` does after an erasure, and why:

1. ``PRAGMA wal_checkpoint(TRUNCATE)``: the write-ahead log still holds the
   pages as they were before the delete (with the wrapped key); the checkpoint
   copies the zeroed pages into the main file and truncates the log to zero
   bytes. A reader in the middle of a transaction can keep it from finishing:
   :class:`~eskit.protection.Purge` then says ``complete=False``.
2. ``VACUUM`` (with ``vacuum=True``): rebuilds the whole file, so free pages
   that other connections left unzeroed (a deleted snapshot holding the
   subject's data in clear, say) are gone too; then one more checkpoint.
   It costs a full copy of the database: skip it for keys alone.

Not guaranteed: the file system, an SSD's wear levelling, backups and copies
of the file keep what they kept. Against those, rotate the master key after an
erasure (:meth:`~eskit.protection.ProtectedEventStore.rewrap`) and destroy
the old one: an old copy's wrapped keys then cannot be unwrapped.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from eskit.errors import InvalidInputError, StoreBusyError, StoreError
from eskit.protection.keys import WrappedKey
from eskit.protection.keystore import Purge

__all__ = ["SQLiteSubjectKeyStore"]

_CREATE = """
CREATE TABLE IF NOT EXISTS eskit_subject_keys (
    key_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL UNIQUE,
    master_key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at TEXT NOT NULL
)
"""
_SETUP = (
    _CREATE,
    "CREATE TABLE IF NOT EXISTS eskit_subject_key_changes ("
    "id INTEGER PRIMARY KEY CHECK (id = 1), changes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO eskit_subject_key_changes (id, changes) VALUES (1, 0)",
    # Per row (SQLite has no statement triggers): a rewrap of 500 keys adds 500.
    "CREATE TRIGGER IF NOT EXISTS eskit_subject_key_deleted AFTER DELETE ON "
    "eskit_subject_keys BEGIN UPDATE eskit_subject_key_changes SET changes = changes + 1; END",
    "CREATE TRIGGER IF NOT EXISTS eskit_subject_key_updated AFTER UPDATE ON "
    "eskit_subject_keys BEGIN UPDATE eskit_subject_key_changes SET changes = changes + 1; END",
)
_COLUMNS = "key_id, subject, master_key_id, wrapped, created_at"
_CHUNK = 500  # bound parameters per IN (...) query, far below SQLite's limit


class SQLiteSubjectKeyStore:
    """The subject keys of the SQLite store at ``path`` (a file, not ``:memory:``)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise InvalidInputError(
                "an in-memory SQLite store has no file for subject keys: use "
                "InMemorySubjectKeyStore"
            )
        self._lock = threading.Lock()
        with self._translated():
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA secure_delete=ON")
        with self._transaction() as conn:  # one writer sets up, the others find it done
            for statement in _SETUP:
                conn.execute(statement)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreBusyError(f"{self.path!r} stayed locked: {exc}") from exc
            raise StoreError(f"SQLite error on the subject keys of {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error on the subject keys of {self.path!r}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _select(self, where: str, values: Sequence[str]) -> list[WrappedKey]:
        rows: list[WrappedKey] = []
        with self._lock, self._translated():
            for start in range(0, len(values), _CHUNK):
                chunk = values[start:start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows += map(_row, self._conn.execute(
                    f"SELECT {_COLUMNS} FROM eskit_subject_keys WHERE {where} IN ({marks})",
                    chunk,
                ))
        return rows

    def key_changes(self) -> int | None:
        """How many keys were deleted or updated, ever (``None`` if the count's row is gone)."""
        with self._lock, self._translated():
            row = self._conn.execute("SELECT changes FROM eskit_subject_key_changes").fetchone()
        return None if row is None else int(row[0])

    def current(self, subjects: Collection[str]) -> dict[str, WrappedKey]:
        return {row.subject: row for row in self._select("subject", list(subjects))}

    def add(self, rows: Sequence[WrappedKey]) -> dict[str, WrappedKey]:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO eskit_subject_keys (key_id, subject, master_key_id, wrapped, "
                "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (subject) DO NOTHING",
                [(r.key_id, r.subject, r.master_key_id, r.wrapped, r.created_at.isoformat())
                 for r in rows],
            )
        return self.current([r.subject for r in rows])

    def by_id(self, key_ids: Collection[str]) -> dict[str, WrappedKey]:
        return {row.key_id: row for row in self._select("key_id", list(key_ids))}

    def delete_subject(self, subject: str) -> int:
        with self._transaction() as conn:
            return conn.execute(
                "DELETE FROM eskit_subject_keys WHERE subject = ?", (subject,)
            ).rowcount

    def purge(self, *, vacuum: bool = True) -> Purge:
        steps = ["deleted with secure_delete=ON (zeroed in their pages)"]
        complete = self._checkpoint()
        steps.append("WAL checkpointed and truncated" if complete else
                     "WAL not truncated: a reader held it (run again)")
        if vacuum:
            with self._lock, self._translated():
                self._conn.execute("VACUUM")
            steps.append("VACUUM rebuilt the file")
            done = self._checkpoint()
            complete = complete and done
            steps.append("WAL checkpointed and truncated" if done else
                         "WAL not truncated after VACUUM: a reader held it (run again)")
        return Purge(tuple(steps), complete)

    def _checkpoint(self, tries: int = 20) -> bool:
        for attempt in range(tries):
            with self._lock, self._translated():
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            time.sleep(min(0.5, 0.01 * 2**attempt))
        return False

    def not_wrapped_by(self, master_key_id: str, after: str, limit: int) -> list[WrappedKey]:
        with self._lock, self._translated():
            return [_row(r) for r in self._conn.execute(
                f"SELECT {_COLUMNS} FROM eskit_subject_keys WHERE key_id > ? "
                "AND master_key_id <> ? ORDER BY key_id LIMIT ?",
                (after, master_key_id, limit),
            )]

    def replace(self, rows: Sequence[WrappedKey]) -> int:
        with self._transaction() as conn:
            return sum(
                conn.execute(
                    "UPDATE eskit_subject_keys SET master_key_id = ?, wrapped = ? "
                    "WHERE key_id = ? AND subject = ?",
                    (r.master_key_id, r.wrapped, r.key_id, r.subject),
                ).rowcount
                for r in rows
            )

    def count(self) -> int:
        with self._lock, self._translated():
            (n,) = self._conn.execute("SELECT count(*) FROM eskit_subject_keys").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(r: tuple[str, str, str, bytes, str]) -> WrappedKey:
    return WrappedKey(r[0], r[1], r[2], bytes(r[3]), datetime.fromisoformat(r[4]))
