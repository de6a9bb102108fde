"""The asyncio erasure deletes the snapshots in the store's own database (SQLite, PostgreSQL)."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from eskit import Snapshot, codec
from eskit.aio import AsyncSQLiteEventStore
from eskit.protection import ERASED, LocalKeyProvider
from eskit.protection import aio as protection_aio
from tests.conftest import new_schema_name
from tests.protection.test_sqlite_shredding import NAME, CustomerJoined

KEYS = LocalKeyProvider({"m1": b"\x03" * 32})


def _snapshot(event) -> Snapshot:
    return Snapshot(event.aggregate_id, "t.Customer", event.version, event.event_id, 1,
                    codec.encode({"name": event.event_data["name"]}), datetime.now(UTC))


def test_async_sqlite_erasure_deletes_the_files_own_snapshots(tmp_path: Path) -> None:
    from eskit.stores.sqlite_snapshots import SQLiteSnapshotStore

    async def main() -> None:
        inner = await AsyncSQLiteEventStore.open(tmp_path / "shop.db")
        store = await protection_aio.protect(inner, KEYS)
        try:
            result = await store.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
            snapshots = SQLiteSnapshotStore(inner.sync_store)
            snapshots.save(_snapshot(result.events[0]))
            erasure = await store.erase_subject("c1")
            assert erasure.snapshots_deleted == 1
            assert erasure.purge.complete
            assert snapshots.latest("customer-c1", "t.Customer") is None
            events = await store.read_stream("customer-c1")
            assert events[0].event_data["name"] == ERASED
        finally:
            await store.close()

    asyncio.run(main())


def test_async_postgres_erasure_deletes_the_schemas_own_snapshots(postgres_dsn: str) -> None:
    from eskit.aio import AsyncPostgresEventStore
    from eskit.aio.postgres_snapshots import AsyncPostgresSnapshotStore

    async def main() -> None:
        inner = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        store = await protection_aio.protect(inner, KEYS)
        try:
            result = await store.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
            snapshots = await AsyncPostgresSnapshotStore.open(inner)
            await snapshots.save(_snapshot(result.events[0]))
            erasure = await store.erase_subject("c1")
            assert erasure.snapshots_deleted == 1
            assert await snapshots.latest("customer-c1", "t.Customer") is None
        finally:
            await store.close()

    asyncio.run(main())


def test_async_erasure_deletes_from_an_async_sqlite_snapshot_store_given(
        tmp_path: Path) -> None:
    # snapshots= an AsyncSQLiteSnapshotStore: the erasure walks its aggregates (it used
    # to raise StoreError there, after the key was deleted, leaving the snapshot and the
    # streams' snapshot keys behind).
    from eskit.aio.snapshots import AsyncSQLiteSnapshotStore
    from eskit.protection.snapshots import snapshot_subject

    async def main() -> None:
        inner = await AsyncSQLiteEventStore.open(tmp_path / "shop.db")
        store = await protection_aio.protect(inner, KEYS)
        try:
            first = await store.append("customer-c1", [CustomerJoined("c1", NAME, "basic")])
            other = await store.append("customer-c2", [CustomerJoined("c2", NAME, "basic")])
            snapshots = await AsyncSQLiteSnapshotStore.open(inner)
            await snapshots.save(_snapshot(first.events[0]))
            await snapshots.save(_snapshot(other.events[0]))
            await store._keys_for([snapshot_subject("customer-c1")])  # as a sealed save does
            erasure = await store.erase_subject("c1", snapshots=snapshots)
            assert erasure.snapshots_deleted == 1
            assert await snapshots.latest("customer-c1", "t.Customer") is None
            assert await snapshots.latest("customer-c2", "t.Customer") is not None
            assert store.keys.current([snapshot_subject("customer-c1")]) == {}
        finally:
            await store.close()

    asyncio.run(main())
