"""The archive functions, for a SQLite or a PostgreSQL store (internal; see
:mod:`eskit.archive`): each picks the store's implementation."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from eskit.archive import sqlite
from eskit.archive.sqlite import Progress
from eskit.archive.storage import ArchiveStorage

__all__ = ["archive_streams", "restore_streams", "streams_older_than"]


def _backend(store: object) -> ModuleType:
    loaded = sys.modules.get("eskit.stores.postgres")  # only a PostgreSQL store loaded it
    if loaded is not None and isinstance(store, loaded.PostgresEventStore):
        from eskit.archive import postgres

        return postgres
    return sqlite  # which refuses any other store with InvalidInputError


def streams_older_than(store: Any, older_than: timedelta, *, category: str | None = None,
                       now: datetime | None = None) -> list[str]:
    """Streams (not deleted, not archived) whose newest event is older than
    ``older_than``; ``category``: only ids starting with ``category`` + ``-``."""
    found: list[str] = _backend(store).streams_older_than(
        store, older_than, category=category, now=now)
    return found


def archive_streams(store: Any, storage: ArchiveStorage, streams: Sequence[str], *,
                    progress: Progress | None = None,
                    skipped: list[str] | None = None) -> int:
    """Move each stream's events to a segment in ``storage``; the events archived.

    A stream's events are removed only after its segment and manifest read back
    identical, in one transaction that records where the stream went; a stream
    that changed meanwhile is left in place. Streams already archived, deleted or
    empty are skipped, so a rerun after an interruption (or a second archiver at
    the same time) finishes the work and repeats none of it. Each event's DCB
    tags go into the segment with it and come back on restore.
    ``skipped``, if given, gets the streams that moved no events.
    """
    done: int = _backend(store).archive_streams(store, storage, streams, progress=progress,
                                                skipped=skipped)
    return done


def restore_streams(store: Any, storage: ArchiveStorage, streams: Sequence[str] | None = None,
                    *, progress: Progress | None = None) -> int:
    """Put archived streams back from ``storage`` (all, or ``streams``), with their
    ids, versions, original positions and bytes; the events restored. A segment
    that does not match its manifest raises ArchiveCorruptError and restores
    nothing of it. Streams not archived in the store are skipped: safe to rerun."""
    done: int = _backend(store).restore_streams(store, storage, streams, progress=progress)
    return done
