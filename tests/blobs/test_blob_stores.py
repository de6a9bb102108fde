"""Every blob store passes the blob contract; events carry only the reference."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import eskit
from eskit import BlobRef, InvalidInputError, NewEvent, SQLiteEventStore
from eskit.blobs import (
    BlobStore,
    DirectoryBlobStore,
    InMemoryBlobStore,
    PostgresBlobStore,
    SQLiteBlobStore,
)
from eskit.testing.blob_contract import BlobStoreContract
from tests.conftest import new_schema_name


class TestInMemoryBlobStore(BlobStoreContract):
    def create_blobs(self, tmp_path: Path) -> BlobStore:
        return InMemoryBlobStore()

    def corrupt(self, blobs: BlobStore, ref: BlobRef, data: bytes) -> None:
        assert isinstance(blobs, InMemoryBlobStore)
        blobs._blobs[ref.hex] = data

    def backdate(self, blobs: BlobStore, ref: BlobRef, seconds: float) -> None:
        assert isinstance(blobs, InMemoryBlobStore)
        blobs._put_at[ref.hex] -= seconds


class TestDirectoryBlobStore(BlobStoreContract):
    def create_blobs(self, tmp_path: Path) -> BlobStore:
        return DirectoryBlobStore(tmp_path / "blobs")

    def corrupt(self, blobs: BlobStore, ref: BlobRef, data: bytes) -> None:
        assert isinstance(blobs, DirectoryBlobStore)
        (blobs.directory / ref.hex[:2] / ref.hex).write_bytes(data)

    def backdate(self, blobs: BlobStore, ref: BlobRef, seconds: float) -> None:
        assert isinstance(blobs, DirectoryBlobStore)
        path = blobs.directory / ref.hex[:2] / ref.hex
        then = path.stat().st_mtime - seconds
        os.utime(path, (then, then))


class TestSQLiteBlobStore(BlobStoreContract):
    def create_blobs(self, tmp_path: Path) -> BlobStore:
        return SQLiteBlobStore(SQLiteEventStore(tmp_path / "events.db"))

    def corrupt(self, blobs: BlobStore, ref: BlobRef, data: bytes) -> None:
        assert isinstance(blobs, SQLiteBlobStore)
        with sqlite3.connect(blobs.store.path) as conn:
            conn.execute("UPDATE eskit_blobs SET data = ? WHERE digest = ?", (data, ref.hex))

    def backdate(self, blobs: BlobStore, ref: BlobRef, seconds: float) -> None:
        assert isinstance(blobs, SQLiteBlobStore)
        with blobs.store._maintenance() as conn:
            conn.execute("UPDATE eskit_blobs SET stored_at = stored_at - ? WHERE digest = ?",
                         (int(seconds * 1_000_000), ref.hex))

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> Iterator[BlobStore]:
        made = self.create_blobs(tmp_path)
        yield made
        assert isinstance(made, SQLiteBlobStore)
        made.store.close()


class TestSQLiteInMemoryBlobStore(TestSQLiteBlobStore):
    def create_blobs(self, tmp_path: Path) -> BlobStore:
        return SQLiteBlobStore(SQLiteEventStore(":memory:"))

    def corrupt(self, blobs: BlobStore, ref: BlobRef, data: bytes) -> None:
        assert isinstance(blobs, SQLiteBlobStore)
        with blobs.store._maintenance() as conn:
            conn.execute("UPDATE eskit_blobs SET data = ? WHERE digest = ?", (data, ref.hex))


class TestPostgresBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, postgres_dsn: str) -> Iterator[BlobStore]:
        store = eskit.PostgresEventStore(postgres_dsn, schema=new_schema_name())
        yield PostgresBlobStore(store)
        store.close()

    def corrupt(self, blobs: BlobStore, ref: BlobRef, data: bytes) -> None:
        import psycopg

        assert isinstance(blobs, PostgresBlobStore)
        with psycopg.connect(blobs.store.pool.conninfo, autocommit=True) as conn:  # type: ignore[union-attr]
            conn.execute(f'UPDATE "{blobs.store.schema}".eskit_blobs SET data = %s '
                         "WHERE digest = %s", (data, ref.hex))

    def backdate(self, blobs: BlobStore, ref: BlobRef, seconds: float) -> None:
        assert isinstance(blobs, PostgresBlobStore)
        blobs.store._run(lambda conn: conn.execute(
            f'UPDATE "{blobs.store.schema}".eskit_blobs '
            "SET stored_at = stored_at - make_interval(secs => %s) WHERE digest = %s",
            (seconds, ref.hex)))


def test_an_event_holds_only_the_reference_and_an_aggregate_loads_without_the_blob(
    tmp_path: Path,
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    scan = b"\x89PNG" + bytes(5_000_000)  # 5 MB: a blob, not a payload
    ref = blobs.put(scan, media_type="image/png")
    store.append("patient-7", [NewEvent("ScanAttached", {"scan": ref, "note": "knee"})])
    with sqlite3.connect(store.path) as conn:
        stored = conn.execute("SELECT length(data) FROM eskit_events").fetchone()[0]
    assert stored < 300  # the digest, size and media type, not the 5 MB
    [event] = store.read_stream("patient-7")
    assert isinstance(event.event_data["scan"], BlobRef)
    assert event.event_data["scan"] == ref
    assert blobs.get(event.event_data["scan"]) == scan
    store.close()


def test_a_blob_ref_decodes_in_a_fresh_process_that_never_imported_eskit_blobs(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    store = SQLiteEventStore(tmp_path / "events.db")
    ref = InMemoryBlobStore().put(b"x")
    store.append("s-1", [NewEvent("Attached", {"ref": ref})])
    store.close()
    code = ("import sys, eskit; s = eskit.SQLiteEventStore(sys.argv[1]); "
            "r = s.read_stream('s-1')[0].event_data['ref']; print(type(r).__name__, r.size)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "events.db")],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["BlobRef", "1"]


@pytest.mark.parametrize("fields", [
    {"digest": "sha256:" + "0" * 63, "size": 1},
    {"digest": "md5:" + "0" * 64, "size": 1},
    {"digest": "sha256:" + "A" * 64, "size": 1},
    {"digest": "sha256:" + "0" * 64, "size": -1},
    {"digest": "sha256:" + "0" * 64, "size": True},
    {"digest": "sha256:" + "0" * 64, "size": 1, "media_type": ""},
    {"digest": "sha256:" + "0" * 64, "size": 1, "media_type": "a\nb"},
    {"digest": "sha256:" + "0" * 64, "size": 1, "media_type": "x" * 256},
])
def test_a_malformed_reference_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        BlobRef(**fields)  # type: ignore[arg-type]


def test_sqlite_blobs_live_in_the_store_file_and_survive_reopening(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    ref = SQLiteBlobStore(store).put(b"kept")
    store.close()
    reopened = SQLiteEventStore(tmp_path / "events.db")
    assert SQLiteBlobStore(reopened).get(ref) == b"kept"
    assert list(reopened.read_all()) == []  # a blob is not an event
    reopened.close()
