"""Sealed snapshots (``ProtectedEventStore.sealed_snapshots``): an aggregate's state is
sealed under a key of its stream, never stored in clear, and erasing a subject deletes
that key with the snapshots, so a copy of a sealed snapshot left elsewhere is useless."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import pytest

from eskit import (
    Aggregate,
    EventRegistry,
    EveryNEvents,
    Repository,
    SQLiteEventStore,
    domain_event,
    handles,
)
from eskit.protection import (
    DecryptionError,
    LocalKeyProvider,
    PersonalData,
    ProtectedEventStore,
    generate_master_key,
    protect,
)
from eskit.protection.snapshots import SealedSnapshotStore, snapshot_subject
from tests.conftest import new_schema_name

registry = EventRegistry()
NAME = "Grace Brewster Hopper"


@domain_event("tests.sealed.Admitted", registry=registry)
@dataclass(frozen=True)
class Admitted:
    patient_id: str
    name: Annotated[str, PersonalData(subject="patient_id")]
    ward: str


class Patient(Aggregate):
    registry = registry

    def __init__(self, aggregate_id):
        super().__init__(aggregate_id)
        self.names: list[str] = []
        self.ward = ""

    @handles(Admitted)
    def _admitted(self, event):
        self.names.append(event.name)
        self.ward = event.ward


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProtectedEventStore]:
    keys = LocalKeyProvider.parse(generate_master_key("k1"))
    if request.param == "sqlite":
        inner = SQLiteEventStore(tmp_path / "clinic.db", registry=registry)
    else:
        from eskit.stores.postgres import PostgresEventStore

        inner = PostgresEventStore(request.getfixturevalue("postgres_dsn"),
                                   schema=new_schema_name(), registry=registry)
    protected = protect(inner, keys)
    yield protected
    protected.close()


def admit(repo: Repository, pid: str, times: int = 2) -> None:
    patient = Patient(f"patient-{pid}")
    for n in range(times):
        patient.raise_event(Admitted(pid, NAME, f"Ward {n}"))
    repo.save(patient)


def test_the_state_is_sealed_and_loads_back(store: ProtectedEventStore) -> None:
    from eskit.snapshots import aggregate_type_name

    snapshots = store.sealed_snapshots()
    assert isinstance(snapshots, SealedSnapshotStore)
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
    admit(repo, "p-1")
    kind = aggregate_type_name(Patient)
    stored = snapshots.inner.latest("patient-p-1", kind)
    assert stored is not None, "a snapshot was taken"
    assert NAME.encode() not in stored.state, "the state is sealed"
    assert b"$pd" in stored.state
    opened = snapshots.latest("patient-p-1", kind)
    assert opened is not None
    assert NAME.encode() in opened.state
    assert (opened.version, opened.event_id) == (stored.version, stored.event_id)
    loaded = repo.get("patient-p-1", Patient)
    assert loaded.names == [NAME, NAME]
    assert loaded.version == 2


def test_erasure_deletes_the_snapshot_key_so_an_old_copy_is_useless(
        store: ProtectedEventStore) -> None:
    from eskit.snapshots import aggregate_type_name

    snapshots = store.sealed_snapshots()
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
    admit(repo, "p-7")
    admit(repo, "p-8")
    kind = aggregate_type_name(Patient)
    copy = snapshots.inner.latest("patient-p-7", kind)  # as a backup would hold it
    assert copy is not None
    assert store.keys.current([snapshot_subject("patient-p-7")])
    erasure = store.erase_subject("p-7", snapshots=snapshots)
    assert erasure.snapshots_deleted == 1
    assert store.keys.current([snapshot_subject("patient-p-7")]) == {}
    assert store.keys.current([snapshot_subject("patient-p-8")]), "others keep theirs"
    snapshots.inner.save(copy)  # the old copy comes back (a restored backup)
    assert snapshots.latest("patient-p-7", kind) is None, "its key is gone: no snapshot"
    patient = repo.get("patient-p-7", Patient)  # from the events, redacted
    assert patient.version == 2
    assert NAME not in patient.names
    assert repo.get("patient-p-8", Patient).names == [NAME, NAME]


def test_a_changed_or_moved_sealed_state_does_not_open(store: ProtectedEventStore) -> None:
    from eskit.snapshots import aggregate_type_name

    snapshots = store.sealed_snapshots()
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
    admit(repo, "p-1", times=2)
    kind = aggregate_type_name(Patient)
    sealed = snapshots.inner.latest("patient-p-1", kind)
    assert sealed is not None
    # The version-2 state saved as if it were a state_version-2 snapshot: it was sealed
    # for state version 1, so it does not open.
    snapshots.inner.save(replace(sealed, state_version=sealed.state_version + 1))
    with pytest.raises(DecryptionError, match="does not decrypt"):
        snapshots.latest("patient-p-1", kind)


def test_the_sqlite_file_holds_no_plaintext_state(tmp_path: Path) -> None:
    keys = LocalKeyProvider.parse(generate_master_key("k1"))
    path = tmp_path / "clinic.db"
    store = protect(SQLiteEventStore(path, registry=registry), keys)
    snapshots = store.sealed_snapshots()
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
    admit(repo, "p-1", times=3)
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("clinic.db-*"))
    assert NAME.encode() not in data


def test_an_async_erasure_deletes_the_snapshot_keys_too(tmp_path: Path) -> None:
    import asyncio

    from eskit.aio import AsyncSQLiteEventStore
    from eskit.protection import aio as protection_aio

    keys = LocalKeyProvider.parse(generate_master_key("k1"))
    path = tmp_path / "clinic.db"
    sync = protect(SQLiteEventStore(path, registry=registry), keys)
    admit(Repository(sync, snapshots=sync.sealed_snapshots(),
                     snapshot_policy=EveryNEvents(1)), "p-3")
    assert sync.keys.current([snapshot_subject("patient-p-3")])
    sync.close()

    async def erase() -> None:
        inner = await AsyncSQLiteEventStore.open(path, registry=registry)
        store = await protection_aio.protect(inner, keys)
        await store.erase_subject("p-3")
        await store.close()

    asyncio.run(erase())
    with SQLiteEventStore(path, registry=registry) as again:
        assert protect(again, keys).keys.current([snapshot_subject("patient-p-3")]) == {}
