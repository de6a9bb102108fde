"""Async sealed snapshots where the two backends' tests do not reach: a SQLite file the
sync and async stores share, the bytes of that file, and the in-memory store (which
keeps no snapshot table of its own). See test_async_sealed_snapshots."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from eskit import EveryNEvents, InvalidInputError, Repository, SQLiteEventStore, codec
from eskit.aio import (
    AsyncInMemoryEventStore,
    AsyncInMemorySnapshotStore,
    AsyncRepository,
    AsyncSQLiteEventStore,
)
from eskit.protection import aio as protection_aio
from eskit.protection import protect
from tests.protection.test_async_sealed_snapshots import (
    KEYS,
    KIND,
    admit,
    admit_one_by_one,
)
from tests.protection.test_sealed_snapshots import NAME, Admitted, Patient, registry


def test_a_snapshot_sealed_by_either_front_end_opens_in_the_other(tmp_path: Path) -> None:
    path = tmp_path / "clinic.db"
    sync = protect(SQLiteEventStore(path, registry=registry), KEYS)
    sync_snapshots = sync.sealed_snapshots()
    sync_repo = Repository(sync, snapshots=sync_snapshots, snapshot_policy=EveryNEvents(2))
    patient = Patient("patient-p-4")
    patient.raise_event(Admitted("p-4", NAME, "Ward 0"))
    patient.raise_event(Admitted("p-4", NAME, "Ward 1"))
    sync_repo.save(patient)
    sync.close()

    async def main() -> None:
        inner = await AsyncSQLiteEventStore.open(path, registry=registry)
        store = await protection_aio.protect(inner, KEYS)
        try:
            snapshots = await store.sealed_snapshots()
            found = await snapshots.latest("patient-p-4", KIND)
            assert found is not None
            assert found.version == 2
            assert codec.decode(found.state)["names"] == [NAME, NAME]
            repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
            await admit(repo, "p-5")
        finally:
            await store.close()

    asyncio.run(main())
    again = protect(SQLiteEventStore(path, registry=registry), KEYS)
    try:
        sealed = again.sealed_snapshots()
        stored = sealed.inner.latest("patient-p-5", KIND)
        assert stored is not None
        assert NAME.encode() not in stored.state
        found = sealed.latest("patient-p-5", KIND)
        assert found is not None
        assert codec.decode(found.state)["names"] == [NAME, NAME]
    finally:
        again.close()


def test_the_sqlite_file_holds_no_plaintext_state(tmp_path: Path) -> None:
    path = tmp_path / "clinic.db"

    async def main() -> None:
        inner = await AsyncSQLiteEventStore.open(path, registry=registry)
        store = await protection_aio.protect(inner, KEYS)
        try:
            snapshots = await store.sealed_snapshots()
            repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
            await admit_one_by_one(repo, "p-1", times=3)
            assert (await repo.get("patient-p-1", Patient)).names == [NAME] * 3
        finally:
            await store.close()

    asyncio.run(main())
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM eskit_snapshots").fetchone() == (3,)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("clinic.db-*"))
    assert NAME.encode() not in data


def test_an_in_memory_store_needs_its_snapshot_store_given() -> None:
    async def main() -> None:
        inner = AsyncInMemoryEventStore(registry=registry)
        store = await protection_aio.protect(inner, KEYS)
        with pytest.raises(InvalidInputError, match="keeps no snapshots of its own"):
            await store.sealed_snapshots()
        plain = AsyncInMemorySnapshotStore(inner)
        snapshots = await store.sealed_snapshots(plain)
        assert snapshots.inner is plain
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
        await admit(repo, "p-9", times=1)
        stored = await plain.latest("patient-p-9", KIND)
        assert stored is not None
        assert NAME.encode() not in stored.state
        erasure = await store.erase_subject("p-9", snapshots=snapshots)
        assert erasure.snapshots_deleted == 1
        assert await plain.latest("patient-p-9", KIND) is None
        await store.close()

    asyncio.run(main())
