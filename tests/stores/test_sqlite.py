"""What only the SQLite store promises: files, durability settings, schema, raw-SQL safety."""

import multiprocessing
import random
import sqlite3
from pathlib import Path

import pytest

from eskit import (
    DamagedStoreError,
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


def _files_of(path: Path) -> dict[str, bytes]:
    """Every file of the database: the file itself and any -wal, -shm or -journal."""
    return {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}


def _another_apps_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ann')")
    conn.close()


def test_another_apps_sqlite_database_is_refused_and_left_byte_identical(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    _another_apps_database(path)
    before = _files_of(path)
    assert list(before) == ["app.db"]
    for create in (True, False):
        with pytest.raises(NotAnEskitStoreError, match="adopt=True" if create else "not an"):
            SQLiteEventStore(path, create=create)
        # Not even the journal mode changed: no -wal or -shm file appeared.
        assert _files_of(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


def test_a_database_marked_by_another_app_is_refused_even_without_tables(
    tmp_path: Path,
) -> None:
    path = tmp_path / "marked.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = _files_of(path)
    with pytest.raises(NotAnEskitStoreError, match="user_version 7"):
        SQLiteEventStore(path)
    assert _files_of(path) == before


def test_adopt_adds_the_store_beside_another_apps_tables(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _another_apps_database(path)
    with SQLiteEventStore(path, adopt=True) as store:
        store.append("s", [NewEvent("Happened")], 0)
    # Adopted once, it is an eskit store: no need to say adopt=True again.
    with SQLiteEventStore(path) as store:
        assert store.head_position() == 1
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("SELECT name FROM users").fetchall() == [("ann",)]
    conn.close()
    assert {"users", "eskit_events", "eskit_meta"} <= tables


def test_an_empty_file_and_a_projection_file_become_stores(tmp_path: Path) -> None:
    from eskit import SQLiteTarget

    empty = tmp_path / "empty.db"
    empty.touch()
    with SQLiteEventStore(empty) as store:
        store.append("s", [NewEvent("Happened")], 0)
    # eskit's own projection tables (a target opened first) are not foreign.
    first = tmp_path / "target-first.db"
    SQLiteTarget(first).close()
    with SQLiteEventStore(first) as store:
        store.append("s", [NewEvent("Happened")], 0)


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
        with store._reading() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()
    normal = SQLiteEventStore(tmp_path / "fast.db", synchronous="NORMAL")
    try:
        with normal._reading() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
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


def _damaged_copy(tmp_path: Path, name: str) -> tuple[Path, int]:
    """An eskit store of a few hundred pages, for damaging; and its size."""
    path = tmp_path / name
    with SQLiteEventStore(path) as store:
        for n in range(40):
            store.append(f"s-{n}", [NewEvent("Filled", {"pad": "x" * 500}) for _ in range(20)])
    return path, path.stat().st_size


def _open_and_read_everything(path: Path) -> None:
    with SQLiteEventStore(path) as store:
        list(store.read_all())
        for info in store.list_streams():
            store.read_stream(info.stream_id)


@pytest.mark.parametrize("keep", [0.5, 0.05, 0.001], ids=["half", "5-percent", "header-only"])
def test_a_truncated_store_is_reported_damaged_not_foreign(tmp_path: Path, keep: float) -> None:
    path, size = _damaged_copy(tmp_path, "truncated.db")
    with open(path, "r+b") as file:
        file.truncate(max(int(size * keep), 100))
    with pytest.raises(DamagedStoreError, match=r"truncated\.db' is damaged: SQLite reports "
                       r"database disk image is malformed") as caught:
        _open_and_read_everything(path)
    assert not isinstance(caught.value, NotAnEskitStoreError)


def test_garbage_in_the_middle_pages_is_reported_damaged(tmp_path: Path) -> None:
    path, size = _damaged_copy(tmp_path, "garbled.db")
    with open(path, "r+b") as file:
        file.seek(size // 2 // 4096 * 4096)
        file.write(random.Random(1).randbytes(8 * 4096))
    with pytest.raises(DamagedStoreError, match=r"garbled\.db' is damaged.*malformed"):
        _open_and_read_everything(path)


def test_a_damaged_header_is_still_damage_not_another_format(tmp_path: Path) -> None:
    path, _ = _damaged_copy(tmp_path, "header.db")
    with open(path, "r+b") as file:
        file.seek(16)  # keep the "SQLite format 3" magic, garble the rest of page 1
        file.write(b"\xff" * 84)
    with pytest.raises(DamagedStoreError):
        _open_and_read_everything(path)


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
        # Wait for the writers to be appending (spawn start-up takes seconds on a busy
        # machine), then kill them at a random moment.
        with SQLiteEventStore(path, create=False) as watcher:
            start, deadline = watcher.head_position(), time.monotonic() + 60
            while watcher.head_position() < start + 1000 and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(random.random() / 2)
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


def test_the_async_store_refuses_and_adopts_another_apps_database_the_same_way(
    tmp_path: Path,
) -> None:
    import asyncio

    from eskit.aio import AsyncSQLiteEventStore

    path = tmp_path / "app.db"
    _another_apps_database(path)
    before = _files_of(path)

    async def main() -> None:
        with pytest.raises(NotAnEskitStoreError, match="adopt=True"):
            await AsyncSQLiteEventStore.open(path)
        assert _files_of(path) == before
        store = await AsyncSQLiteEventStore.open(path, adopt=True)
        await store.append("s", [NewEvent("Happened")], 0)
        await store.close()

    asyncio.run(main())
    with SQLiteEventStore(path, create=False) as store:
        assert store.head_position() == 1
