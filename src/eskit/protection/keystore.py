"""Where subjects' wrapped data keys live: the :class:`SubjectKeyStore` contract.

A key store keeps at most one live key per subject (a second writer creating a
key for the same new subject gets the first one's), wrapped by a master key
(:mod:`eskit.protection.keys`). Deleting a subject's key is what erases the
subject: every field sealed with it then reads as redacted. The SQLite and
PostgreSQL key stores keep their own table in the event store's database
(:mod:`eskit.protection.sqlite_keys`, :mod:`eskit.protection.postgres_keys`);
the event tables are not changed.

A key store may also count changes to its keys (:class:`CountsKeyChanges`; all
three of eskit's do): then the protected store keeps the keys it unwrapped
between calls, and asks only for that count before each append and page read,
instead of for every key's row. A store that does not count is asked for the
rows every time, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eskit.protection.keys import WrappedKey

__all__ = ["CountsKeyChanges", "InMemorySubjectKeyStore", "Purge", "SubjectKeyStore"]


@dataclass(frozen=True, slots=True)
class Purge:
    """What :meth:`SubjectKeyStore.purge` did to make deleted keys unrecoverable.

    ``complete`` is ``False`` when a step could not finish (a SQLite reader kept
    the write-ahead log from being truncated, say): run it again later.
    """

    steps: tuple[str, ...]
    complete: bool = True


@runtime_checkable
class SubjectKeyStore(Protocol):
    """The wrapped data keys of data subjects, one live key per subject."""

    def current(self, subjects: Collection[str]) -> dict[str, WrappedKey]:
        """The live key of each of ``subjects`` that has one, by subject."""
        ...

    def add(self, rows: Sequence[WrappedKey]) -> dict[str, WrappedKey]:
        """Store each row whose subject has no live key; return the live key of every
        subject of ``rows`` (a concurrent writer's, where it was first)."""
        ...

    def by_id(self, key_ids: Collection[str]) -> dict[str, WrappedKey]:
        """The stored keys among ``key_ids``, by key id (erased ones are absent)."""
        ...

    def delete_subject(self, subject: str) -> int:
        """Delete every key of ``subject``; how many there were."""
        ...

    def purge(self, *, vacuum: bool = True) -> Purge:
        """Make deleted keys unrecoverable from the database's files, as far as it can."""
        ...

    def not_wrapped_by(self, master_key_id: str, after: str, limit: int) -> list[WrappedKey]:
        """Up to ``limit`` keys wrapped by another master key, by key id after ``after``."""
        ...

    def replace(self, rows: Sequence[WrappedKey]) -> int:
        """Store new wrappings of existing keys (same key id), in one transaction; how many
        were still there."""
        ...

    def count(self) -> int:
        """How many keys are stored."""
        ...

    def close(self) -> None:
        """Release the store's connection."""
        ...


@runtime_checkable
class CountsKeyChanges(Protocol):
    """A key store that counts the deletes and rewrites of its keys (optional).

    ``key_changes()`` must return a different number after any key was deleted
    or rewritten by *any* process, once that change has committed (eskit's SQL
    key stores count in a trigger of the key table, so even a ``DELETE`` typed
    by hand counts), or ``None`` when it cannot tell (then nothing is cached).
    Adding keys need not change it: only keys that exist are cached.
    """

    def key_changes(self) -> int | None:
        """The number of key deletes and rewrites so far (``None``: unknown)."""
        ...


class InMemorySubjectKeyStore:
    """Keys in a dict: for tests and for the in-memory event store. Thread-safe."""

    def __init__(self) -> None:
        self._by_id: dict[str, WrappedKey] = {}
        self._by_subject: dict[str, WrappedKey] = {}
        self._changes = 0
        self._lock = threading.Lock()

    def key_changes(self) -> int:
        with self._lock:
            return self._changes

    def current(self, subjects: Collection[str]) -> dict[str, WrappedKey]:
        with self._lock:
            return {s: self._by_subject[s] for s in subjects if s in self._by_subject}

    def add(self, rows: Sequence[WrappedKey]) -> dict[str, WrappedKey]:
        with self._lock:
            for row in rows:
                if row.subject not in self._by_subject:
                    self._by_subject[row.subject] = row
                    self._by_id[row.key_id] = row
            return {row.subject: self._by_subject[row.subject] for row in rows}

    def by_id(self, key_ids: Collection[str]) -> dict[str, WrappedKey]:
        with self._lock:
            return {k: self._by_id[k] for k in key_ids if k in self._by_id}

    def delete_subject(self, subject: str) -> int:
        with self._lock:
            row = self._by_subject.pop(subject, None)
            if row is None:
                return 0
            del self._by_id[row.key_id]
            self._changes += 1
            return 1

    def purge(self, *, vacuum: bool = True) -> Purge:
        return Purge(("deleted keys are dropped from memory",))

    def not_wrapped_by(self, master_key_id: str, after: str, limit: int) -> list[WrappedKey]:
        with self._lock:
            ids = sorted(
                k for k, row in self._by_id.items()
                if k > after and row.master_key_id != master_key_id
            )
            return [self._by_id[k] for k in ids[:limit]]

    def replace(self, rows: Sequence[WrappedKey]) -> int:
        with self._lock:
            done = 0
            for row in rows:
                if row.key_id in self._by_id:
                    self._by_id[row.key_id] = row
                    self._by_subject[row.subject] = row
                    done += 1
            self._changes += done
            return done

    def count(self) -> int:
        with self._lock:
            return len(self._by_id)

    def close(self) -> None:
        pass
