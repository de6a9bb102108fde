"""The inbox: which event ids a consumer has applied, in the consumer's own database.

The id is recorded in the very transaction that runs the handler (table
``eskit_inbox`` of a :class:`~eskit.projections.targets.SQLiteTarget` or
:class:`~eskit.projections.targets.PostgresTarget`), so the handler's effects
and the record commit together or not at all: a redelivered message finds its
id and is acknowledged without running the handler again. The id is inserted
*before* the handler runs: on PostgreSQL a second member handling the same
message at the same moment waits on the first one's row and then sees it
(exactly-once effects under competing consumers).

An :class:`~eskit.projections.targets.InMemoryTarget` keeps the ids in
process memory, recorded after the handler returned (it has no rollback).

Ids are kept forever (about 60 bytes a message); delete old rows of
``eskit_inbox`` (``processed_at`` is microseconds since the epoch) once no
broker can redeliver them.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from eskit.projections.checkpoints import ProjectionTarget

__all__ = ["Inbox"]

_TABLE = """CREATE TABLE IF NOT EXISTS eskit_inbox (
    consumer     TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
)"""

_memory: weakref.WeakKeyDictionary[ProjectionTarget, set[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)
_memory_lock = threading.Lock()


class Inbox:
    """The processed-ids table of consumer ``name`` on ``target`` (sync; for a worker thread)."""

    def __init__(self, target: ProjectionTarget, name: str) -> None:
        self.target = target
        self.name = name
        self._ready = False
        self._memory = target.dialect == "memory"
        if self._memory:
            with _memory_lock:
                self._seen = _memory.setdefault(target, set())

    def setup(self) -> None:
        """Create the table if missing. Idempotent."""
        if self._memory or self._ready:
            return
        with self.target.transaction() as conn:
            if self.target.dialect == "postgres":
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('eskit-inbox-setup'))")
            conn.execute(_TABLE)
        self._ready = True

    def apply_once(self, event_id: str, handler: Callable[[Any], None]) -> bool:
        """Run ``handler(conn)`` in one transaction with the record of ``event_id``.

        ``False`` (and the handler is not run) when the id was recorded before.
        """
        self.setup()
        key = (self.name, event_id)
        if self._memory:
            with self.target.transaction() as conn:
                if key in self._seen:
                    return False
                handler(conn)
                self._seen.add(key)
                return True
        mark = "?" if self.target.dialect == "sqlite" else "%s"
        with self.target.transaction() as conn:
            inserted = conn.execute(
                f"INSERT INTO eskit_inbox (consumer, event_id, processed_at) "
                f"VALUES ({mark}, {mark}, {mark}) ON CONFLICT (consumer, event_id) DO NOTHING",
                (self.name, event_id, time.time_ns() // 1000),
            ).rowcount
            if inserted != 1:
                return False
            handler(conn)
            return True

    def seen(self, event_id: str) -> bool:
        """Whether ``event_id`` was applied (for tests and tools)."""
        if self._memory:
            return (self.name, event_id) in self._seen
        self.setup()
        mark = "?" if self.target.dialect == "sqlite" else "%s"
        with self.target.transaction() as conn:
            rows = conn.execute(
                f"SELECT 1 FROM eskit_inbox WHERE consumer = {mark} AND event_id = {mark}",
                (self.name, event_id),
            ).fetchall()
        return bool(rows)
