"""Archive and restore on SQLite: raw rows back byte for byte, typed errors."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

import eskit
from eskit.archive import (
    LocalDirectoryStorage,
    archive_streams,
    restore_streams,
    streams_older_than,
    verify,
)
from eskit.stores.sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteEventStore
from eskit.stores.sqlite_archive import MIGRATION as ARCHIVE_MIGRATION

RAW = "SELECT * FROM eskit_events ORDER BY position"


def _fill(store: SQLiteEventStore) -> None:
    for s in ("order-1", "order-2", "user-1"):
        for i in range(3):
            store.append(s, [eskit.NewEvent(
                "Happened", {"i": i, "text": "é 😀 \u0000" if i == 1 else "x" * 5000})])


def _raw(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(RAW).fetchall()


def test_round_trip_gives_back_identical_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteEventStore(str(path), compress_threshold=1000)
    _fill(store)
    before = _raw(path)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    assert archive_streams(store, storage, ["order-1", "order-2"]) == 6
    assert [r[2] for r in _raw(path)] == ["user-1"] * 3
    assert verify(storage) == []
    # Rerun: nothing left to archive, nothing duplicated.
    assert archive_streams(store, storage, ["order-1", "order-2"]) == 0
    assert restore_streams(store, storage) == 6
    assert _raw(path) == before
    assert restore_streams(store, storage) == 0
    # New appends get positions after the old head, not in the refilled holes.
    result = store.append("order-1", [eskit.NewEvent("More", {})])
    assert result.position > max(r[0] for r in before)  # type: ignore[operator]
    store.close()


def test_archived_stream_refuses_read_and_append(tmp_path: Path) -> None:
    store = SQLiteEventStore(str(tmp_path / "s.db"))
    _fill(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    archive_streams(store, storage, ["order-1"])
    with pytest.raises(eskit.StreamArchivedError) as info:
        store.read_stream("order-1")
    assert info.value.archive == str(tmp_path / "arch")
    assert isinstance(info.value, eskit.EskitError)
    with pytest.raises(eskit.StreamArchivedError):
        store.append("order-1", [eskit.NewEvent("More", {})])
    assert len(store.read_stream("order-2")) == 3
    assert [e.stream_id for e in store.read_all()].count("order-1") == 0
    store.close()
    # Raw SQL cannot put events into an archived stream nor delete live ones.
    with sqlite3.connect(tmp_path / "s.db") as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO eskit_events (event_id, stream_id, version, event_type, "
                         "schema_version, recorded_at, data, metadata) VALUES "
                         "(x'00', 'order-1', 1, 't', 1, 0, '{}', '{}')")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM eskit_events WHERE stream_id = 'order-2'")


def test_verify_finds_a_corrupt_segment_and_restore_refuses_it(tmp_path: Path) -> None:
    store = SQLiteEventStore(str(tmp_path / "s.db"))
    _fill(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    archive_streams(store, storage, ["order-1"])
    segment = next(n for n in storage.list("seg-") if n.endswith(".zst"))
    blob = bytearray(storage.get(segment))
    blob[-1] ^= 1
    (tmp_path / "arch" / segment).write_bytes(bytes(blob))
    problems = verify(storage)
    assert len(problems) == 1
    assert "sha256" in problems[0]
    with pytest.raises(eskit.archive.ArchiveCorruptError):
        restore_streams(store, storage)
    with pytest.raises(eskit.StreamArchivedError):
        store.read_stream("order-1")
    store.close()


def test_policy_picks_streams_by_age_and_category(tmp_path: Path) -> None:
    store = SQLiteEventStore(str(tmp_path / "s.db"))
    _fill(store)
    assert streams_older_than(store, timedelta(days=1)) == []
    assert streams_older_than(store, timedelta(0), category="order") == ["order-1", "order-2"]
    store.close()


def test_a_store_of_the_previous_schema_migrates_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteEventStore(str(path))
    _fill(store)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER eskit_events_not_archived")
        conn.execute("DROP TABLE eskit_archived_streams")
        # The version before the archive migration (later migrations are idempotent).
        conn.execute("UPDATE eskit_meta SET value = ? WHERE key = 'schema_version'",
                     (str(MIGRATIONS.index(ARCHIVE_MIGRATION)),))
    store = SQLiteEventStore(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    assert archive_streams(store, LocalDirectoryStorage(tmp_path / "a"), ["user-1"]) == 3
    store.close()


def test_stats_and_gauges_count_what_is_archived_until_it_is_restored(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from eskit.observability.prometheus import StoreStatsCollector

    store = SQLiteEventStore(str(tmp_path / "s.db"))
    _fill(store)
    storage = LocalDirectoryStorage(tmp_path / "arch")
    registry = CollectorRegistry()
    registry.register(StoreStatsCollector(store, max_age=0))
    assert archive_streams(store, storage, ["order-1", "order-2"]) == 6
    found = eskit.stats(store)
    assert (found.events, found.archived_streams, found.archived_events) == (3, 2, 6)
    assert registry.get_sample_value("eskit_store_stats_archived_events",
                                     {"system": "sqlite"}) == 6
    assert registry.get_sample_value("eskit_store_stats_archived_streams",
                                     {"system": "sqlite"}) == 2
    restore_streams(store, storage)
    found = eskit.stats(store)
    assert (found.events, found.archived_streams, found.archived_events) == (9, 0, 0)
    store.close()
