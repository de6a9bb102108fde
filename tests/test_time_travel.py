"""Time travel: the state at a version, at a moment, and after every event.

Events are written with controlled timestamps (``NewEvent(timestamp=...)``) so
that "as of" has exact answers; snapshots sit between them so that every
question crosses a snapshot boundary somewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    Aggregate,
    AggregateNotFound,
    Event,
    EventStore,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidInputError,
    NewEvent,
    OnDemand,
    Repository,
    SnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
    VersionNotFound,
    handles,
)
from eskit.stores.arguments import VERSION_AT_PAGE
from tests.conftest import new_schema_name
from tests.snapshot_model import Deposited, Ledger, state_of

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _deposit(i: int, at: datetime) -> NewEvent:
    return NewEvent("tests.snap.Deposited", {"amount": Decimal(i)}, timestamp=at)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EventStore,
                                                                             SnapshotStore]]:
    events: EventStore
    snapshots: SnapshotStore
    if request.param == "memory":
        events = InMemoryEventStore()
        snapshots = InMemorySnapshotStore(events)
    elif request.param == "sqlite":
        sqlite_events = SQLiteEventStore(tmp_path / "events.db")
        events, snapshots = sqlite_events, SQLiteSnapshotStore(sqlite_events)
    else:
        from eskit import PostgresEventStore, PostgresSnapshotStore

        pg = PostgresEventStore(
            request.getfixturevalue("postgres_dsn"), schema=new_schema_name(), pool_size=2
        )
        events, snapshots = pg, PostgresSnapshotStore(pg)
    yield events, snapshots
    events.close()


@pytest.fixture
def timeline(stores: tuple[EventStore, SnapshotStore]) -> tuple[Repository, Repository, str]:
    """30 deposits of 1..30, one a minute from T0, with snapshots at versions 10 and 20.

    Returns the repository with snapshots, one without (full replay), and the id.
    """
    events, snapshots = stores
    ledger_id = f"ledger-{uuid.uuid4()}"
    events.append(ledger_id, [_deposit(i + 1, T0 + i * MINUTE) for i in range(30)], 0)
    repo = Repository(events, snapshots=snapshots, snapshot_policy=OnDemand())
    for version in (10, 20):
        repo.take_snapshot(Repository(events).get(ledger_id, Ledger, version=version))
    return repo, Repository(events), ledger_id


def _reads(monkeypatch: pytest.MonkeyPatch, repo: Repository) -> list[tuple[int, Any]]:
    reads: list[tuple[int, Any]] = []
    original = repo.event_store.read_stream

    def read_stream(stream_id: Any, from_version: int = 0, to_version: Any = None,
                    **kwargs: Any) -> list[Event]:
        reads.append((from_version, to_version))
        return original(stream_id, from_version, to_version, **kwargs)

    monkeypatch.setattr(repo.event_store, "read_stream", read_stream)
    return reads


def _applied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The versions of the events applied from now on: what a load replayed."""
    applied: list[int] = []
    original = Aggregate.apply_event

    def apply_event(self: Aggregate, event: Event) -> None:
        applied.append(event.version)
        original(self, event)

    monkeypatch.setattr(Aggregate, "apply_event", apply_event)
    return applied


def _balance_after(version: int) -> Decimal:
    return Decimal(sum(range(1, version + 1)))


# --------------------------------------------------------------------------- by version


def test_get_at_every_version_equals_replaying_that_many_events(timeline: Any) -> None:
    repo, replay, ledger_id = timeline
    for version in range(1, 31):
        past = repo.get(ledger_id, Ledger, version=version)
        assert past.version == version
        assert past.balance == _balance_after(version)
        assert state_of(past) == state_of(replay.get(ledger_id, Ledger, version=version))


@pytest.mark.parametrize(
    ("version", "replayed"),
    [(9, range(1, 10)), (10, []), (15, range(11, 16)), (20, []), (25, range(21, 26))],
)
def test_get_at_a_version_starts_from_the_newest_snapshot_at_or_below_it(
    timeline: Any, monkeypatch: pytest.MonkeyPatch, version: int, replayed: Any
) -> None:
    repo, _, ledger_id = timeline
    applied = _applied(monkeypatch)
    assert repo.get(ledger_id, Ledger, version=version).balance == _balance_after(version)
    assert applied == list(replayed)


def test_a_version_beyond_the_head_is_a_clear_error(timeline: Any) -> None:
    repo, _, ledger_id = timeline
    with pytest.raises(VersionNotFound, match=r"has 30 events: version 31 does not exist") as e:
        repo.get(ledger_id, Ledger, version=31)
    assert (e.value.version, e.value.head, e.value.stream_id) == (31, 30, ledger_id)
    assert isinstance(e.value, InvalidInputError)
    with pytest.raises(AggregateNotFound):
        repo.get("no-such-ledger", Ledger, version=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"version": 0}, {"version": -1}, {"version": "3"}, {"version": 2.0}, {"version": True},
     {"as_of": datetime(2025, 3, 1, 9, 5)}, {"as_of": "2025-03-01T09:05:00Z"},
     {"version": 3, "as_of": T0}],
    ids=str,
)
def test_bad_time_travel_arguments_are_invalid_input(timeline: Any, kwargs: Any) -> None:
    repo, _, ledger_id = timeline
    with pytest.raises(InvalidInputError):
        repo.get(ledger_id, Ledger, **kwargs)


def test_a_past_state_does_not_replace_the_cached_present(timeline: Any) -> None:
    repo, _, ledger_id = timeline
    cached = Repository(repo.event_store, snapshots=repo.snapshots, cache_size=5)
    assert cached.get(ledger_id, Ledger).version == 30
    assert cached.get(ledger_id, Ledger, version=3).version == 3
    assert cached.get(ledger_id, Ledger).version == 30


# --------------------------------------------------------------------------- by time


@pytest.mark.parametrize(
    ("moment", "version"),
    [
        (T0, 1),
        (T0 + 9 * MINUTE, 10),
        (T0 + 9 * MINUTE + timedelta(seconds=59), 10),
        (T0 + 14 * MINUTE, 15),
        (T0 + 25 * MINUTE, 26),
        (T0 + timedelta(days=365), 30),
    ],
)
def test_as_of_gives_the_state_after_the_last_event_recorded_by_then(
    timeline: Any, moment: datetime, version: int
) -> None:
    repo, replay, ledger_id = timeline
    past = repo.get(ledger_id, Ledger, as_of=moment)
    assert past.version == version
    assert state_of(past) == state_of(replay.get(ledger_id, Ledger, version=version))


def test_as_of_crosses_a_snapshot_boundary_reading_only_the_tail(
    timeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _, ledger_id = timeline
    applied = _applied(monkeypatch)
    past = repo.get(ledger_id, Ledger, as_of=T0 + 22 * MINUTE)
    assert past.version == 23
    assert applied == [21, 22, 23]


def test_as_of_in_another_time_zone_names_the_same_moment(timeline: Any) -> None:
    repo, _, ledger_id = timeline
    tokyo = timezone(timedelta(hours=9))
    assert repo.get(ledger_id, Ledger, as_of=(T0 + 4 * MINUTE).astimezone(tokyo)).version == 5


def test_as_of_before_the_first_event_is_aggregate_not_found(timeline: Any) -> None:
    repo, _, ledger_id = timeline
    with pytest.raises(AggregateNotFound, match="no events recorded at or before 2025-03-01"):
        repo.get(ledger_id, Ledger, as_of=T0 - timedelta(microseconds=1))


def test_as_of_follows_version_order_when_timestamps_go_backwards(
    stores: tuple[EventStore, SnapshotStore],
) -> None:
    events, _ = stores
    # Version 3's writer had a slow clock: it says minute 5, after version 2's minute 10.
    stamps = [T0, T0 + 10 * MINUTE, T0 + 5 * MINUTE, T0 + 20 * MINUTE]
    events.append("skewed", [_deposit(i + 1, ts) for i, ts in enumerate(stamps)], 0)
    repo = Repository(events)
    assert repo.get("skewed", Ledger, as_of=T0 + 6 * MINUTE).version == 3  # includes version 2
    assert repo.get("skewed", Ledger, as_of=T0 + 4 * MINUTE).version == 1


# --------------------------------------------------------------------------- history


def test_history_yields_each_event_with_the_state_right_after_it(timeline: Any) -> None:
    repo, _, ledger_id = timeline
    steps = list(repo.history(ledger_id, Ledger))
    assert [event.version for event, _ in steps] == list(range(1, 31))
    assert [state.balance for _, state in steps] == [_balance_after(v) for v in range(1, 31)]
    assert all(state.version == event.version for event, state in steps)
    steps[0][1].balance = Decimal(-1)  # each state is a copy of its own
    assert steps[1][1].balance == 3


def test_history_between_two_versions_starts_from_a_snapshot(
    timeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, _, ledger_id = timeline
    applied = _applied(monkeypatch)
    steps = list(repo.history(ledger_id, Ledger, from_version=22, to_version=25))
    assert [(e.version, s.balance) for e, s in steps] == [
        (v, _balance_after(v)) for v in (23, 24, 25)
    ]
    assert applied == [21, 22, 23, 24, 25]  # the state at 22: snapshot 20 and its tail
    assert list(repo.history(ledger_id, Ledger, from_version=30)) == []
    assert list(repo.history(ledger_id, Ledger, to_version=0)) == []
    assert list(repo.history(ledger_id, Ledger, from_version=7, to_version=7)) == []


def test_history_bounds_are_checked_at_the_call(timeline: Any) -> None:
    repo, _, ledger_id = timeline
    with pytest.raises(VersionNotFound):
        repo.history(ledger_id, Ledger, to_version=31)
    with pytest.raises(VersionNotFound):
        repo.history(ledger_id, Ledger, from_version=31)
    with pytest.raises(InvalidInputError):
        repo.history(ledger_id, Ledger, from_version=5, to_version=4)
    with pytest.raises(AggregateNotFound):
        repo.history("nobody", Ledger)
    with pytest.raises(AggregateNotFound):
        repo.history("nobody", Ledger, to_version=1)


class Tally(Aggregate):
    """State of constant size: copying it after each event stays cheap."""

    def __init__(self, tally_id: Any) -> None:
        super().__init__(tally_id)
        self.balance = Decimal(0)

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


def test_history_of_a_long_stream_reads_it_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    store = InMemoryEventStore()
    store.append("long", [_deposit(1, T0) for _ in range(2_345)], 0)
    repo = Repository(store)
    reads = _reads(monkeypatch, repo)
    steps = repo.history("long", Tally, from_version=100)
    last = None
    count = 0
    for count, (event, state) in enumerate(steps, start=1):  # noqa: B007
        last = (event.version, state.balance)
    assert count == 2_245
    assert last == (2_345, Decimal(2_345))
    assert reads == [(0, 100), (100, 1_100), (1_100, 2_100), (2_100, 3_100), (2_345, 3_345)]


# --------------------------------------------------------------------------- version_at


class SeedStore(EventStore):
    """A store written for the seed tutorial: save_events and get_events only."""

    def __init__(self) -> None:
        self.events: dict[Any, list[Event]] = {}

    def save_events(self, aggregate_id: Any, events: Any, expected_version: int) -> Any:
        self.events.setdefault(aggregate_id, []).extend(events)

    def get_events(self, aggregate_id: Any, from_version: int = 0) -> list[Event]:
        return [e for e in self.events.get(aggregate_id, []) if e.version > from_version]


def test_version_at_pages_back_through_stores_without_a_query_of_their_own() -> None:
    store = SeedStore()
    n = VERSION_AT_PAGE * 2 + 7
    store.append("seed", [_deposit(1, T0 + i * MINUTE) for i in range(n)], 0)
    assert store.version_at("seed", T0 + 3 * MINUTE) == 4
    assert store.version_at("seed", T0 + (n - 2) * MINUTE) == n - 1
    assert store.version_at("seed", T0 - MINUTE) == 0
    assert Repository(store).get("seed", Ledger, as_of=T0 + 9 * MINUTE).version == 10
