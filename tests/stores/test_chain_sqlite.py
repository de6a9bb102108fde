"""Hash chains on SQLite: tampering with raw SQL is reported; eskit's own rewrites are not.

Each tampering test does what an attacker with the file would: drops the
append-only triggers, then changes rows with plain sqlite3.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import pytest

import eskit
from eskit import NewEvent, SQLiteEventStore, StoreError
from eskit.archive import LocalDirectoryStorage, archive_streams, restore_streams
from eskit.integrity import event_bytes, link_hash
from eskit.maintenance.retention import RetentionPolicy, apply_retention
from eskit.protection import LocalKeyProvider, PersonalData, protect
from eskit.stores.compact import compact
from eskit.stores.sqlite import SCHEMA_VERSION
from eskit.stores.verify import VerifyReport, verify_store
from eskit.testing.compression_contract import large_payload


def _events(count: int, start: int = 1) -> list[NewEvent]:
    return [NewEvent("Numbered", {"n": n}, {"by": f"user-{n}"})
            for n in range(start, start + count)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A store of three streams, one written in several batches, interleaved."""
    file = tmp_path / "events.db"
    with SQLiteEventStore(file) as store:
        store.append("order-1", _events(3))
        store.append("order-2", _events(1))
        store.append("order-1", _events(2, 4))
        store.append_many([eskit.StreamAppend("order-3", _events(2)),
                           eskit.StreamAppend("order-2", _events(1, 2))])
        store.append("order-1", [NewEvent("Tagged", {"n": 6}, tags=("customer:c1",))])
    return file


def _verify(path: Path, **kwargs: object) -> VerifyReport:
    with SQLiteEventStore(path) as store:
        return verify_store(store, **kwargs)  # type: ignore[arg-type]


def _problems(report: VerifyReport) -> list[tuple[str, str, int]]:
    return [(p.kind, p.stream, p.version) for p in report.problems]


def _tamper(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TRIGGER IF EXISTS eskit_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS eskit_events_no_delete")
        for sql in statements:
            conn.execute(sql)


def test_a_store_without_tampering_verifies_clean(path: Path) -> None:
    report = _verify(path)
    assert report.ok, report.problems
    assert (report.events, report.streams, report.unchained) == (10, 3, 0)
    assert report.chained_after == 0
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM eskit_events WHERE hash IS NULL"
                            ).fetchone()[0] == 0


def test_the_stored_hash_is_the_documented_link(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT version, event_id, event_type, schema_version, recorded_at, data, "
            "metadata, hash FROM eskit_events WHERE stream_id = 'order-1' ORDER BY version"
        ).fetchall()
    previous = None
    for version, eid, etype, sv, at, data, meta, stored in rows:
        previous = link_hash(previous, event_bytes("order-1", version, eid, etype, sv, at,
                                                   data.encode(), meta.encode()))
        assert stored == previous


@pytest.mark.parametrize("batch_size", [1, 2, 3, 1000])
def test_pages_of_any_size_give_the_same_report(path: Path, batch_size: int) -> None:
    _tamper(path, "UPDATE eskit_events SET data = '{\"n\":99}' "
                  "WHERE stream_id = 'order-1' AND version = 4")
    report = _verify(path, batch_size=batch_size)
    assert _problems(report) == [("altered", "order-1", 4)]
    assert report.events == 10


@pytest.mark.parametrize(("column", "value"), [
    ("data", "'{\"n\":99}'"), ("metadata", "'{\"by\":\"mallory\"}'"),
    ("event_type", "'Refunded'"), ("recorded_at", "recorded_at + 1"),
    ("event_id", "randomblob(16)"),
])
def test_an_altered_event_is_reported_with_stream_and_version(
    path: Path, column: str, value: str
) -> None:
    _tamper(path, f"UPDATE eskit_events SET {column} = {value} "
                  "WHERE stream_id = 'order-1' AND version = 2")
    report = _verify(path)
    assert not report.ok
    assert _problems(report) == [("altered", "order-1", 2)]


def test_an_altered_event_with_a_recomputed_hash_breaks_the_next_link(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        eid, at, meta, prev = conn.execute(
            "SELECT e.event_id, e.recorded_at, e.metadata, p.hash FROM eskit_events e "
            "JOIN eskit_events p ON p.stream_id = e.stream_id AND p.version = 1 "
            "WHERE e.stream_id = 'order-1' AND e.version = 2").fetchone()
    forged = link_hash(prev, event_bytes("order-1", 2, eid, "Numbered", 1, at, b'{"n":99}',
                                         meta.encode()))
    _tamper(path, f"UPDATE eskit_events SET data = '{{\"n\":99}}', hash = x'{forged.hex()}' "
                  "WHERE stream_id = 'order-1' AND version = 2")
    assert _problems(_verify(path)) == [("altered", "order-1", 3)]


def test_a_removed_event_is_reported(path: Path) -> None:
    _tamper(path, "DELETE FROM eskit_events WHERE stream_id = 'order-1' AND version = 3")
    assert _problems(_verify(path)) == [("removed", "order-1", 4)]


def test_a_removed_first_event_is_reported(path: Path) -> None:
    _tamper(path, "DELETE FROM eskit_events WHERE stream_id = 'order-2' AND version = 1")
    assert _problems(_verify(path)) == [("removed", "order-2", 2)]


def test_a_removal_hidden_by_renumbering_is_reported(path: Path) -> None:
    _tamper(path,
            "DELETE FROM eskit_events WHERE stream_id = 'order-1' AND version = 2",
            "UPDATE eskit_events SET version = version - 1 "
            "WHERE stream_id = 'order-1' AND version > 2")
    assert _problems(_verify(path)) == [("removed", "order-1", 2)]


def test_an_event_inserted_in_the_middle_is_reported(path: Path) -> None:
    _tamper(path,
            "UPDATE eskit_events SET version = version + 100 "
            "WHERE stream_id = 'order-1' AND version >= 3",
            "UPDATE eskit_events SET version = version - 99 "
            "WHERE stream_id = 'order-1' AND version >= 100",
            "INSERT INTO eskit_events (event_id, stream_id, version, event_type, "
            "schema_version, recorded_at, data, metadata, hash) VALUES (randomblob(16), "
            "'order-1', 3, 'Refunded', 1, 0, '{}', '{}', randomblob(32))")
    assert _problems(_verify(path)) == [("inserted", "order-1", 3)]


def test_an_event_appended_by_raw_sql_is_reported(path: Path) -> None:
    _tamper(path, "INSERT INTO eskit_events (event_id, stream_id, version, event_type, "
                  "schema_version, recorded_at, data, metadata) VALUES (randomblob(16), "
                  "'order-3', 3, 'Refunded', 1, 0, '{}', '{}')")
    assert _problems(_verify(path)) == [("inserted", "order-3", 3)]


def test_reordered_events_are_reported(path: Path) -> None:
    _tamper(path,
            "UPDATE eskit_events SET version = 100 WHERE stream_id = 'order-1' AND version = 2",
            "UPDATE eskit_events SET version = 2 WHERE stream_id = 'order-1' AND version = 3",
            "UPDATE eskit_events SET version = 3 WHERE stream_id = 'order-1' AND version = 100")
    assert _problems(_verify(path)) == [("reordered", "order-1", 2)]


def test_positions_moved_out_of_order_are_reported(path: Path) -> None:
    _tamper(path, "UPDATE eskit_events SET position = 1000 "
                  "WHERE stream_id = 'order-2' AND version = 1")
    assert _problems(_verify(path)) == [("reordered", "order-2", 2)]


def test_a_stripped_hash_is_not_taken_for_an_old_row(path: Path) -> None:
    _tamper(path, "UPDATE eskit_events SET hash = NULL WHERE stream_id = 'order-2'")
    assert [k for k, _, _ in _problems(_verify(path))] == ["altered", "altered"]


def test_the_head_checkpoint_catches_a_rewritten_newest_event(path: Path) -> None:
    with SQLiteEventStore(path) as store:
        checkpoint = verify_store(store, as_of=store.head_position()).checkpoint
        store.append("order-9", _events(2))  # later appends leave an old checkpoint valid
    assert checkpoint is not None
    assert _verify(path, expect_checkpoint=checkpoint).ok
    # The newest event of order-3 rewritten, its hash recomputed: the chain alone is fine.
    with closing(sqlite3.connect(path)) as conn:
        eid, at, meta, prev = conn.execute(
            "SELECT e.event_id, e.recorded_at, e.metadata, p.hash FROM eskit_events e "
            "JOIN eskit_events p ON p.stream_id = e.stream_id AND p.version = 1 "
            "WHERE e.stream_id = 'order-3' AND e.version = 2").fetchone()
    forged = link_hash(prev, event_bytes("order-3", 2, eid, "Numbered", 1, at, b'{"n":0}',
                                         meta.encode()))
    _tamper(path, f"UPDATE eskit_events SET data = '{{\"n\":0}}', hash = x'{forged.hex()}' "
                  "WHERE stream_id = 'order-3' AND version = 2")
    assert _verify(path).ok
    caught = _verify(path, expect_checkpoint=checkpoint)
    assert not caught.ok
    assert caught.checkpoint_ok is False


def test_a_bad_checkpoint_or_batch_is_refused_before_reading(path: Path) -> None:
    with SQLiteEventStore(path) as store:
        for kwargs in ({"expect_checkpoint": "12:abc"}, {"expect_checkpoint": "x:" + "0" * 64},
                       {"batch_size": 0}, {"as_of": -1}):
            with pytest.raises(eskit.InvalidInputError):
                verify_store(store, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(eskit.InvalidInputError, match="SQLiteEventStore or"):
            verify_store(eskit.InMemoryEventStore())


# -- eskit's own rewrites and removals verify clean ------------------------------------


def test_compression_and_compaction_verify_clean(tmp_path: Path) -> None:
    file = tmp_path / "big.db"
    with SQLiteEventStore(file, compress_threshold=64) as store:  # compressed on append
        store.append("big-1", [NewEvent("Placed", large_payload(n)) for n in range(3)])
    with SQLiteEventStore(file, compress_threshold=None) as store:  # stored plain
        store.append("big-2", [NewEvent("Placed", large_payload(n)) for n in range(3)])
        result = compact(store, older_than=timedelta(0))
        assert result.compressed == 3
    with closing(sqlite3.connect(file)) as conn:
        assert conn.execute("SELECT count(*) FROM eskit_events WHERE typeof(data) = 'blob'"
                            ).fetchone()[0] == 6
    assert _verify(file).ok


def test_truncation_and_retention_verify_clean(path: Path) -> None:
    with SQLiteEventStore(path) as store:
        store.truncate_stream("order-1", 3, force=True)
        store.truncate_stream("order-1", 5, force=True)  # the anchor moves with the cut
        apply_retention(store, [RetentionPolicy("order-2", max_events=1)], force=True)
    report = _verify(path)
    assert report.ok, report.problems
    assert report.truncated_streams == 2
    assert report.events == 5
    # A removal beyond the recorded cut is still a removal.
    _tamper(path, "DELETE FROM eskit_events WHERE stream_id = 'order-1' AND version = 5")
    assert _problems(_verify(path)) == [("removed", "order-1", 6)]


def test_hard_and_soft_deletes_verify_clean(path: Path) -> None:
    with SQLiteEventStore(path) as store:
        store.delete_stream("order-2", hard=True)
        store.delete_stream("order-3")
        apply_retention(store, [RetentionPolicy("order-1", max_age=timedelta(0))],
                        now=eskit.utc_now() + timedelta(days=1))
    report = _verify(path)
    assert report.ok, report.problems
    assert report.streams == 1  # the soft-deleted stream's rows stay, and verify


def test_archive_and_restore_verify_clean(path: Path, tmp_path: Path) -> None:
    storage = LocalDirectoryStorage(tmp_path / "archive")
    with SQLiteEventStore(path) as store:
        store.truncate_stream("order-2", 2, force=True)
        assert archive_streams(store, storage, ["order-2", "order-3"]) == 3
    assert _verify(path).ok
    with SQLiteEventStore(path) as store:
        assert restore_streams(store, storage) == 3
    report = _verify(path)
    assert report.ok, report.problems
    assert report.events == 9
    assert report.unchained == 0


@eskit.domain_event("tests.chain.Joined")
@dataclass(frozen=True)
class Joined:
    customer_id: str
    name: Annotated[str, PersonalData(subject="customer_id")]


def test_encryption_key_rotation_and_erasure_verify_clean(tmp_path: Path) -> None:
    file = tmp_path / "clinic.db"
    first = LocalKeyProvider({"m1": b"\x01" * 32})
    store = protect(SQLiteEventStore(file), first)
    try:
        store.append("patient-1", [Joined("p1", "Ada")])
        store.append("patient-2", [Joined("p2", "Grace")])
    finally:
        store.close()
    assert _verify(file).ok
    rotated = protect(SQLiteEventStore(file),
                      LocalKeyProvider({"m1": b"\x01" * 32, "m2": b"\x02" * 32}, current="m2"))
    try:
        assert rotated.rewrap() == 2
        rotated.erase_subject("p1")
        assert rotated.read_stream("patient-1")[0].event_data["name"] != "Ada"
    finally:
        rotated.close()
    report = _verify(file)
    assert report.ok, report.problems
    assert report.streams == 3  # the erasure is recorded as an event of its own


def test_a_store_of_schema_8_migrates_and_its_old_events_are_unchained(tmp_path: Path) -> None:
    file = tmp_path / "old.db"
    with SQLiteEventStore(file) as store:
        store.append("s", _events(2))
        store.truncate_stream("s", 2, force=True)
        store.append("t", _events(1))
    with closing(sqlite3.connect(file)) as conn, conn:  # back to schema 8
        conn.execute("DROP TRIGGER eskit_events_no_update")
        conn.execute("ALTER TABLE eskit_events DROP COLUMN hash")
        conn.execute("ALTER TABLE eskit_truncated_streams DROP COLUMN anchor")
        conn.execute("DELETE FROM eskit_meta WHERE key = 'chained_after'")
        conn.execute("UPDATE eskit_meta SET value = '8' WHERE key = 'schema_version'")
    with SQLiteEventStore(file, create=False) as old:
        assert old.schema_version() == 8
        old.append("s", _events(1, 3))  # an old schema still appends, unchained
        with pytest.raises(StoreError, match="before hash chains"):
            verify_store(old)
    with SQLiteEventStore(file) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.append("s", _events(2, 4))
        store.append("u", _events(1))
    report = _verify(file)
    assert report.ok, report.problems
    assert report.unchained == 3
    assert report.chained_after == 4
    _tamper(file, "UPDATE eskit_events SET hash = NULL WHERE stream_id = 'u'")
    assert _problems(_verify(file)) == [("altered", "u", 1)]


def test_the_triggers_still_refuse_rewriting_a_hash(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn, \
            pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE eskit_events SET hash = randomblob(32) WHERE position = 1")


def test_appends_in_a_callers_deferred_transaction_chain_and_take_the_lock_first(
    path: Path,
) -> None:
    with SQLiteEventStore(path) as store, closing(
            sqlite3.connect(path, isolation_level=None, timeout=0)) as conn:
        conn.execute("BEGIN")  # deferred: the append must take the write lock itself
        store.in_transaction(conn).append("order-3", _events(1, 3))
        with closing(sqlite3.connect(path, isolation_level=None, timeout=0)) as other, \
                pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        store.in_transaction(conn).append_many([eskit.StreamAppend("order-4", _events(2))])
        conn.execute("COMMIT")
    report = _verify(path)
    assert report.ok, report.problems
    assert report.events == 13


def test_a_protected_or_async_store_is_verified_through_the_store_it_wraps(path: Path) -> None:
    from eskit.aio.sqlite import AsyncSQLiteEventStore

    sync = SQLiteEventStore(path)
    wrapped = AsyncSQLiteEventStore.from_sync(sync)
    protected = protect(sync, LocalKeyProvider({"m1": b"\x01" * 32}))
    try:
        assert verify_store(wrapped).events == 10
        assert verify_store(protected).ok
    finally:
        sync.close()


@pytest.mark.parametrize("change", [
    "data = 42", "data = x'28b52ffd00'", "event_type = 7", "hash = 'text'",
    "metadata = x'00ff'",
])
def test_values_of_any_type_are_reported_not_fatal(path: Path, change: str) -> None:
    _tamper(path, f"UPDATE eskit_events SET {change} "
                  "WHERE stream_id = 'order-3' AND version = 2")
    assert _problems(_verify(path)) == [("altered", "order-3", 2)]


def test_a_version_of_another_type_is_reported(path: Path) -> None:
    _tamper(path, "UPDATE eskit_events SET version = 'two' "
                  "WHERE stream_id = 'order-3' AND version = 2")
    report = _verify(path, batch_size=1)
    assert not report.ok
    assert report.events == 10


def test_two_writers_of_one_file_keep_one_chain(path: Path) -> None:
    # Each store remembers the heads it appended; the other's appends make that memory
    # stale, which the insert's guard must catch (and a rolled-back batch too).
    with SQLiteEventStore(path) as one, SQLiteEventStore(path) as two:
        for n in range(4):
            (one if n % 2 else two).append("order-1", _events(2, 7 + 2 * n))
        with pytest.raises(eskit.ConcurrencyError):
            one.append_many([eskit.StreamAppend("order-1", _events(1, 20)),
                             eskit.StreamAppend("order-2", _events(1), 0)])
        two.append("order-1", _events(1, 30))
        one.append("order-1", _events(1, 31))
    report = _verify(path)
    assert report.ok, report.problems
    assert report.events == 20
