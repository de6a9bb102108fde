"""Stream deletion on SQLite beyond the contract: the triggers, old schemas, snapshots,
projection checkpoints over holes, appends in the caller's transaction."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from eskit import NewEvent, SQLiteEventStore, StoreError, StreamDeletedError
from eskit.projections import ProjectionRunner
from eskit.stores.sqlite import SCHEMA_VERSION
from tests.projections.helpers import Counter, added, sqlite_backend


def _e(n: int) -> NewEvent:
    return NewEvent("Numbered", {"n": n})


def test_raw_sql_cannot_remove_events_or_tombstones_or_write_into_a_deleted_stream(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("live", [_e(1)])
        store.append("soft", [_e(2)])
        store.append("gone", [_e(3)])
        store.delete_stream("soft")
        store.delete_stream("gone", hard=True)
    with closing(sqlite3.connect(path)) as conn:
        for sql in ("DELETE FROM eskit_events WHERE stream_id = 'live'",
                    "DELETE FROM eskit_events WHERE stream_id = 'soft'",
                    "DELETE FROM eskit_events"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        for sql in ("DELETE FROM eskit_deleted_streams WHERE stream_id = 'gone'",
                    "UPDATE eskit_deleted_streams SET hard = 0 WHERE stream_id = 'gone'"):
            with pytest.raises(sqlite3.IntegrityError, match="permanent"):
                conn.execute(sql)
        for stream in ("soft", "gone"):
            with pytest.raises(sqlite3.IntegrityError, match="deleted"):
                conn.execute(
                    "INSERT INTO eskit_events (event_id, stream_id, version, event_type, "
                    "schema_version, recorded_at, data, metadata) "
                    "VALUES (randomblob(16), ?, 9, 'X', 1, 0, '{}', '{}')", (stream,),
                )
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM eskit_events").fetchone()[0] == 2


def test_a_store_of_schema_3_reads_as_before_and_migrates_on_open(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("s", [_e(1), _e(2)])
    with closing(sqlite3.connect(path)) as conn, conn:  # back to schema 3
        for name in ("eskit_events_not_deleted", "eskit_tombstones_stay",
                     "eskit_tombstones_stay_hard", "eskit_events_no_delete"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE eskit_deleted_streams")
        conn.execute("""CREATE TRIGGER eskit_events_no_delete BEFORE DELETE ON eskit_events
                        BEGIN SELECT RAISE(ABORT, 'eskit events are append-only'); END""")
        conn.execute("UPDATE eskit_meta SET value = '3' WHERE key = 'schema_version'")
    with SQLiteEventStore(path, create=False) as old:
        assert old.schema_version() == 3
        assert [e.version for e in old.read_all()] == [1, 2]
        assert old.head_position() == 2
        assert len(old.list_streams()) == 1
        with pytest.raises(StoreError, match="before deletions"):
            old.delete_stream("s", hard=True)
    with SQLiteEventStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.delete_stream("s", 2, hard=True)
        assert list(store.read_all()) == []


def test_a_hard_delete_removes_the_streams_snapshots_too(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("s", [_e(1)])
        store.append("t", [_e(1)])
        with closing(sqlite3.connect(path)) as conn, conn:
            for stream in ("s", "t"):
                conn.execute(
                    "INSERT INTO eskit_snapshots SELECT stream_id, 'A', version, event_id, 1, "
                    "0, '{}' FROM eskit_events WHERE stream_id = ?", (stream,),
                )
        store.delete_stream("s")
        with closing(sqlite3.connect(path)) as conn:  # a soft delete keeps them
            assert conn.execute("SELECT count(*) FROM eskit_snapshots").fetchone()[0] == 2
        store.delete_stream("s", hard=True)
        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT stream_id FROM eskit_snapshots").fetchall()
        assert rows == [("t",)]


def test_a_projection_checkpoint_passes_over_the_holes(tmp_path: Path) -> None:
    with sqlite_backend(tmp_path) as backend:
        store = backend.store
        assert isinstance(store, SQLiteEventStore)
        store.append("a", [added(1), added(2)])
        store.append("b", [added(10)])
        runner = ProjectionRunner(store, Counter(), backend.target)
        assert runner.run_until_caught_up() == 3
        store.append("a", [added(3)])
        store.append("c", [added(100)])
        store.delete_stream("a", hard=True)  # including an event the runner has not seen
        store.append("b", [added(20)])
        assert runner.run_until_caught_up() == 2  # c's and b's new events, nothing twice
        counts = backend.read_counts()
        assert counts["b"] == (2, 30)
        assert counts["c"] == (1, 100)
        assert counts["a"] == (2, 3)  # what it saw before the delete stays in the read model


def test_an_append_in_the_callers_transaction_to_a_deleted_stream_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("gone", [_e(1)])
        store.delete_stream("gone", hard=True)
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS eskit_app_rows (n INTEGER)")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO eskit_app_rows VALUES (1)")
            with store.in_transaction(conn) as tx, pytest.raises(StreamDeletedError):
                tx.append("gone", [_e(2)])
            assert conn.in_transaction  # the caller's work goes on
            tx2 = store.in_transaction(conn)
            tx2.append("kept", [_e(3)])
            conn.execute("COMMIT")
        assert [e.aggregate_id for e in store.read_all()] == ["kept"]
