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


KILLED_PASS = """
import sys
import eskit
from eskit import SQLiteEventStore, SQLiteSnapshotStore

store = SQLiteEventStore(sys.argv[1])
def progress(p):
    print(p.aggregates, flush=True)  # the parent SIGKILLs this process mid-pass
    sys.stdin.readline()
SQLiteSnapshotStore(store).prune(3, batch_size=7, progress=progress)
"""


def test_a_pass_killed_mid_way_keeps_what_it_committed_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys
    import uuid as uuid_module

    path = tmp_path / "events.db"
    SQLiteEventStore(path).close()  # the schema; snapshot rows are written directly below
    aggregates = 300
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO eskit_snapshots (stream_id, aggregate_type, version, event_id, "
            "state_version, taken_at, state) VALUES (?, 't.T', ?, ?, 1, 0, '{}')",
            [(f"agg-{n:04d}", v, uuid_module.uuid4().bytes)
             for n in range(aggregates) for v in range(1, 6)],
        )
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_PASS, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    for _ in range(5):  # five batches committed and reported, then the sixth is let go
        assert int(child.stdout.readline()) > 0
        child.stdin.write("\n")
        child.stdin.flush()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        per = dict(conn.execute(
            "SELECT stream_id, group_concat(version) FROM "
            "(SELECT * FROM eskit_snapshots ORDER BY stream_id, version) GROUP BY stream_id"
        ).fetchall())
    assert len(per) == aggregates  # no aggregate lost its snapshots
    states = set(per.values())
    assert states <= {"1,2,3,4,5", "3,4,5"}  # each aggregate pruned whole, or not at all
    pruned = sum(1 for v in per.values() if v == "3,4,5")
    assert 5 * 7 <= pruned < aggregates
    events = SQLiteEventStore(path)
    try:
        rest = SQLiteSnapshotStore(events).prune(3)
    finally:
        events.close()
    assert rest == (aggregates - pruned) * 2
