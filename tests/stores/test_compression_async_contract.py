"""The compression contract on the async stores, through the async contract's sync facade."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import Event, EventStore, UndecodableEvent, compact
from eskit.aio import AsyncSQLiteEventStore
from eskit.testing.compression_contract import CompressionContract
from tests.aio.test_async_contract import LoopThread, SyncFacade
from tests.conftest import new_schema_name
from tests.stores import test_contract as sync_contract  # not its classes: pytest collects names


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.stop()


class _AsyncHooks(CompressionContract):
    @pytest.fixture(autouse=True)
    def _loop(self, loop_thread: LoopThread) -> None:
        self.loop = loop_thread

    def inner(self, store: EventStore) -> Any:
        assert isinstance(store, SyncFacade)
        return store.inner

    def subscribed(self, store: EventStore, count: int) -> list[Event | UndecodableEvent]:
        sub = self.inner(store).subscribe(poll_interval=0.01)

        async def take() -> list[Event | UndecodableEvent]:
            got: list[Event | UndecodableEvent] = []
            async for event in sub:
                got.append(event)
                if len(got) == count:
                    break
            sub.stop()
            return got

        return self.loop.run(take())


class TestAsyncSQLiteCompression(_AsyncHooks):
    def create_store(self, tmp_path: Path, compress_threshold: int | None) -> EventStore:
        tmp_path.mkdir(parents=True, exist_ok=True)
        return SyncFacade(self.loop, lambda: AsyncSQLiteEventStore.open(
            tmp_path / "events.db", compress_threshold=compress_threshold
        ))

    def set_threshold(self, store: EventStore, threshold: int | None) -> None:
        self.inner(store).sync_store.compress_threshold = threshold

    def run_compact(self, store: EventStore, **options: Any) -> Any:
        return compact(self.inner(store), **options)  # the async SQLite store is accepted

    def is_stored_compressed(self, store: EventStore, event: Event) -> bool:
        return sync_contract.TestSQLiteCompression.is_stored_compressed(
            self, self.inner(store).sync_store, event  # type: ignore[arg-type]
        )

    def corrupt_payload(self, store: EventStore, event: Event, stored: bytes) -> None:
        sync_contract.TestSQLiteCompression.corrupt_payload(
            self, self.inner(store).sync_store, event, stored  # type: ignore[arg-type]
        )


class TestAsyncPostgresCompression(_AsyncHooks):
    @pytest.fixture(autouse=True)
    def _dsn(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def create_store(self, tmp_path: Path, compress_threshold: int | None) -> EventStore:
        from eskit.aio import AsyncPostgresEventStore

        schema = new_schema_name()
        return SyncFacade(self.loop, lambda: AsyncPostgresEventStore.open(
            self.dsn, schema=schema, compress_threshold=compress_threshold
        ))

    def set_threshold(self, store: EventStore, threshold: int | None) -> None:
        self.inner(store).compress_threshold = threshold

    def run_compact(self, store: EventStore, **options: Any) -> Any:
        # compact is sync: a sync store on the same schema does it.
        from eskit.stores.postgres import PostgresEventStore

        with PostgresEventStore(self.dsn, schema=self.inner(store).schema, setup=False) as sync:
            return compact(sync, **options)

    def is_stored_compressed(self, store: EventStore, event: Event) -> bool:
        return sync_contract.TestPostgresCompression.is_stored_compressed(
            self, self.inner(store), event  # type: ignore[arg-type]
        )

    def corrupt_payload(self, store: EventStore, event: Event, stored: bytes) -> None:
        sync_contract.TestPostgresCompression.corrupt_payload(
            self, self.inner(store), event, stored  # type: ignore[arg-type]
        )
