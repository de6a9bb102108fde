"""What only the SQLite store promises: files, durability settings, schema, raw-SQL safety."""

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from eskit import (
    DecodingError,
    NewEvent,
    NotAnEskitStoreError,
    SQLiteEventStore,
    StoreError,
)


def test_a_text_file_is_not_an_eskit_store_and_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("just some notes, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(NotAnEskitStoreError):
        SQLiteEventStore(path)
    with pytest.raises(NotAnEskitStoreError):
        SQLiteEventStore(path, create=False)
    assert path.read_bytes() == before


def test_opening_a_missing_file_for_inspection_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(NotAnEskitStoreError, match="does not exist"):
        SQLiteEventStore(path, create=False)
    assert not path.exists()


def test_another_apps_sqlite_database_is_not_an_eskit_store_for_inspection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(NotAnEskitStoreError):
        SQLiteEventStore(path, create=False)
    # Opened for writing, eskit adds its tables beside the app's own (read models
    # may live in the same file), and leaves the app's tables alone.
    with SQLiteEventStore(path) as store:
        store.append("s", [NewEvent("Happened")], 0)
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "eskit_events", "eskit_meta"} <= tables


def test_a_foreign_table_named_like_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clash.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE eskit_events (whatever TEXT)")
    with pytest.raises(NotAnEskitStoreError, match="did not create"):
        SQLiteEventStore(path)


def test_a_store_written_by_a_newer_eskit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SQLiteEventStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE eskit_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="upgrade eskit"):
        SQLiteEventStore(path)


def test_events_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        ids = [e.event_id for e in store.append("s", [NewEvent("A"), NewEvent("B")], 0).events]
    with SQLiteEventStore(path, create=False) as store:
        assert [e.event_id for e in store.read_stream("s")] == ids
        assert store.head_position() == 2


def test_wal_and_full_synchronous_are_the_defaults(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    try:
        assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()
    normal = SQLiteEventStore(tmp_path / "fast.db", synchronous="NORMAL")
    try:
        assert normal._writer.execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        normal.close()


def test_events_cannot_be_updated_or_deleted_even_with_raw_sql(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("s", [NewEvent("A", {"n": 1})], 0)
    with sqlite3.connect(path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE eskit_events SET data = '{}'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM eskit_events")
    with SQLiteEventStore(path) as store:
        assert store.read_stream("s")[0].event_data == {"n": 1}


def test_stored_payloads_are_json_readable_with_sqlite_tools(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("s", [NewEvent("Deposited", {"account": "A-1", "note": "hi"})], 0)
    with sqlite3.connect(path) as conn:
        (account,) = conn.execute("SELECT json_extract(data, '$.account') FROM eskit_events")
    assert account == ("A-1",)


def _insert_raw(path: Path, data: str, version: int = 1) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version,"
            " recorded_at, data, metadata)"
            " VALUES (randomblob(16), 's', ?, 'Broken', 1, 0, ?, '{}')",
            (version, data),
        )


@pytest.mark.parametrize(
    "data",
    ['{"truncated": ', '[1, 2]', '{"x": {"__eskit__": "no-such-tag", "v": 1}}',
     '{"x": {"__eskit__": "decimal", "v": "not a number"}}',
     '{"x": {"__eskit__": "enum", "t": "nowhere:Nothing", "v": 1}}'],
    ids=["bad-json", "not-an-object", "unknown-tag", "bad-decimal", "unknown-enum"],
)
def test_a_corrupt_stored_event_is_a_decoding_error_naming_it(tmp_path: Path, data: str) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).close()
    _insert_raw(path, data)
    with SQLiteEventStore(path) as store:
        with pytest.raises(DecodingError, match=r"'Broken' at version 1 of stream 's'"):
            store.read_stream("s")
        with pytest.raises(DecodingError):
            list(store.read_all())


def _open_and_append(path: str, n: int) -> int:
    with SQLiteEventStore(path) as store:
        return store.append(f"setup-{n}", [NewEvent("Opened")], 0).version


def test_several_processes_can_create_the_same_new_file_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_open_and_append, [(path, n) for n in range(8)])
    assert results == [1] * 8
    with SQLiteEventStore(path, create=False) as store:
        assert len(store.list_streams()) == 8


def test_a_closed_store_refuses_further_use(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.close()
    with pytest.raises(StoreError):
        store.append("s", [NewEvent("A")], 0)


def _append_batches_forever(path: str, writer: int) -> None:
    with SQLiteEventStore(path) as store:
        n = 0
        while True:
            n += 1
            batch_id = f"w{writer}-b{n}"
            size = 50 + n % 150
            events = [
                NewEvent("Filled", {"i": i, "pad": "x" * 500}, {"batch": batch_id, "size": size})
                for i in range(size)
            ]
            store.append(f"stream-{writer}-{n % 3}", events)


@pytest.mark.slow
def test_killing_writers_mid_batch_never_leaves_a_partial_batch(tmp_path: Path) -> None:
    import os
    import random
    import signal
    import time

    path = str(tmp_path / "killed.db")
    SQLiteEventStore(path).close()
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        writers = [
            context.Process(target=_append_batches_forever, args=(path, round_ * 10 + w))
            for w in range(2)
        ]
        for p in writers:
            p.start()
        time.sleep(0.8 + random.random() / 2)  # spawn start-up, then some appends
        for p in writers:
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
        for p in writers:
            p.join()
            assert p.exitcode == -signal.SIGKILL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with SQLiteEventStore(path, create=False) as store:
        everything = list(store.read_all())
        assert len(everything) > 1000, "the writers appended too little before being killed"
        batches: dict[str, list[int]] = {}
        sizes: dict[str, int] = {}
        for event in everything:
            batches.setdefault(event.metadata["batch"], []).append(event.version)
            sizes[event.metadata["batch"]] = event.metadata["size"]
        for batch_id, versions in batches.items():
            size = sizes[batch_id]
            assert len(versions) == size, f"batch {batch_id} is partial"
            assert versions == list(range(versions[0], versions[0] + size))
        for info in store.list_streams():
            versions = [e.version for e in store.read_stream(info.stream_id)]
            assert versions == list(range(1, info.version + 1))
        positions = [e.position or 0 for e in everything]
        assert positions == sorted(positions)
