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

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from eskit.errors import StoreError, StoreUnavailableError
from eskit.events import Event
from eskit.projections.sql import Dialect, Tx
from eskit.stores.rows import UndecodableEvent, micros_to_timestamp, timestamp_to_micros
from eskit.stores.sqlite import keep_inherited, watch_forks

__all__ = [
    "DeadLetter",
    "InMemoryTarget",
    "PostgresTarget",
    "ProjectionState",
    "ProjectionTarget",
    "SQLiteTarget",
]


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


def _ts(micros: int | None) -> datetime | None:
    return None if micros is None else micros_to_timestamp(int(micros))


def _now_micros() -> int:
    return time.time_ns() // 1000


_STATE_COLUMNS = (
    "name, partition_no, position, generation, events_handled, updated_at, last_event_at, "
    "events_per_second, last_error, last_error_at"
)
_DEAD_COLUMNS = (
    "projection, partition_no, position, event_id, stream_id, event_type, error, attempts, "
    "parked_at, status"
)


def _state(row: Any) -> ProjectionState:
    return ProjectionState(
        name=row[0], partition=int(row[1]), position=int(row[2]), generation=int(row[3]),
        events_handled=int(row[4]), updated_at=_ts(row[5]), last_event_at=_ts(row[6]),
        events_per_second=float(row[7]), last_error=row[8], last_error_at=_ts(row[9]),
    )


def _dead(row: Any) -> DeadLetter:
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
        self._run(
            conn,
            "INSERT INTO eskit_projections (name, partition_no) VALUES (?, ?) "
            "ON CONFLICT (name, partition_no) DO NOTHING",
            (name, partition),
        )
        rows = self._run(
            conn,
            f"SELECT {_STATE_COLUMNS} FROM eskit_projections WHERE name = ? AND partition_no = ?"
            + self._lock_suffix(),
            (name, partition),
        )
        return _state(rows[0])

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
                str(position), handled, _now_micros(),
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
                (message[:2000], _now_micros(), name, partition),
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
                rows = self._run(conn, f"SELECT {_STATE_COLUMNS} FROM eskit_projections")
            else:
                rows = self._run(
                    conn, f"SELECT {_STATE_COLUMNS} FROM eskit_projections WHERE name = ?",
                    (name,),
                )
        return sorted((_state(r) for r in rows), key=lambda s: (s.name, s.partition))

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
            f"INSERT INTO eskit_dead_letters ({_DEAD_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'parked') "
            "ON CONFLICT (projection, event_id) DO UPDATE SET error = excluded.error, "
            "attempts = excluded.attempts, status = 'parked'",
            (
                name, partition, str(event.position or 0), str(event.event_id),
                str(event.aggregate_id), event.event_type, error[:2000], attempts,
                _now_micros(),
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
        query = f"SELECT {_DEAD_COLUMNS} FROM eskit_dead_letters"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        if conn is None:
            with self.transaction() as own:
                rows = self._run(own, query, tuple(params))
        else:
            rows = self._run(conn, query, tuple(params))
        return sorted((_dead(r) for r in rows), key=lambda d: (d.projection, d.position))

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
            f"SELECT {_DEAD_COLUMNS} FROM eskit_dead_letters "
            "WHERE projection = ? AND event_id = ? AND status = 'parked'" + self._lock_suffix(),
            (name, event_id),
        )
        return _dead(rows[0]) if rows else None

    def parked_before(self, conn: Any, letter: DeadLetter) -> list[DeadLetter]:
        """Letters of ``letter``'s stream still parked at earlier positions, oldest first."""
        rows = self._run(
            conn,
            f"SELECT {_DEAD_COLUMNS} FROM eskit_dead_letters "
            "WHERE projection = ? AND stream_id = ? AND status = 'parked'",
            (letter.projection, letter.stream_id),
        )
        # Positions are stored as text (they exceed 64 bits): compare them as ints here.
        return sorted(
            (d for d in map(_dead, rows) if d.position < letter.position),
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
        row["updated_at"] = micros_to_timestamp(_now_micros())
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
            row["last_error_at"] = micros_to_timestamp(_now_micros())

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
            event.event_type, error, attempts, micros_to_timestamp(_now_micros()), "parked",
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


class SQLiteTarget(ProjectionTarget):
    """Read models, checkpoints and parked events in a SQLite file.

    Usually the event store's own file (``SQLiteTarget(store.path)``), so one file
    holds everything; any other file works too. WAL and ``synchronous=FULL``
    like the store.
    """

    dialect: Dialect = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0,
        synchronous: str = "FULL",
    ) -> None:
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise StoreError("SQLiteTarget needs a file: an in-memory database is private "
                             "to one connection")
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous}")
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._unusable = ""
        self._fork_quiet = self._fork_locked = False
        self.setup()
        watch_forks(self)

    @property
    def connection(self) -> sqlite3.Connection:
        """The target's connection, opened when first needed (and again after a fork)."""
        with self._lock:
            if self._unusable:
                raise StoreError(self._unusable)
            if self._closed:
                raise StoreError(f"the target {self.path!r} is closed")
            if self._connection is None:
                try:
                    conn = sqlite3.connect(self.path, timeout=self._busy_timeout,
                                           isolation_level=None, check_same_thread=False)
                    try:
                        self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
                        conn.execute(f"PRAGMA synchronous={self._synchronous}")
                    except BaseException:
                        conn.close()
                        raise
                except sqlite3.Error as exc:
                    raise StoreError(f"cannot open {self.path!r}: {exc}") from exc
                self._connection = conn
            return self._connection

    def _retry_busy(self, action: Any) -> Any:
        # BEGIN IMMEDIATE and journal-mode changes can report SQLITE_BUSY without
        # waiting on the busy handler when another process is mid-setup.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def setup(self) -> None:
        with self.transaction() as conn:
            for statement in self._tables_sql("REAL"):
                conn.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self.connection
            try:
                self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a transaction on {self.path!r}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"commit failed on {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # fork(): like the event store (see eskit.stores.sqlite), the target closes its
    # connection before a fork, so that no process inherits it; an inherited
    # connection to the file makes even the child's own connections lose appends.
    def _before_fork(self) -> None:
        self._fork_locked = self._lock.acquire(timeout=self._busy_timeout)
        conn = self._connection
        # Not quiet: another thread kept the lock, or this very thread forks inside
        # a transaction (the lock is reentrant).
        self._fork_quiet = self._fork_locked and not (conn is not None and conn.in_transaction)
        if self._fork_quiet and conn is not None:
            conn.close()
            self._connection = None

    def _after_fork_in_parent(self) -> None:
        if self._fork_locked:
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        if not self._fork_quiet and self._connection is not None:
            keep_inherited(self._connection)  # in use at fork(): never touch it
            self._connection = None
            self._unusable = (f"the target {self.path!r} was in use when this process was "
                              "forked; open a new target in the child")
        self._lock = threading.RLock()


class PostgresTarget(ProjectionTarget):
    """Read models, checkpoints and parked events in a PostgreSQL schema.

    The target's connection uses ``search_path = schema, public``, so handlers'
    unqualified table names land in ``schema`` (eskit's default ``"eskit"``, where
    the events are). Needs the ``postgres`` extra. Handlers' ``tx.execute`` takes
    psycopg's placeholders (``%s``, ``%(name)s``).

    Reconnects: when its connection has dropped (the server terminated it or
    restarted), the next :meth:`transaction` opens a new one before it begins.
    A transaction whose connection drops while it runs, or at its ``COMMIT``, is
    never replayed (it may have committed): it raises
    :class:`~eskit.StoreUnavailableError` and the caller's next transaction
    starts afresh. For a projection that is exact: the batch and its checkpoint
    committed together or not at all, and the next batch starts from the stored
    checkpoint. In a child process after ``fork()`` the target connects afresh
    and leaves the parent's connection alone.
    """

    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, *, schema: str = "eskit") -> None:
        from eskit.stores.postgres_schema import check_schema_name

        self.schema = check_schema_name(schema)
        self._dsn = dsn
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self.connection = self._connect()
        self.setup()

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        from eskit.stores.postgres_connection import translate

        try:
            conn = psycopg.connect(self._dsn, autocommit=True)
        except psycopg.Error as exc:
            raise translate(exc, "cannot connect to PostgreSQL") from exc
        try:
            schema = sql.Identifier(self.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET search_path TO {}, public").format(schema))
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc, "cannot connect to PostgreSQL") from exc
        return conn

    def _usable_connection(self) -> Any:
        """The connection, replaced first if it is closed, broken or the parent's."""
        if self._pid != os.getpid():
            # A forked child: never send on (or close) the parent's socket.
            self._pid = os.getpid()
            self.connection = self._connect()
        elif self.connection.closed or self.connection.broken:
            self.connection = self._connect()
        return self.connection

    def _own_sql(self, query: str) -> str:
        return query.replace("?", "%s")

    def lost_connection(self, error: BaseException) -> bool:
        from eskit.stores.postgres_connection import connection_lost

        # A handler may wrap the driver's error in its own: the connection tells.
        return (
            super().lost_connection(error) or connection_lost(error) or self.connection.broken
        )

    def _lock_suffix(self) -> str:
        # Why: two runners of one projection partition must not both handle a batch.
        # The row lock makes the second wait for the first's commit; it then reads
        # the moved checkpoint (READ COMMITTED re-reads the locked row).
        return " FOR UPDATE"

    def lock_setup(self, conn: Any, key: str) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog
        # (unique violation on pg_type): runners starting together take turns.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"eskit-projection-setup:{self.schema}:{key}",),
        )

    def setup(self) -> None:
        with self.transaction() as conn:
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"eskit-projections-setup:{self.schema}",),
            )
            for statement in self._tables_sql("DOUBLE PRECISION"):
                conn.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        import psycopg

        from eskit.stores.postgres_connection import connection_lost, translate

        with self._lock, ExitStack() as stack:
            for attempt in (1, 2):
                conn = self._usable_connection()
                try:
                    # BEGIN is sent here: a connection found dead now has run nothing
                    # of this transaction, so one retry on a new connection is safe.
                    stack.enter_context(conn.transaction())
                    break
                except psycopg.Error as exc:
                    if attempt == 2 or not connection_lost(exc):
                        raise translate(exc) from exc
            try:
                with stack:
                    yield conn
            except psycopg.OperationalError as exc:
                # Not retried: the transaction may have committed before the drop.
                raise translate(exc) from exc

    def close(self) -> None:
        if self._pid == os.getpid():  # a forked child leaves the parent's connection alone
            self.connection.close()


def target_for(db: str | Path, *, schema: str = "eskit") -> ProjectionTarget:
    """A target for a SQLite path or a ``postgresql://`` URL (used by the CLI)."""
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresTarget(text, schema=schema)
    return SQLiteTarget(text)
