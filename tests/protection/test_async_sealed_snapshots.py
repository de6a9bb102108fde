"""Sealed snapshots for asyncio (``AsyncProtectedEventStore.sealed_snapshots``), on the
async SQLite and PostgreSQL stores: the state is sealed under a key of its stream and
never stored in clear, and erasing a subject deletes that key with the snapshots, so a
copy of a sealed snapshot left elsewhere is useless. The twin of test_sealed_snapshots."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eskit import EveryNEvents, Snapshot, codec
from eskit.aio import AsyncRepository, AsyncSQLiteEventStore
from eskit.maintenance import prune_snapshots_async
from eskit.protection import ERASED, DecryptionError, LocalKeyProvider, generate_master_key
from eskit.protection import aio as protection_aio
from eskit.protection.aio import AsyncProtectedEventStore, AsyncSealedSnapshotStore
from eskit.protection.snapshots import snapshot_subject
from eskit.snapshots import aggregate_type_name
from tests.conftest import new_schema_name
from tests.protection.test_sealed_snapshots import NAME, Admitted, Patient, registry

KEYS = LocalKeyProvider.parse(generate_master_key("k1"))
KIND = aggregate_type_name(Patient)


class Backend:
    """Opens the protected async store and reads the snapshot table's raw rows."""

    def __init__(self, kind: str, tmp_path: Path, dsn: str | None) -> None:
        self.kind = kind
        self.path = tmp_path / "clinic.db"
        self.dsn = dsn
        self.schema = new_schema_name()

    async def open(self) -> AsyncProtectedEventStore:
        if self.kind == "sqlite":
            inner = await AsyncSQLiteEventStore.open(self.path, registry=registry)
        else:
            from eskit.aio import AsyncPostgresEventStore

            assert self.dsn is not None
            inner = await AsyncPostgresEventStore.open(self.dsn, schema=self.schema,
                                                       registry=registry)
        return await protection_aio.protect(inner, KEYS)

    def raw_states(self) -> list[bytes]:
        """Every stored snapshot state, as the database holds it."""
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.path)) as conn:
                rows = conn.execute("SELECT state FROM eskit_snapshots").fetchall()
            return [r[0].encode() if isinstance(r[0], str) else bytes(r[0]) for r in rows]
        import psycopg

        assert self.dsn is not None
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                f'SELECT convert_to(state::text, \'UTF8\') FROM "{self.schema}".eskit_snapshots'
            ).fetchall()
        return [bytes(r[0]) for r in rows]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, dsn)


def run(backend: Backend,
        test: Callable[[AsyncProtectedEventStore, AsyncSealedSnapshotStore], Awaitable[None]]
        ) -> None:
    async def main() -> None:
        store = await backend.open()
        try:
            snapshots = await store.sealed_snapshots()
            assert isinstance(snapshots, AsyncSealedSnapshotStore)
            await test(store, snapshots)
        finally:
            await store.close()

    asyncio.run(main())


async def admit(repo: AsyncRepository, pid: str, times: int = 2) -> None:
    patient = Patient(f"patient-{pid}")
    for n in range(times):
        patient.raise_event(Admitted(pid, NAME, f"Ward {n}"))
    await repo.save(patient)


async def admit_one_by_one(repo: AsyncRepository, pid: str, times: int) -> None:
    """``times`` saves of one event each: with EveryNEvents(1), ``times`` snapshots."""
    patient = Patient(f"patient-{pid}")
    for n in range(times):
        patient.raise_event(Admitted(pid, NAME, f"Ward {n}"))
        await repo.save(patient)


def test_the_state_is_sealed_in_the_table_and_loads_back(backend: Backend) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
        await admit(repo, "p-1")
        raw = backend.raw_states()
        assert len(raw) == 1, "a snapshot was taken"
        assert NAME.encode() not in raw[0], "the state is sealed in the table"
        assert b"$pd" in raw[0]
        assert b"Ward 1" not in raw[0], "the whole state, not only the marked fields"
        stored = await snapshots.inner.latest("patient-p-1", KIND)
        assert stored is not None
        assert NAME.encode() not in stored.state
        opened = await snapshots.latest("patient-p-1", KIND)
        assert opened is not None
        assert codec.decode(opened.state) == {"names": [NAME, NAME], "ward": "Ward 1"}
        assert (opened.version, opened.event_id, opened.state_version) == (
            stored.version, stored.event_id, stored.state_version)
        assert store.keys.current([snapshot_subject("patient-p-1")]), "its stream's key"
        loaded = await repo.get("patient-p-1", Patient)
        assert (loaded.names, loaded.ward, loaded.version) == ([NAME, NAME], "Ward 1", 2)

    run(backend, test)


def test_the_repository_loads_through_the_sealed_snapshot(backend: Backend) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
        await admit(repo, "p-2")
        taken = await snapshots.latest("patient-p-2", KIND)
        assert taken is not None
        # A state the events would never fold to, sealed like any other: the load shows
        # it, so it came from the sealed snapshot, opened, and not from a replay.
        marked = codec.encode({"names": ["from the snapshot"], "ward": "Ward S"})
        await snapshots.save(replace(taken, state=marked))
        assert NAME.encode() not in b"".join(backend.raw_states())
        loaded = await repo.get("patient-p-2", Patient)
        assert (loaded.names, loaded.ward, loaded.version) == (["from the snapshot"],
                                                               "Ward S", 2)
        patient = await repo.get("patient-p-2", Patient)  # and the events after it
        patient.raise_event(Admitted("p-2", NAME, "Ward T"))
        await repo.save(patient)
        later = await AsyncRepository(store, snapshots=snapshots).get("patient-p-2", Patient)
        assert later.names[-1] == NAME
        assert later.version == 3

    run(backend, test)


def test_a_changed_or_moved_sealed_state_does_not_open(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
        await admit(repo, "p-1", times=2)
        sealed = await snapshots.inner.latest("patient-p-1", KIND)
        assert sealed is not None
        assert sealed.version == 2
        # Given another state version: it was sealed for state version 1.
        await snapshots.inner.save(replace(sealed, state_version=sealed.state_version + 1))
        with pytest.raises(DecryptionError, match="does not decrypt"):
            await snapshots.latest("patient-p-1", KIND)
        # Moved to another aggregate type of the same stream.
        await snapshots.inner.save(replace(sealed, aggregate_type="tests.Other"))
        with pytest.raises(DecryptionError, match="does not decrypt"):
            await snapshots.latest("patient-p-1", "tests.Other")
        # Moved to the version below (the event there is another one).
        first = await store.read_stream("patient-p-1", 0, 1)
        await snapshots.inner.save(replace(sealed, version=1, event_id=first[0].event_id,
                                           state_version=sealed.state_version))
        with pytest.raises(DecryptionError, match="does not decrypt"):
            await snapshots.latest("patient-p-1", KIND, max_version=1)
        # One character of the ciphertext changed.
        envelope = codec.decode(sealed.state)
        text = envelope["$pd"]["c"]
        envelope["$pd"]["c"] = ("B" if text[5] == "A" else "A").join((text[:5], text[6:]))
        await snapshots.inner.save(replace(sealed, state=codec.encode(envelope)))
        with pytest.raises(DecryptionError, match="does not decrypt"):
            await snapshots.latest("patient-p-1", KIND)
        # The repository does not trust it: it says so and replays the events.
        with caplog.at_level(logging.WARNING, logger="eskit"):
            patient = await AsyncRepository(store, snapshots=snapshots).get("patient-p-1",
                                                                           Patient)
        assert (patient.names, patient.version) == ([NAME, NAME], 2)
        assert "ignoring the snapshot" in caplog.text
        assert "does not decrypt" in caplog.text
        await snapshots.inner.save(sealed)  # put back as it was, it opens again
        assert await snapshots.latest("patient-p-1", KIND) is not None

    run(backend, test)


def test_erasure_deletes_the_snapshot_key_so_an_old_copy_is_useless(backend: Backend) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
        await admit(repo, "p-7")
        await admit(repo, "p-8")
        copy = await snapshots.inner.latest("patient-p-7", KIND)  # as a backup would hold it
        assert copy is not None
        assert store.keys.current([snapshot_subject("patient-p-7")])
        erasure = await store.erase_subject("p-7")  # the store's own snapshot table
        assert erasure.streams == ("patient-p-7",)
        assert erasure.snapshots_deleted == 1
        assert await snapshots.inner.latest("patient-p-7", KIND) is None, "deleted"
        assert await snapshots.latest("patient-p-7", KIND) is None
        assert store.keys.current([snapshot_subject("patient-p-7")]) == {}
        assert store.keys.current([snapshot_subject("patient-p-8")]), "others keep theirs"
        await snapshots.inner.save(copy)  # the old copy comes back (a restored backup)
        assert await snapshots.inner.latest("patient-p-7", KIND) is not None
        assert await snapshots.latest("patient-p-7", KIND) is None, "its key is gone"
        patient = await repo.get("patient-p-7", Patient)  # from the events, redacted
        assert patient.version == 2
        assert patient.names == [ERASED, ERASED]
        assert patient.ward == "Ward 1"
        assert (await repo.get("patient-p-8", Patient)).names == [NAME, NAME]
        assert await snapshots.latest("patient-p-8", KIND) is not None
        # The load replayed the events and snapshotted again (the policy was due): the
        # redacted state, sealed under a new key of the stream.
        fresh = await snapshots.latest("patient-p-7", KIND)
        assert fresh is not None
        assert fresh.version == 2
        assert codec.decode(fresh.state)["names"] == [ERASED, ERASED]
        new_key = store.keys.current([snapshot_subject("patient-p-7")])
        assert new_key
        assert codec.decode(copy.state)["$pd"]["k"] not in {k.key_id for k in new_key.values()}

    run(backend, test)


def test_an_erasure_given_the_sealed_store_deletes_through_it(backend: Backend) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
        await admit_one_by_one(repo, "p-5", times=3)
        await admit_one_by_one(repo, "p-6", times=1)
        erasure = await store.erase_subject("p-5", snapshots=snapshots)
        assert erasure.snapshots_deleted == 3
        assert [s for s in backend.raw_states() if b"p-5" in s] == []
        assert len(backend.raw_states()) == 1, "p-6's snapshot stays"
        assert store.keys.current([snapshot_subject("patient-p-5")]) == {}

    run(backend, test)


def test_pruning_goes_to_the_inner_store(backend: Backend) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(1))
        await admit_one_by_one(repo, "p-1", times=3)
        await admit_one_by_one(repo, "p-2", times=2)
        assert len(backend.raw_states()) == 5
        seen = []
        assert await snapshots.prune(1, batch_size=1, progress=seen.append) == 3
        progress = [(p.aggregates, p.deleted, p.total_aggregates) for p in seen]
        assert progress == [(1, 2, 2), (2, 3, 2)]
        assert len(backend.raw_states()) == 2
        assert await snapshots.latest("patient-p-1", KIND, max_version=2) is None
        newest = await snapshots.latest("patient-p-1", KIND)
        assert newest is not None
        assert newest.version == 3
        assert codec.decode(newest.state)["names"] == [NAME] * 3
        assert await prune_snapshots_async(snapshots, keep=0) == 2
        assert backend.raw_states() == []
        assert (await repo.get("patient-p-2", Patient)).names == [NAME, NAME]

    run(backend, test)


def test_a_snapshot_saved_in_clear_before_wrapping_reads_as_it_is(backend: Backend) -> None:
    async def test(store: AsyncProtectedEventStore, snapshots: AsyncSealedSnapshotStore) -> None:
        result = await store.append("patient-p-3", [Admitted("p-3", NAME, "Ward 0")])
        event = result.events[0]
        clear = Snapshot(event.aggregate_id, KIND, 1, event.event_id, 1,
                         codec.encode({"names": ["in clear"], "ward": "Ward 0"}),
                         datetime.now(UTC))
        await snapshots.inner.save(clear)
        found = await snapshots.latest("patient-p-3", KIND)
        assert found is not None
        assert found.state == clear.state
        loaded = await AsyncRepository(store, snapshots=snapshots).get("patient-p-3", Patient)
        assert loaded.names == ["in clear"]
        assert store.keys.current([snapshot_subject("patient-p-3")]) == {}, "none sealed"

    run(backend, test)
