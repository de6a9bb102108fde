"""Where the events live: the backends, and the *drivers* that do each scenario's work.

A driver is one side of a comparison on one store: :class:`EskitDriver` wraps
any eskit :class:`~eskit.EventStore`; :class:`~benchmarks.raw_sqlite.RawSQLite`
and :class:`~benchmarks.raw_postgres.RawPostgres` do the same work by hand. The
scenarios only ever talk to the :class:`Driver` interface.

A backend opens drivers at *locations* it hands out per scenario
(:meth:`Backend.scenario`): a fresh file path per call for SQLite, one fresh
schema per scenario for PostgreSQL (created at the start, dropped at the end;
eskit's tables and the raw table live side by side in it).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

from benchmarks.model import Account, Deposited
from benchmarks.raw_sqlite import RawSQLite
from eskit import EventStore, InMemoryEventStore, Repository, SQLiteEventStore

__all__ = [
    "BACKENDS",
    "DEFAULT_POSTGRES_DSN",
    "Backend",
    "Driver",
    "EskitDriver",
    "PostgresBackend",
    "SQLiteBackend",
]

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"

Side = Literal["eskit", "raw"]


class Driver(Protocol):
    """What one side can do; every method is the timed work of some scenario."""

    def command(self, stream: str, amount: Decimal) -> None:
        """Read the stream's head, then append one deposit expecting exactly that head."""

    def append(self, stream: str, expected: int, amounts: Sequence[Decimal]) -> None:
        """Append one deposit per amount in one transaction, expecting version ``expected``."""

    def load_balance(self, stream: str) -> tuple[int, Decimal]:
        """Rebuild the account: (version, balance)."""

    def read_stream(self, stream: str) -> tuple[int, int]:
        """Read the whole stream: (count, last version)."""

    def read_all(self) -> tuple[int, str, int]:
        """Read every event in global order: (count, last stream, last version)."""

    def stored(self, streams: Sequence[str]) -> int:
        """How many events these streams hold (untimed)."""

    def wait_readable(self) -> None:
        """Return once everything appended so far is visible to ``read_all`` (untimed)."""

    def close(self) -> None: ...


class EskitDriver:
    """The eskit side: the public API of any :class:`~eskit.EventStore`."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.last_position = 0

    def command(self, stream: str, amount: Decimal) -> None:
        store = self.store
        store.append(stream, [Deposited(amount)], expected_version=store.head_version(stream))

    def append(self, stream: str, expected: int, amounts: Sequence[Decimal]) -> None:
        result = self.store.append(stream, [Deposited(a) for a in amounts],
                                   expected_version=expected)
        self.last_position = result.position

    def load_balance(self, stream: str) -> tuple[int, Decimal]:
        account = Repository(self.store).get(stream, Account)
        return account.version, account.balance

    def read_stream(self, stream: str) -> tuple[int, int]:
        events = self.store.read_stream(stream)
        return len(events), events[-1].version

    def read_all(self) -> tuple[int, str, int]:
        count = 0
        last = None
        for event in self.store.read_all():
            count += 1
            last = event
        assert last is not None
        return count, str(last.aggregate_id), last.version

    def stored(self, streams: Sequence[str]) -> int:
        # Versions are dense within a stream, so the heads add up to the stored events.
        return sum(self.store.head_version(s) for s in streams)

    def wait_readable(self, timeout: float = 120.0) -> None:
        # Also opens SQLite's reader connection outside the timer.
        deadline = time.monotonic() + timeout
        while self.store.head_position() < self.last_position:
            if time.monotonic() > deadline:
                raise RuntimeError("an open transaction elsewhere holds read_all back")
            time.sleep(0.05)

    def close(self) -> None:
        self.store.close()


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str:
        """``"sqlite"``, ``"memory"`` or ``"postgres"``: which scenarios apply."""

    @property
    def fresh_per_run(self) -> bool:
        """Whether append scenarios open a fresh store for every timed run."""

    def open(self, side: Side, location: str) -> Driver: ...

    def scenario(self, key: str, workdir: Path) -> AbstractContextManager[Callable[[str], str]]: ...

    def unavailable(self) -> str | None:
        """Why this backend cannot run here, or ``None``."""

    def describe(self) -> dict[str, Any]:
        """Versions and settings for the results file."""


@dataclass(frozen=True)
class SQLiteBackend:
    """eskit's SQLite store on a file (or its memory store) against raw ``sqlite3``."""

    name: str
    kind: str
    synchronous: Literal["FULL", "NORMAL"] | None
    """``None``: eskit's InMemoryEventStore against sqlite3 on ``":memory:"``."""
    fresh_per_run: bool = True

    def open(self, side: Side, location: str) -> Driver:
        if side == "raw":
            if self.synchronous is None:
                return RawSQLite(":memory:", None)
            return RawSQLite(location, self.synchronous)
        if self.synchronous is None:
            return EskitDriver(InMemoryEventStore())
        return EskitDriver(SQLiteEventStore(location, synchronous=self.synchronous))

    @contextmanager
    def scenario(self, key: str, workdir: Path) -> Iterator[Callable[[str], str]]:
        counter = itertools.count()
        yield lambda tag: str(workdir / f"{tag}-{next(counter)}.db")

    def unavailable(self) -> str | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class PostgresBackend:
    """eskit's PostgresEventStore against raw psycopg 3, one fresh schema per scenario."""

    dsn: str
    name: str = "postgres"
    kind: str = "postgres"
    fresh_per_run: bool = False
    """Append runs reuse the scenario's store and connection, with fresh streams each run."""

    def open(self, side: Side, location: str) -> Driver:
        if side == "raw":
            from benchmarks.raw_postgres import RawPostgres

            return RawPostgres(self.dsn, location)
        from eskit import PostgresEventStore

        return EskitDriver(PostgresEventStore(self.dsn, schema=location))

    @contextmanager
    def scenario(self, key: str, workdir: Path) -> Iterator[Callable[[str], str]]:
        import psycopg

        from benchmarks.raw_postgres import create_table

        schema = f"eskit_bench_{key}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            create_table(conn, schema)
        try:
            yield lambda tag: schema
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def unavailable(self) -> str | None:
        try:
            import psycopg
        except ImportError as exc:
            return f"psycopg is not installed ({exc}); pip install 'eskit[postgres]'"
        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"PostgreSQL at {self.safe_dsn()} is unreachable: {reason}"
        return None

    def safe_dsn(self) -> str:
        """The DSN without its password, for printing."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(self.dsn)
        except Exception:
            return "(unparsable DSN)"
        if "password" in params:
            params["password"] = "***"
        return make_conninfo(**params)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
            }
        return {"dsn": self.safe_dsn(), "psycopg": psycopg.__version__,
                "psycopg_impl": psycopg.pq.__impl__, **settings}


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        SQLiteBackend("sqlite FULL", "sqlite", "FULL"),
        SQLiteBackend("sqlite NORMAL", "sqlite", "NORMAL"),
        SQLiteBackend("memory", "memory", None),
        PostgresBackend(os.environ.get("ESKIT_BENCH_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)),
    )
}


# --------------------------------------------------------------------------- work loops


def run_commands(driver: Driver, streams: Sequence[str], amounts: Sequence[Decimal]) -> int:
    """One command (read the head, append one event) per amount, round-robin over streams."""
    n = len(streams)
    command = driver.command
    for i, amount in enumerate(amounts):
        command(streams[i % n], amount)
    return len(amounts)


def append_batches(
    driver: Driver, streams: Sequence[str], amounts: Sequence[Decimal], batch: int
) -> int:
    """Append ``amounts`` in batches of ``batch`` (the last may be short), round-robin over
    streams, each with the exact expected version."""
    versions = [0] * len(streams)
    for turn, start in enumerate(range(0, len(amounts), batch)):
        s = turn % len(streams)
        chunk = amounts[start : start + batch]
        driver.append(streams[s], versions[s], chunk)
        versions[s] += len(chunk)
    return len(amounts)
