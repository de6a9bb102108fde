"""The asyncio blob stores: the local ones through AsyncBlobStore, PostgreSQL natively.

Each test runs its coroutine with ``asyncio.run`` (as tests/aio does), so a
PostgreSQL pool is opened in the loop that uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eskit import BlobNotFoundError, BlobRef, DamagedStoreError, InvalidInputError, NewEvent
from eskit.aio import AsyncPostgresEventStore, AsyncSQLiteEventStore
from eskit.blobs import AsyncBlobStore, AsyncPostgresBlobStore, DirectoryBlobStore, SQLiteBlobStore
from tests.conftest import new_schema_name

Opener = Callable[[], Awaitable[tuple[Any, Any]]]


@pytest.fixture(params=["sqlite", "directory", "postgres"])
def open_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")

        async def open_postgres() -> tuple[Any, Any]:
            store = await AsyncPostgresEventStore.open(dsn, schema=new_schema_name())
            return store, await AsyncPostgresBlobStore.open(store)

        return open_postgres

    async def open_local() -> tuple[Any, Any]:
        store = await AsyncSQLiteEventStore.open(tmp_path / "events.db")
        local = (SQLiteBlobStore(store.sync_store) if request.param == "sqlite"
                 else DirectoryBlobStore(tmp_path / "blobs"))
        return store, AsyncBlobStore(local)

    return open_local


def test_put_get_exists_delete_and_an_event_holding_the_ref(open_pair: Opener) -> None:
    async def scenario() -> None:
        store, blobs = await open_pair()
        try:
            data = bytes(range(256)) * 2048
            refs = await asyncio.gather(*(blobs.put(data, media_type="image/png")
                                          for _ in range(8)))
            assert len(set(refs)) == 1
            ref = refs[0]
            await store.append("doc-1", [NewEvent("Attached", {"file": ref})])
            [event] = await store.read_stream("doc-1")
            assert isinstance(event.event_data["file"], BlobRef)
            assert await blobs.get(event.event_data["file"]) == data
            assert await blobs.exists(ref)
            assert await blobs.delete(ref) is True
            assert await blobs.delete(ref) is False
            with pytest.raises(BlobNotFoundError):
                await blobs.get(ref)
            with pytest.raises(InvalidInputError):
                await blobs.put(123)
            with pytest.raises(InvalidInputError):
                await blobs.get("sha256:abc")
        finally:
            await store.close()

    asyncio.run(scenario())


def test_postgres_refuses_damaged_bytes(postgres_dsn: str) -> None:
    import psycopg

    async def scenario() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        try:
            blobs = await AsyncPostgresBlobStore.open(store)
            ref = await blobs.put(b"original")
            async with await psycopg.AsyncConnection.connect(postgres_dsn,
                                                             autocommit=True) as conn:
                await conn.execute(f'UPDATE "{store.schema}".eskit_blobs SET data = %s',
                                   (b"evil",))
            with pytest.raises(DamagedStoreError):
                await blobs.get(ref)
        finally:
            await store.close()

    asyncio.run(scenario())
