"""Pruned or deleted snapshots never change what an aggregate loads as.

Snapshots are a cache: with ``keep=N`` on the store, after ``prune`` (any keep,
zero included) and after every snapshot row is deleted behind eskit's back, a
repository loads each version of an aggregate exactly as a full replay does.
The contract cases of pruning itself are in eskit.testing.snapshot_contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit import (
    EventStore,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidInputError,
    Repository,
    SnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
)
from eskit.maintenance import prune_snapshots_async, snapshot_store_beside
from eskit.snapshots import aggregate_type_name
from tests.conftest import new_schema_name
from tests.snapshot_model import Deposited, Ledger, Noted, make_ledger, state_of

Stores = tuple[EventStore, SnapshotStore]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    events: EventStore
    snapshots: SnapshotStore
    if request.param == "memory":
        events = InMemoryEventStore()
        snapshots = InMemorySnapshotStore(events, keep=2)
    elif request.param == "sqlite":
        events = SQLiteEventStore(tmp_path / "events.db")
        snapshots = SQLiteSnapshotStore(events, keep=2)
    else:
        events = eskit.PostgresEventStore(
            request.getfixturevalue("postgres_dsn"), schema=new_schema_name()
        )
        snapshots = eskit.PostgresSnapshotStore(events, keep=2)  # type: ignore[arg-type]
    yield events, snapshots
    events.close()


def _history(repo: Repository, ledger_id: str, rounds: int) -> int:
    """Save the ledger over many rounds so that snapshots are taken as it grows."""
    repo.save(make_ledger(ledger_id, 3))
    for n in range(rounds):
        ledger = repo.get(ledger_id, Ledger)
        ledger.raise_event(Deposited(Decimal(n) / 8))
        ledger.raise_event(Noted(f"k{n % 4}", {"n": n, "text": "zoë"}))
        repo.save(ledger)
    return repo.get(ledger_id, Ledger).version


def _snapshot_versions(snapshots: SnapshotStore, ledger_id: str, head: int) -> list[int]:
    kind = aggregate_type_name(Ledger)
    found = []
    bound = head
    while (snapshot := snapshots.latest(ledger_id, kind, bound)) is not None:
        found.append(snapshot.version)
        bound = snapshot.version - 1
    return sorted(found)


def _assert_every_version_loads_as_a_replay(repo: Repository, ledger_id: str, head: int
                                            ) -> None:
    replay = Repository(repo.event_store)  # no snapshot store: always from the first event
    for version in range(1, head + 1):
        assert state_of(repo.get(ledger_id, Ledger, version=version)) == state_of(
            replay.get(ledger_id, Ledger, version=version)
        ), version
    assert state_of(repo.get(ledger_id, Ledger)) == state_of(replay.get(ledger_id, Ledger))


def test_a_store_with_keep_holds_at_most_n_snapshots_and_loads_the_same(
    stores: Stores,
) -> None:
    events, snapshots = stores
    repo = Repository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(3))
    head = _history(repo, "ledger-1", 15)
    kept = _snapshot_versions(snapshots, "ledger-1", head)
    assert len(kept) == 2
    assert kept[-1] >= head - 3  # the newest is recent: the policy kept snapshotting
    _assert_every_version_loads_as_a_replay(repo, "ledger-1", head)


def test_when_every_snapshot_is_pruned_loading_rebuilds_from_the_events(
    stores: Stores,
) -> None:
    events, snapshots = stores
    repo = Repository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(4))
    head = _history(repo, "ledger-1", 10)
    other_head = _history(repo, "ledger-2", 4)
    before = state_of(repo.get("ledger-1", Ledger))
    assert _snapshot_versions(snapshots, "ledger-1", head)
    assert snapshots.prune(keep=0) > 0
    assert _snapshot_versions(snapshots, "ledger-1", head) == []
    assert _snapshot_versions(snapshots, "ledger-2", other_head) == []
    # A fresh repository (no cache): nothing to start from but the events.
    fresh = Repository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(1000))
    assert state_of(fresh.get("ledger-1", Ledger)) == before
    _assert_every_version_loads_as_a_replay(fresh, "ledger-1", head)
    # The next save snapshots again, and loading from it gives the same state too.
    ledger = fresh.get("ledger-1", Ledger)
    ledger.raise_event(Deposited(Decimal("0.5")))
    Repository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(1)).save(ledger)
    assert _snapshot_versions(snapshots, "ledger-1", head + 1) == [head + 1]
    _assert_every_version_loads_as_a_replay(repo, "ledger-1", head + 1)


def test_snapshot_rows_deleted_behind_eskits_back_change_nothing(
    stores: Stores, tmp_path: Path
) -> None:
    events, snapshots = stores
    repo = Repository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
    head = _history(repo, "ledger-1", 8)
    if isinstance(events, SQLiteEventStore):
        import sqlite3

        with sqlite3.connect(tmp_path / "events.db") as conn:
            conn.execute("DELETE FROM eskit_snapshots")
    elif isinstance(events, InMemoryEventStore):
        assert isinstance(snapshots, InMemorySnapshotStore)
        snapshots.prune(keep=0)
    else:
        with events._connection() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DELETE FROM "{events.schema}".eskit_snapshots')  # type: ignore[attr-defined]
    assert _snapshot_versions(snapshots, "ledger-1", head) == []
    _assert_every_version_loads_as_a_replay(
        Repository(events, snapshots=snapshots), "ledger-1", head
    )


def test_prune_snapshots_takes_the_event_store_or_the_snapshot_store(tmp_path: Path) -> None:
    events = SQLiteEventStore(tmp_path / "events.db")
    try:
        snapshots = SQLiteSnapshotStore(events)  # no keep: saves never prune
        repo = Repository(events, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
        head = _history(repo, "ledger-1", 8)
        assert len(_snapshot_versions(snapshots, "ledger-1", head)) > 3
        seen: list[Any] = []
        deleted = eskit.prune_snapshots(events, 3, batch_size=1, progress=seen.append)
        assert deleted > 0
        assert seen[-1].deleted == deleted
        assert len(_snapshot_versions(snapshots, "ledger-1", head)) == 3
        assert eskit.prune_snapshots(snapshots, 1) == 2
        _assert_every_version_loads_as_a_replay(repo, "ledger-1", head)
        with pytest.raises(InvalidInputError, match="keep"):
            eskit.prune_snapshots(events, -1)
        with pytest.raises(InvalidInputError):
            eskit.prune_snapshots("events.db", 1)  # type: ignore[arg-type]
    finally:
        events.close()
    with pytest.raises(InvalidInputError, match="keeps no snapshots of its own"):
        snapshot_store_beside(InMemoryEventStore())


def test_prune_snapshots_async_prunes_an_async_sqlite_store(tmp_path: Path) -> None:
    import asyncio

    from eskit.aio import AsyncSQLiteEventStore

    path = tmp_path / "events.db"
    events = SQLiteEventStore(path)
    try:
        snapshots = SQLiteSnapshotStore(events)
        head = _history(Repository(events, snapshots=snapshots,
                                   snapshot_policy=EveryNEvents(2)), "ledger-1", 6)
    finally:
        events.close()

    async def main() -> int:
        store = await AsyncSQLiteEventStore.open(path)
        try:
            return await prune_snapshots_async(store, 1)
        finally:
            await store.close()

    assert asyncio.run(main()) > 0
    events = SQLiteEventStore(path)
    try:
        assert len(_snapshot_versions(SQLiteSnapshotStore(events), "ledger-1", head)) == 1
    finally:
        events.close()
