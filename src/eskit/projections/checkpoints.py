"""Where projections keep their checkpoints: targets, one per kind of database.

A target is the database a projection writes its read model into. It also
holds the projection's checkpoint (``eskit_projections``) and its parked
events (``eskit_dead_letters``), so that the runner can commit the read-model
writes of a batch and the new checkpoint **in one transaction**: after a crash
at any point, either both are there or neither is, and every event takes effect
exactly once.

* :class:`SQLiteTarget` — a SQLite file (the event store's own file, or another).
  Each batch is one ``BEGIN IMMEDIATE`` transaction: SQLite has one writer at a
  time, so two runners of one projection serialise on it and each re-reads the
  checkpoint inside its transaction before reading events.
* :class:`PostgresTarget` — a PostgreSQL schema. Each batch locks its checkpoint
  row (``SELECT ... FOR UPDATE``) first: a second runner of the same projection
  and partition waits for the first to commit, then continues from the new
  checkpoint. Nothing is handled twice and nothing is skipped.
* :class:`InMemoryTarget` — checkpoints in a dict, for tests and for read models
  held in Python objects. It survives nothing and rolls nothing back: when a
  handler fails, the checkpoint is kept just before the failing event (the earlier
  events of the batch stay applied, once), and whatever the failing handler changed
  before raising stays changed.

The tables are created by each target's idempotent :meth:`~ProjectionTarget.setup`,
not by the event store's numbered migrations: they belong to the read side.
Positions are stored as text (PostgreSQL positions exceed 64 bits) and timestamps
as integer microseconds since 1970-01-01 UTC.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eskit.errors import InvalidInputError, StoreUnavailableError
from eskit.events import Event
from eskit.projections.sql import Dialect, Tx
from eskit.stores.rows import UndecodableEvent, micros_to_timestamp, timestamp_to_micros

__all__ = ["DeadLetter", "ProjectionState", "ProjectionTarget"]


@dataclass(frozen=True, slots=True)
class ProjectionState:
    """The stored state of one projection partition (a row of ``eskit_projections``)."""

    name: str
    partition: int
    position: int
    """The checkpoint: the position of the last event read (handled or not)."""
    generation: int
    """Which generation of the read-model tables is live (see blue/green rebuilds)."""
    events_handled: int
    updated_at: datetime | None
    """When the checkpoint last moved."""
    last_event_at: datetime | None
    """The recorded time of the last event read."""
    events_per_second: float
    """Handling rate of the most recent batches (a moving average)."""
    last_error: str | None
    last_error_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A parked event: the projection gave up on it and moved on."""

    projection: str
    partition: int
    position: int
    event_id: str
    stream_id: str
    event_type: str
    error: str
    attempts: int
    parked_at: datetime
    status: str
    """``"parked"``; ``"skipped"`` once an operator gave up on it; ``"retried"`` once a
    retry handled it (kept for the record and the retried count)."""


def micros_or_none(micros: int | None) -> datetime | None:
    return None if micros is None else micros_to_timestamp(int(micros))


def now_micros() -> int:
    return time.time_ns() // 1000


STATE_COLUMNS = (
    "name, partition_no, position, generation, events_handled, updated_at, last_event_at, "
    "events_per_second, last_error, last_error_at"
)
DEAD_COLUMNS = (
    "projection, partition_no, position, event_id, stream_id, event_type, error, attempts, "
    "parked_at, status"
)


def state_from_row(row: Any) -> ProjectionState:
    return ProjectionState(
        name=row[0], partition=int(row[1]), position=int(row[2]), generation=int(row[3]),
        events_handled=int(row[4]), updated_at=micros_or_none(row[5]),
        last_event_at=micros_or_none(row[6]), events_per_second=float(row[7]),
        last_error=row[8], last_error_at=micros_or_none(row[9]),
    )


def dead_letter_from_row(row: Any) -> DeadLetter:
    return DeadLetter(
        projection=row[0], partition=int(row[1]), position=int(row[2]), event_id=row[3],
        stream_id=row[4], event_type=row[5], error=row[6], attempts=int(row[7]),
        parked_at=micros_to_timestamp(int(row[8])), status=row[9],
    )


class ProjectionTarget(ABC):
    """A database that holds read models, checkpoints and parked events."""

    dialect: Dialect

    @abstractmethod
    def setup(self) -> None:
        """Create the checkpoint and dead-letter tables if missing. Idempotent."""

    @abstractmethod
    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction: commit on success, roll back on any exception."""
        yield None  # pragma: no cover

    def close(self) -> None:  # noqa: B027 - targets without connections need not override
        """Release the connection."""

    def lost_connection(self, error: BaseException) -> bool:
        """Whether ``error``, raised inside a transaction, means the database went away.

        The runner then retries the batch instead of blaming the event it was
        handling (no attempt counted, nothing parked).
        """
        return isinstance(error, StoreUnavailableError)

    def __enter__(self) -> ProjectionTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- statements, written once in "?" style ----------------------------------------

    def _run(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return Tx(self.dialect, conn).execute(self._own_sql(query), params)

    def _own_sql(self, query: str) -> str:
        """One of eskit's own checkpoint statements in the driver's placeholder style.

        Only for the constant statements of this module, whose every ``?`` is a
        placeholder and which hold no ``%``; handlers' SQL is never rewritten.
        """
        return query

    def _lock_suffix(self) -> str:
        return ""

    def lock_setup(self, conn: Any, key: str) -> None:  # noqa: B027 - a no-op by default
        """Serialise read-model setup for ``key`` until the transaction ends."""

    def load_state(self, conn: Any, name: str, partition: int = 0) -> ProjectionState:
        """The projection's state, created at position 0 if new; locked until commit."""
        select = (f"SELECT {STATE_COLUMNS} FROM eskit_projections "
                  "WHERE name = ? AND partition_no = ?" + self._lock_suffix())
        # The row exists but the first time: read (and lock) it first, which is one
        # statement, one round trip per batch on PostgreSQL, instead of two.
        rows = self._run(conn, select, (name, partition))
        if not rows:
            # A concurrent creator's row makes DO NOTHING wait for its commit; the
            # SELECT then locks whichever row is there.
            self._run(
                conn,
                "INSERT INTO eskit_projections (name, partition_no) VALUES (?, ?) "
                "ON CONFLICT (name, partition_no) DO NOTHING",
                (name, partition),
            )
            rows = self._run(conn, select, (name, partition))
        return state_from_row(rows[0])

    def save_position(
        self, conn: Any, name: str, partition: int, position: int, handled: int,
        last_event: Event | UndecodableEvent | None, rate: float | None,
    ) -> None:
        """Move the checkpoint (inside the batch's transaction)."""
        self._run(
            conn,
            "UPDATE eskit_projections SET position = ?, events_handled = events_handled + ?, "
            "updated_at = ?, last_event_at = COALESCE(?, last_event_at), "
            "events_per_second = COALESCE(?, events_per_second) "
            "WHERE name = ? AND partition_no = ?",
            (
                str(position), handled, now_micros(),
                None if last_event is None else timestamp_to_micros(last_event.timestamp),
                rate, name, partition,
            ),
        )

    def set_generation(self, conn: Any, name: str, partition: int, generation: int) -> None:
        self._run(
            conn,
            "UPDATE eskit_projections SET generation = ? WHERE name = ? AND partition_no = ?",
            (generation, name, partition),
        )

    def reset(
        self, conn: Any, name: str, partition: int | None = None, *, keep_skipped: bool = False
    ) -> None:
        """Forget a projection's checkpoint (and its parked events): replay from the start.

        ``keep_skipped=True`` keeps the letters of skipped events (a rebuild that
        honours skips: see :func:`~eskit.projections.rebuild.rebuild`).
        """
        where, params = ("name = ?", (name,)) if partition is None else (
            "name = ? AND partition_no = ?", (name, partition)
        )
        self._run(conn, f"DELETE FROM eskit_projections WHERE {where}", params)
        letters = where.replace("name", "projection")
        if keep_skipped:
            letters += " AND status <> 'skipped'"
        self._run(conn, f"DELETE FROM eskit_dead_letters WHERE {letters}", params)

    def record_error(self, name: str, partition: int, message: str) -> None:
        """Remember a failure (in a transaction of its own: the batch was rolled back)."""
        with self.transaction() as conn:
            self.load_state(conn, name, partition)
            self._run(
                conn,
                "UPDATE eskit_projections SET last_error = ?, last_error_at = ? "
                "WHERE name = ? AND partition_no = ?",
                (message[:2000], now_micros(), name, partition),
            )

    def clear_error(self, conn: Any, name: str, partition: int) -> None:
        self._run(
            conn,
            "UPDATE eskit_projections SET last_error = NULL, last_error_at = NULL "
            "WHERE name = ? AND partition_no = ?",
            (name, partition),
        )

    def states(self, name: str | None = None) -> list[ProjectionState]:
        """Every stored projection partition (or those of ``name``), by name and partition."""
        with self.transaction() as conn:
            if name is None:
                rows = self._run(conn, f"SELECT {STATE_COLUMNS} FROM eskit_projections")
            else:
                rows = self._run(
                    conn, f"SELECT {STATE_COLUMNS} FROM eskit_projections WHERE name = ?",
                    (name,),
                )
        return sorted((state_from_row(r) for r in rows), key=lambda s: (s.name, s.partition))

    def caught_up(self, name: str, position: int, *, partitions: int | None = None) -> bool:
        """Whether projection ``name`` has read every event up to ``position``.

        True when each of its stored partitions has its checkpoint at or past
        ``position`` (each partition reads the whole log, so the one that owns the
        event has handled it, or parked it). With ``partitions=N``, partitions with
        no stored checkpoint yet count as behind; without it only the stored ones
        are known. A projection with no stored checkpoint is not caught up.
        """
        states = self.states(name)
        if partitions is not None and len(states) < partitions:
            return False
        return bool(states) and all(s.position >= position for s in states)

    # -- dead letters -------------------------------------------------------------------

    def park(
        self, conn: Any, name: str, partition: int, event: Event | UndecodableEvent, error: str,
        attempts: int,
    ) -> None:
        """Record ``event`` as parked for the projection (inside the batch's transaction)."""
        self._run(
            conn,
            f"INSERT INTO eskit_dead_letters ({DEAD_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'parked') "
            "ON CONFLICT (projection, event_id) DO UPDATE SET error = excluded.error, "
            "attempts = excluded.attempts, status = 'parked'",
            (
                name, partition, str(event.position or 0), str(event.event_id),
                str(event.aggregate_id), event.event_type, error[:2000], attempts,
                now_micros(),
            ),
        )

    def dead_letters(
        self, name: str | None = None, *, status: str | None = "parked", conn: Any = None
    ) -> list[DeadLetter]:
        """Parked events, oldest position first."""
        clauses, params = [], []
        if name is not None:
            clauses.append("projection = ?")
            params.append(name)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        query = f"SELECT {DEAD_COLUMNS} FROM eskit_dead_letters"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        if conn is None:
            with self.transaction() as own:
                rows = self._run(own, query, tuple(params))
        else:
            rows = self._run(conn, query, tuple(params))
        return sorted(
            (dead_letter_from_row(r) for r in rows), key=lambda d: (d.projection, d.position)
        )

    def claim_dead_letter(self, conn: Any, name: str, event_id: str) -> DeadLetter | None:
        """The letter of ``event_id`` if it is still parked, locked until the transaction ends.

        ``None`` when it is gone, skipped or already retried: a concurrent retry got
        there first. On PostgreSQL the row lock makes a second claimant wait for the
        first to commit and then re-check the row (READ COMMITTED re-evaluates a locked
        row), so two retries of one letter handle it once. SQLite has one writer at a
        time and the in-memory target holds its lock for the whole transaction.
        """
        rows = self._run(
            conn,
            f"SELECT {DEAD_COLUMNS} FROM eskit_dead_letters "
            "WHERE projection = ? AND event_id = ? AND status = 'parked'" + self._lock_suffix(),
            (name, event_id),
        )
        return dead_letter_from_row(rows[0]) if rows else None

    def parked_before(self, conn: Any, letter: DeadLetter) -> list[DeadLetter]:
        """Letters of ``letter``'s stream still parked at earlier positions, oldest first."""
        rows = self._run(
            conn,
            f"SELECT {DEAD_COLUMNS} FROM eskit_dead_letters "
            "WHERE projection = ? AND stream_id = ? AND status = 'parked'",
            (letter.projection, letter.stream_id),
        )
        # Positions are stored as text (they exceed 64 bits): compare them as ints here.
        return sorted(
            (d for d in map(dead_letter_from_row, rows) if d.position < letter.position),
            key=lambda d: d.position,
        )

    def parked_streams(self, conn: Any, name: str, partition: int) -> set[str]:
        rows = self._run(
            conn,
            "SELECT DISTINCT stream_id FROM eskit_dead_letters "
            "WHERE projection = ? AND partition_no = ? AND status = 'parked'",
            (name, partition),
        )
        return {r[0] for r in rows}

    def set_dead_letter_status(self, conn: Any, name: str, event_id: str, status: str) -> None:
        self._run(
            conn,
            "UPDATE eskit_dead_letters SET status = ? WHERE projection = ? AND event_id = ?",
            (status, name, event_id),
        )

    def move_dead_letters(self, conn: Any, source: str, destination: str) -> None:
        """Give ``source``'s parked events to ``destination`` (a finished rebuild)."""
        self._run(
            conn, "UPDATE eskit_dead_letters SET projection = ? WHERE projection = ?",
            (destination, source),
        )

    def remove_dead_letter(self, conn: Any, name: str, event_id: str) -> None:
        self._run(
            conn, "DELETE FROM eskit_dead_letters WHERE projection = ? AND event_id = ?",
            (name, event_id),
        )

    def _tables_sql(self, float_type: str) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS eskit_projections (
                   name              TEXT    NOT NULL,
                   partition_no      INTEGER NOT NULL,
                   position          TEXT    NOT NULL DEFAULT '0',
                   generation        INTEGER NOT NULL DEFAULT 1,
                   events_handled    BIGINT  NOT NULL DEFAULT 0,
                   updated_at        BIGINT,
                   last_event_at     BIGINT,
                   events_per_second {float_type} NOT NULL DEFAULT 0,
                   last_error        TEXT,
                   last_error_at     BIGINT,
                   PRIMARY KEY (name, partition_no)
               )""",
            """CREATE TABLE IF NOT EXISTS eskit_dead_letters (
                   projection   TEXT    NOT NULL,
                   partition_no INTEGER NOT NULL,
                   position     TEXT    NOT NULL,
                   event_id     TEXT    NOT NULL,
                   stream_id    TEXT    NOT NULL,
                   event_type   TEXT    NOT NULL,
                   error        TEXT    NOT NULL,
                   attempts     INTEGER NOT NULL,
                   parked_at    BIGINT  NOT NULL,
                   status       TEXT    NOT NULL,
                   PRIMARY KEY (projection, event_id)
               )""",
        ]


def wait_for_projection(
    target: ProjectionTarget,
    name: str,
    position: int,
    timeout: float = 5.0,
    *,
    partitions: int | None = None,
) -> bool:
    """Wait until projection ``name`` in ``target`` has read every event up to ``position``.

    Polls :meth:`~eskit.projections.ProjectionTarget.caught_up` (from 5 ms, doubling
    up to 100 ms) until it holds, and returns ``True``; returns ``False`` once
    ``timeout`` seconds have passed. "Read" includes parked events: a parked event's
    position is passed but the read model lacks it. Not guaranteed: that the
    projection is running at all (a stopped one simply times out). On PostgreSQL
    the checkpoint passes an event only once it is visible to readers, which can
    lag behind the append's commit while older transactions are open.
    """
    if type(position) is not int or position < 0:
        raise InvalidInputError(f"position must be an int >= 0, not {position!r}")
    if not timeout >= 0:
        raise InvalidInputError(f"timeout must be >= 0 seconds, not {timeout!r}")
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not target.caught_up(name, position, partitions=partitions):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)
    return True
