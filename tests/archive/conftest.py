"""One archive test suite, two stores: ``backend`` opens a fresh SQLite file or a fresh
PostgreSQL schema and reads its event rows raw, every column as stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eskit
from tests.conftest import new_schema_name


class Backend:
    """A store under test and raw SQL on it, with no eskit code in between."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None) -> None:
        self.kind = kind
        self.path = tmp_path / "s.db"
        self.dsn = dsn
        self.schema = new_schema_name() if kind == "postgres" else ""
        self.opened: list[eskit.EventStore] = []

    def open(self, **options: Any) -> eskit.EventStore:
        store: eskit.EventStore
        if self.kind == "sqlite":
            store = eskit.SQLiteEventStore(str(self.path), **options)
        else:
            from eskit.stores.postgres import PostgresEventStore

            store = PostgresEventStore(self.dsn, schema=self.schema, **options)
        self.opened.append(store)
        return store

    @property
    def target(self) -> str:
        """What ``eskit archive`` is given: the file, or the DSN (with --schema)."""
        return str(self.path) if self.kind == "sqlite" else str(self.dsn)

    def raw(self) -> list[tuple[Any, ...]]:
        """Every event row, every column, in position order."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return conn.execute("SELECT * FROM eskit_events ORDER BY position").fetchall()
        import psycopg

        with psycopg.connect(str(self.dsn)) as conn:
            return conn.execute(
                f'SELECT tx_id::text, seq, event_id, stream_id, version, event_type, '
                f'schema_version, recorded_at, data::text, data_zstd, metadata::text, '
                f'writer_xid::text FROM "{self.schema}".eskit_events ORDER BY tx_id, seq'
            ).fetchall()

    def raw_tags(self) -> list[tuple[Any, ...]]:
        """Every tag row, every column, in one order."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return conn.execute(
                    "SELECT * FROM eskit_event_tags ORDER BY position, ord").fetchall()
        import psycopg

        with psycopg.connect(str(self.dsn)) as conn:
            return conn.execute(
                f'SELECT tag, tx_id::text, seq, ord, event_type FROM "{self.schema}"'
                ".eskit_event_tags ORDER BY tx_id, seq, ord").fetchall()

    def execute(self, statement: str) -> None:
        """Raw SQL on the event table (``{events}`` names it); raises as the driver does."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                conn.execute(statement.format(events="eskit_events"))
            return
        import psycopg

        with psycopg.connect(str(self.dsn)) as conn:
            conn.execute(statement.format(events=f'"{self.schema}".eskit_events'))

    @property
    def refused(self) -> tuple[type[BaseException], ...]:
        if self.kind == "sqlite":
            return (sqlite3.IntegrityError,)
        import psycopg

        return (psycopg.Error,)

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    made = Backend(request.param, tmp_path, dsn)
    yield made
    made.close()
