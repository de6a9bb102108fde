"""AsyncRepository with snapshots and time travel keeps eskit.Repository's promises.

Both repositories run the same plans (eskit.loading); these tests check the async
front end carries them out on every async store, and that sync and async agree
on one shared store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    AggregateNotFound,
    EveryNEvents,
    InMemorySnapshotStore,
    InvalidInputError,
    NewEvent,
    OnDemand,
    Repository,
    StoreError,
    VersionNotFound,
)
from eskit.aio import (
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncInMemorySnapshotStore,
    AsyncRepository,
    AsyncSnapshotStore,
    AsyncSQLiteEventStore,
    AsyncSQLiteSnapshotStore,
)
from eskit.snapshots import aggregate_type_name, snapshot_failures
from tests.conftest import new_schema_name
from tests.snapshot_model import Deposited, Ledger, Opened, state_of

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_failure_counters() -> Iterator[None]:
    # The counters are per process; each test starts from none.
    snapshot_failures.reset()
    yield
    snapshot_failures.reset()
Both = tuple[AsyncEventStore, AsyncSnapshotStore]
OpenBoth = Callable[[], Awaitable[Both]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_both(request: pytest.FixtureRequest, tmp_path: Path) -> OpenBoth:
    if request.param == "memory":
        async def memory() -> Both:
            events = AsyncInMemoryEventStore()
            return events, AsyncInMemorySnapshotStore(events)

        return memory
    if request.param == "sqlite":
        async def sqlite() -> Both:
            events = await AsyncSQLiteEventStore.open(tmp_path / "events.db")
            return events, await AsyncSQLiteSnapshotStore.open(events)

        return sqlite
    dsn = request.getfixturevalue("postgres_dsn")

    async def postgres() -> Both:
        from eskit.aio import AsyncPostgresEventStore, AsyncPostgresSnapshotStore

        events = await AsyncPostgresEventStore.open(dsn, schema=new_schema_name(), pool_size=2)
        return events, await AsyncPostgresSnapshotStore.open(events)

    return postgres


def _run(open_both: OpenBoth, body: Callable[[AsyncEventStore, AsyncSnapshotStore],
                                             Awaitable[None]]) -> None:
    async def main() -> None:
        events, snapshots = await open_both()
        try:
            await body(events, snapshots)
        finally:
            await events.close()

    asyncio.run(main())


async def _timeline(events: AsyncEventStore, snapshots: AsyncSnapshotStore) -> AsyncRepository:
    """20 deposits of 1..20, a minute apart from T0, a snapshot at version 10."""
    await events.append("led", [
        NewEvent("tests.snap.Deposited", {"amount": Decimal(i + 1)},
                 timestamp=T0 + timedelta(minutes=i))
        for i in range(20)
    ], 0)
    repo = AsyncRepository(events, snapshots=snapshots, snapshot_policy=OnDemand())
    await repo.take_snapshot(await repo.get("led", Ledger, version=10))
    return repo


def test_every_n_events_snapshots_and_loads_from_the_newest(open_both: OpenBoth) -> None:
    async def body(events: AsyncEventStore, snapshots: AsyncSnapshotStore) -> None:
        repo = AsyncRepository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(4))
        ledger = Ledger("a-1")
        ledger.raise_event(Opened("ann"))
        for i in range(10):
            ledger.raise_event(Deposited(Decimal(i)))
            await repo.save(ledger)
        newest = await snapshots.latest("a-1", aggregate_type_name(Ledger))
        assert newest is not None
        assert newest.version == 8
        loaded = await repo.get("a-1", Ledger)
        assert state_of(loaded) == state_of(ledger)

    _run(open_both, body)


def test_time_travel_by_version_and_by_time_across_a_snapshot(open_both: OpenBoth) -> None:
    async def body(events: AsyncEventStore, snapshots: AsyncSnapshotStore) -> None:
        repo = await _timeline(events, snapshots)
        for version in (3, 10, 14, 20):
            past = await repo.get("led", Ledger, version=version)
            assert past.balance == sum(range(1, version + 1))
        assert (await repo.get("led", Ledger, as_of=T0 + timedelta(minutes=12))).version == 13
        with pytest.raises(VersionNotFound):
            await repo.get("led", Ledger, version=21)
        with pytest.raises(AggregateNotFound):
            await repo.get("led", Ledger, as_of=T0 - timedelta(seconds=1))
        with pytest.raises(InvalidInputError):
            await repo.get("led", Ledger, as_of=datetime(2025, 3, 1))

    _run(open_both, body)


def test_history_yields_each_state_and_checks_its_bounds(open_both: OpenBoth) -> None:
    async def body(events: AsyncEventStore, snapshots: AsyncSnapshotStore) -> None:
        repo = await _timeline(events, snapshots)
        steps = [(e.version, s.balance) async for e, s in repo.history(
            "led", Ledger, from_version=12, to_version=15
        )]
        assert steps == [(v, sum(range(1, v + 1))) for v in (13, 14, 15)]
        with pytest.raises(InvalidInputError):
            repo.history("led", Ledger, from_version=3, to_version=2)  # at the call
        with pytest.raises(VersionNotFound):
            async for _ in repo.history("led", Ledger, to_version=99):
                pass

    _run(open_both, body)


def test_sync_and_async_repositories_share_snapshots_on_one_store() -> None:
    async def main() -> None:
        events = AsyncInMemoryEventStore()
        snapshots = AsyncInMemorySnapshotStore(events)
        repo = AsyncRepository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(5))
        ledger = Ledger("shared")
        for i in range(12):
            ledger.raise_event(Deposited(Decimal(i)))
        await repo.save(ledger)
        sync_repo = Repository(events.sync_store, snapshots=snapshots.sync_snapshots)
        assert state_of(sync_repo.get("shared", Ledger)) == state_of(ledger)
        assert snapshots.sync_snapshots.latest("shared", aggregate_type_name(Ledger)) is not None

    asyncio.run(main())


class _Broken(AsyncSnapshotStore):
    async def _save(self, stream: str, snapshot: Any) -> None:
        raise StoreError("snapshot table is gone")

    async def _latest(self, *args: Any) -> Any:
        raise StoreError("snapshot table is gone")


def test_a_broken_snapshot_store_never_fails_a_save_or_a_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        events = AsyncInMemoryEventStore()
        repo = AsyncRepository(events, snapshots=_Broken(), snapshot_policy=EveryNEvents(1))
        ledger = Ledger("b")
        ledger.raise_event(Opened("ann"))
        await repo.save(ledger)
        assert (await repo.get("b", Ledger)).owner == "ann"
        with pytest.raises(StoreError):
            await repo.take_snapshot(ledger)

    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        asyncio.run(main())
    assert "could not snapshot Ledger 'b' at version 1" in caplog.text
    assert "could not be read with its events (snapshot table is gone)" in caplog.text


def test_an_async_repository_counts_a_failing_snapshot_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        events = AsyncInMemoryEventStore()
        repo = AsyncRepository(events, snapshots=_Broken(), snapshot_policy=EveryNEvents(1))
        ledger = Ledger("c")
        ledger.raise_event(Opened("ann"))
        await repo.save(ledger)
        for i in range(3):
            ledger.raise_event(Deposited(Decimal(i)))
            await repo.save(ledger)

    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        asyncio.run(main())
    assert caplog.text.count("could not snapshot Ledger 'c'") == 1
    assert snapshot_failures.count(Ledger) == 4
    assert "snapshot table is gone" in (snapshot_failures.last_error(Ledger) or "")


def test_an_async_repository_refuses_a_sync_snapshot_store() -> None:
    events = AsyncInMemoryEventStore()
    with pytest.raises(InvalidInputError, match="AsyncSnapshotStore"):
        AsyncRepository(events, snapshots=InMemorySnapshotStore(events.sync_store))  # type: ignore[arg-type]
