"""InMemoryTarget: checkpoints in process memory, for tests and read models in Python objects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eskit.events import Event
from eskit.projections.checkpoints import (
    DeadLetter,
    ProjectionState,
    ProjectionTarget,
    now_micros,
)
from eskit.projections.sql import Dialect
from eskit.stores.rows import UndecodableEvent, micros_to_timestamp

__all__ = ["InMemoryTarget"]


class InMemoryTarget(ProjectionTarget):
    """Checkpoints in process memory; the read model lives in the projection object.

    A lock stands in for the transaction. There is no rollback: when a handler
    fails, the events before it in the batch stay applied and checkpointed, and the
    failing handler's own partial changes stay. Use it for tests and prototypes.
    """

    dialect: Dialect = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._states: dict[tuple[str, int], dict[str, Any]] = {}
        self._dead: dict[tuple[str, str], DeadLetter] = {}

    def setup(self) -> None:
        pass

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._lock:
            yield None

    def _row(self, name: str, partition: int) -> dict[str, Any]:
        return self._states.setdefault((name, partition), {
            "position": 0, "generation": 1, "events_handled": 0, "updated_at": None,
            "last_event_at": None, "events_per_second": 0.0, "last_error": None,
            "last_error_at": None,
        })

    def load_state(self, conn: Any, name: str, partition: int = 0) -> ProjectionState:
        return ProjectionState(name=name, partition=partition, **self._row(name, partition))

    def save_position(
        self, conn: Any, name: str, partition: int, position: int, handled: int,
        last_event: Event | UndecodableEvent | None, rate: float | None,
    ) -> None:
        row = self._row(name, partition)
        row["position"] = position
        row["events_handled"] += handled
        row["updated_at"] = micros_to_timestamp(now_micros())
        if last_event is not None:
            row["last_event_at"] = last_event.timestamp
        if rate is not None:
            row["events_per_second"] = rate

    def set_generation(self, conn: Any, name: str, partition: int, generation: int) -> None:
        self._row(name, partition)["generation"] = generation

    def reset(
        self, conn: Any, name: str, partition: int | None = None, *, keep_skipped: bool = False
    ) -> None:
        with self._lock:
            for state_key in [
                k for k in self._states if k[0] == name and partition in (None, k[1])
            ]:
                del self._states[state_key]
            for dead_key in [
                k for k, d in self._dead.items()
                if k[0] == name and partition in (None, d.partition)
                and not (keep_skipped and d.status == "skipped")
            ]:
                del self._dead[dead_key]

    def record_error(self, name: str, partition: int, message: str) -> None:
        with self._lock:
            row = self._row(name, partition)
            row["last_error"] = message
            row["last_error_at"] = micros_to_timestamp(now_micros())

    def clear_error(self, conn: Any, name: str, partition: int) -> None:
        row = self._row(name, partition)
        row["last_error"] = row["last_error_at"] = None

    def states(self, name: str | None = None) -> list[ProjectionState]:
        with self._lock:
            return [
                ProjectionState(name=n, partition=p, **row)
                for (n, p), row in sorted(self._states.items())
                if name in (None, n)
            ]

    def park(
        self, conn: Any, name: str, partition: int, event: Event | UndecodableEvent, error: str,
        attempts: int,
    ) -> None:
        self._dead[(name, str(event.event_id))] = DeadLetter(
            name, partition, event.position or 0, str(event.event_id), str(event.aggregate_id),
            event.event_type, error, attempts, micros_to_timestamp(now_micros()), "parked",
        )

    def dead_letters(
        self, name: str | None = None, *, status: str | None = "parked", conn: Any = None
    ) -> list[DeadLetter]:
        with self._lock:
            return sorted(
                (d for d in self._dead.values()
                 if name in (None, d.projection) and status in (None, d.status)),
                key=lambda d: (d.projection, d.position),
            )

    def claim_dead_letter(self, conn: Any, name: str, event_id: str) -> DeadLetter | None:
        letter = self._dead.get((name, event_id))
        return letter if letter is not None and letter.status == "parked" else None

    def parked_before(self, conn: Any, letter: DeadLetter) -> list[DeadLetter]:
        return sorted(
            (d for d in self._dead.values()
             if d.projection == letter.projection and d.stream_id == letter.stream_id
             and d.status == "parked" and d.position < letter.position),
            key=lambda d: d.position,
        )

    def parked_streams(self, conn: Any, name: str, partition: int) -> set[str]:
        return {
            d.stream_id for d in self._dead.values()
            if d.projection == name and d.partition == partition and d.status == "parked"
        }

    def set_dead_letter_status(self, conn: Any, name: str, event_id: str, status: str) -> None:
        old = self._dead[(name, event_id)]
        self._dead[(name, event_id)] = DeadLetter(
            old.projection, old.partition, old.position, old.event_id, old.stream_id,
            old.event_type, old.error, old.attempts, old.parked_at, status,
        )

    def remove_dead_letter(self, conn: Any, name: str, event_id: str) -> None:
        self._dead.pop((name, event_id), None)

    def move_dead_letters(self, conn: Any, source: str, destination: str) -> None:
        for key in [k for k in self._dead if k[0] == source]:
            letter = self._dead.pop(key)
            self._dead[(destination, key[1])] = DeadLetter(
                destination, *[getattr(letter, f) for f in DeadLetter.__slots__[1:]]
            )
