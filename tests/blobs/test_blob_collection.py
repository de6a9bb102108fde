"""Blob garbage collection: what a store still names is kept, the rest goes.

Each case runs on every pair of event store and blob store users combine: memory,
SQLite with its table, SQLite with a directory, PostgreSQL with its table.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit import (
    BlobCollectionRefusedError,
    BlobNotFoundError,
    BlobRef,
    InvalidInputError,
    NewEvent,
)
from eskit.archive import LocalDirectoryStorage, archive_streams
from eskit.blobs import (
    BlobStore,
    DirectoryBlobStore,
    InMemoryBlobStore,
    SQLiteBlobStore,
    collect_blobs,
)
from eskit.blobs.references import SEALED_MARK
from eskit.snapshots import Snapshot
from tests.conftest import new_schema_name

HOUR = 3600.0


@dataclass
class Pair:
    store: Any
    blobs: BlobStore
    snapshots: Any
    backdate: Callable[[BlobRef, float], None]

    def put_old(self, data: bytes) -> BlobRef:
        ref = self.blobs.put(data)
        self.backdate(ref, 2 * 24 * HOUR)
        return ref


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> Pair:
    store = eskit.InMemoryEventStore()
    blobs = InMemoryBlobStore()

    def backdate(ref: BlobRef, seconds: float) -> None:
        blobs._put_at[ref.hex] -= seconds

    return Pair(store, blobs, eskit.InMemorySnapshotStore(store), backdate)


def _sqlite_table(tmp_path: Path, request: pytest.FixtureRequest) -> Pair:
    store = eskit.SQLiteEventStore(tmp_path / "events.db", compress_threshold=64)
    blobs = SQLiteBlobStore(store)

    def backdate(ref: BlobRef, seconds: float) -> None:
        with store._maintenance() as conn:
            conn.execute("UPDATE eskit_blobs SET stored_at = stored_at - ? WHERE digest = ?",
                         (int(seconds * 1e6), ref.hex))

    return Pair(store, blobs, eskit.SQLiteSnapshotStore(store), backdate)


def _sqlite_directory(tmp_path: Path, request: pytest.FixtureRequest) -> Pair:
    store = eskit.SQLiteEventStore(tmp_path / "events.db", compress_threshold=64)
    blobs = DirectoryBlobStore(tmp_path / "blobs")

    def backdate(ref: BlobRef, seconds: float) -> None:
        path = blobs.directory / ref.hex[:2] / ref.hex
        then = path.stat().st_mtime - seconds
        os.utime(path, (then, then))

    return Pair(store, blobs, eskit.SQLiteSnapshotStore(store), backdate)


def _postgres(tmp_path: Path, request: pytest.FixtureRequest) -> Pair:
    from eskit.blobs import PostgresBlobStore

    dsn = request.getfixturevalue("postgres_dsn")
    store = eskit.PostgresEventStore(dsn, schema=new_schema_name(), compress_threshold=64)
    blobs = PostgresBlobStore(store)

    def backdate(ref: BlobRef, seconds: float) -> None:
        store._run(lambda conn: conn.execute(
            f'UPDATE "{store.schema}".eskit_blobs '
            "SET stored_at = stored_at - make_interval(secs => %s) WHERE digest = %s",
            (seconds, ref.hex)))

    return Pair(store, blobs, eskit.PostgresSnapshotStore(store), backdate)


@pytest.fixture(params=[_memory, _sqlite_table, _sqlite_directory, _postgres],
                ids=["memory", "sqlite-table", "sqlite-directory", "postgres"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    made: Pair = request.param(tmp_path, request)
    yield made
    made.blobs.close()
    made.store.close()


def _attach(store: Any, stream: str, ref: BlobRef, *, field: str = "data") -> None:
    payload = {"scan": ref, "note": "x" * 100}  # over the threshold: compressed
    if field == "data":
        store.append(stream, [NewEvent("ScanAttached", payload)])
    else:
        store.append(stream, [NewEvent("Noted", {"n": 1}, metadata={"attachment": ref})])


def _gone(blobs: BlobStore, ref: BlobRef) -> bool:
    try:
        blobs.get(ref)
    except BlobNotFoundError:
        return True
    return False


def test_old_unnamed_blobs_go_and_named_or_young_ones_stay(pair: Pair) -> None:
    named = pair.put_old(b"named by an event")
    in_metadata = pair.put_old(b"named in metadata")
    orphan = pair.put_old(b"named by nothing")
    young = pair.blobs.put(b"put a moment ago, its event not appended yet")
    _attach(pair.store, "patient-1", named)
    _attach(pair.store, "patient-2", in_metadata, field="metadata")

    found = collect_blobs(pair.store, pair.blobs)

    assert found.removed == (orphan.digest,)
    assert found.removed_bytes == orphan.size
    assert (found.blobs, found.referenced, found.young) == (4, 2, 1)
    assert found.payloads >= 2
    assert not found.dry_run
    assert _gone(pair.blobs, orphan)
    for ref, data in [(named, b"named by an event"), (in_metadata, b"named in metadata")]:
        assert pair.blobs.get(ref) == data
    assert pair.blobs.exists(young)
    again = collect_blobs(pair.store, pair.blobs)  # a rerun finds nothing more
    assert again.removed == ()
    assert again.blobs == 3


def test_a_dry_run_reports_what_would_go_and_deletes_nothing(pair: Pair) -> None:
    orphan = pair.put_old(b"orphan")
    found = collect_blobs(pair.store, pair.blobs, dry_run=True)
    assert found.removed == (orphan.digest,)
    assert found.dry_run
    assert found.to_dict()["removed_digests"] == [orphan.digest]
    assert pair.blobs.exists(orphan)


def test_deleted_and_truncated_events_keep_only_what_can_come_back(pair: Pair) -> None:
    soft, hard, cut, kept_by_snapshot = (pair.put_old(f"blob {n}".encode()) for n in range(4))
    _attach(pair.store, "soft-1", soft)
    _attach(pair.store, "hard-1", hard)
    pair.store.delete_stream("soft-1")             # restorable: its blob stays
    pair.store.delete_stream("hard-1", hard=True)  # gone for good: its blob goes
    _attach(pair.store, "long-1", cut)
    _attach(pair.store, "long-1", kept_by_snapshot)
    pair.store.append("long-1", [NewEvent("Noted", {"n": 3})])
    [third] = pair.store.read_stream("long-1", 2, 3)
    # The aggregate state after version 3 still names the second blob.
    state = eskit.codec.encode({"scans": [kept_by_snapshot]})
    pair.snapshots.save(Snapshot("long-1", "clinic.Patient", 3, third.event_id, 1, state,
                                 third.timestamp))
    pair.store.truncate_stream("long-1", 3)  # versions 1 and 2, naming the blobs, removed
    assert [e.version for e in pair.store.read_stream("long-1")] == [3]

    found = collect_blobs(pair.store, pair.blobs)

    assert set(found.removed) == {hard.digest, cut.digest}
    assert pair.blobs.exists(soft)
    assert pair.blobs.exists(kept_by_snapshot)
    assert pair.store.restore_stream("soft-1")
    assert pair.blobs.get(pair.store.read_stream("soft-1")[0].event_data["scan"]) == b"blob 0"


def test_a_put_while_the_collection_runs_saves_the_blob(pair: Pair) -> None:
    """The writer's side of the race: put (of bytes already stored), then append."""
    raced = pair.put_old(b"put again during the mark phase")
    orphan = pair.put_old(b"really unnamed")

    def writer_puts_meanwhile(_rows: int) -> None:
        if not getattr(writer_puts_meanwhile, "done", False):
            writer_puts_meanwhile.done = True  # type: ignore[attr-defined]
            pair.blobs.put(b"put again during the mark phase")  # refreshes the time

    pair.store.append("other-1", [NewEvent("Noted", {"n": 1})])
    found = collect_blobs(pair.store, pair.blobs, progress=writer_puts_meanwhile)
    assert found.removed == (orphan.digest,)
    assert found.young == 1  # the raced blob: unnamed at the scan, but put since
    _attach(pair.store, "patient-9", raced)  # the writer's append lands after the scan
    assert pair.blobs.get(raced) == b"put again during the mark phase"


def test_keep_holds_references_kept_outside_the_store(pair: Pair) -> None:
    read_model_ref = pair.put_old(b"named by a read model")
    found = collect_blobs(pair.store, pair.blobs, keep=[read_model_ref])
    assert found.removed == ()
    assert found.referenced == 1
    assert pair.blobs.exists(read_model_ref)


def test_a_sealed_value_stops_the_collection_before_any_delete(pair: Pair) -> None:
    orphan = pair.put_old(b"may be named inside the ciphertext")
    pair.store.append("patient-3", [NewEvent("Registered", {
        "name": {"$pd": {"v": 1, "s": "c-1", "k": "k1", "n": "AAAA", "c": "BBBB"}}})])
    with pytest.raises(BlobCollectionRefusedError, match="sealed"):
        collect_blobs(pair.store, pair.blobs)
    assert pair.blobs.exists(orphan)


def test_bad_arguments_are_refused_before_any_io(pair: Pair) -> None:
    orphan = pair.put_old(b"orphan")
    for bad in [
        {"grace": timedelta(seconds=10)}, {"grace": 3600}, {"keep": ["sha256:00"]},
        {"keep": "sha256:00"}, {"dry_run": 1}, {"archives": "dir"}, {"archives": [object()]},
    ]:
        with pytest.raises(InvalidInputError):
            collect_blobs(pair.store, pair.blobs, **bad)
    with pytest.raises(InvalidInputError):
        collect_blobs(object(), pair.blobs)
    with pytest.raises(InvalidInputError):
        collect_blobs(pair.store, object())  # type: ignore[arg-type]
    assert pair.blobs.exists(orphan)


def test_two_collections_at_once_delete_each_orphan_once(pair: Pair) -> None:
    orphans = [pair.put_old(f"orphan {n}".encode()) for n in range(40)]
    named = pair.put_old(b"named")
    _attach(pair.store, "patient-1", named)
    results: list[Any] = []
    errors: list[BaseException] = []

    def collect() -> None:
        try:
            results.append(collect_blobs(pair.store, pair.blobs))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=collect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    removed = [digest for r in results for digest in r.removed]
    assert sorted(removed) == sorted(ref.digest for ref in orphans)  # none twice
    assert pair.blobs.exists(named)


def test_archived_streams_need_their_archive_and_keep_its_blobs(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for make in (_sqlite_directory, _postgres):
        pair = make(_fresh(tmp_path / make.__name__), request)
        try:
            archived, orphan = pair.put_old(b"in an archived stream"), pair.put_old(b"orphan")
            _attach(pair.store, "closed-1", archived)
            storage = LocalDirectoryStorage(tmp_path / make.__name__ / "archive")
            assert archive_streams(pair.store, storage, ["closed-1"]) == 1
            with pytest.raises(BlobCollectionRefusedError, match="archive"):
                collect_blobs(pair.store, pair.blobs)
            assert pair.blobs.exists(orphan)
            found = collect_blobs(pair.store, pair.blobs, archives=[storage])
            assert found.removed == (orphan.digest,)
            assert pair.blobs.exists(archived)
        finally:
            pair.blobs.close()
            pair.store.close()


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_the_sealed_mark_is_the_envelope_protection_writes() -> None:
    pytest.importorskip("cryptography")
    from eskit.protection.envelope import ENVELOPE

    assert f'"{ENVELOPE}"'.encode() == SEALED_MARK


def test_a_file_a_killed_collection_set_aside_is_put_back(tmp_path: Path) -> None:
    """SIGKILL between the rename and the decision leaves `.gc-<key>-*`: a miss finds it."""
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    ref = blobs.put(b"set aside, never deleted")
    path = blobs.directory / ref.hex[:2] / ref.hex
    os.rename(path, path.with_name(f".gc-{ref.hex}-deadbeef"))
    assert blobs.get(ref) == b"set aside, never deleted"
    os.rename(path, path.with_name(f".gc-{ref.hex}-deadbeef"))
    assert blobs.exists(ref)
    os.rename(path, path.with_name(f".gc-{ref.hex}-deadbeef"))
    assert [b.key for b in blobs._listing()] == [ref.hex]
    assert sorted(p.name for p in path.parent.iterdir()) == [ref.hex]


def test_the_search_pages_through_every_payload(pair: Pair, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """Pages of 3 rows over events written in 12 transactions: every reference found."""
    from eskit.blobs import references

    monkeypatch.setattr(references, "_PAGE", 3)
    refs = [pair.put_old(f"blob {n}".encode()) for n in range(12)]
    for n, ref in enumerate(refs):
        _attach(pair.store, f"doc-{n}", ref)
    orphan = pair.put_old(b"orphan")
    found = collect_blobs(pair.store, pair.blobs)
    assert found.removed == (orphan.digest,)
    assert found.referenced == 12


def test_the_postgres_search_walks_the_order_index(postgres_dsn: str) -> None:
    """The page query orders by the xid8 column, not by its text (which would sort
    "100000" before "99999", skip rows, and scan the whole table for every page)."""
    import psycopg

    from eskit.blobs import references

    store = eskit.PostgresEventStore(postgres_dsn, schema=new_schema_name())
    try:
        store.append("doc-1", [NewEvent("Noted", {"n": 1})])
        captured: list[Any] = []
        real = store._run

        def spy(action: Any) -> Any:
            class Recorder:
                def __init__(self, conn: Any) -> None:
                    self.conn = conn

                def execute(self, statement: Any, params: Any = None) -> Any:
                    captured.append((statement, params))
                    return self.conn.execute(statement, params)

                def __getattr__(self, name: str) -> Any:
                    return getattr(self.conn, name)

            return real(lambda conn: action(Recorder(conn)))

        store._run = spy  # type: ignore[method-assign]
        references.scan_store(store, ())
        store._run = real  # type: ignore[method-assign]
        page, params = captured[0]
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            plan = "\n".join(r[0] for r in conn.execute(
                psycopg.sql.SQL("EXPLAIN {}").format(page), params).fetchall())
        sort_keys = [line for line in plan.splitlines() if "Sort Key" in line]
        assert all("::text" not in line for line in sort_keys), plan
    finally:
        store.close()
