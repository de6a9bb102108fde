"""Snapshots through the repository: taken by policy, used when sound, never trusted blindly.

Every test compares against a full replay (a repository without snapshots), so
"correct" always means "the state the events give".
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eskit import (
    Aggregate,
    ConcurrencyError,
    EncodingError,
    EventStore,
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidInputError,
    NoSnapshots,
    OnDemand,
    Repository,
    SnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
    StoreBusyError,
    StoreError,
    snapshot_upcaster,
)
from eskit.loading import HISTORY_PAGE
from eskit.snapshots import aggregate_type_name, snapshot_failures
from eskit.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.conftest import new_schema_name
from tests.snapshot_model import (
    Deposited,
    Ledger,
    Noted,
    Opened,
    Tagged,
    Untagged,
    make_ledger,
    state_of,
)

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "v1_customers.db"


@pytest.fixture(autouse=True)
def _fresh_failure_counters() -> Iterator[None]:
    # The counters are per process; each test starts from none.
    snapshot_failures.reset()
    yield
    snapshot_failures.reset()


class Backend:
    """An event store, the snapshot store beside it, and raw access for corrupting rows."""

    def __init__(self, kind: str, events: EventStore, snapshots: SnapshotStore,
                 dsn: str | None = None) -> None:
        self.kind, self.events, self.snapshots, self.dsn = kind, events, snapshots, dsn

    def repository(self, policy: Any = None, **kwargs: Any) -> Repository:
        return Repository(
            self.events, snapshots=self.snapshots,
            snapshot_policy=OnDemand() if policy is None else policy, **kwargs,
        )

    def replay(self) -> Repository:
        return Repository(self.events)

    def update_snapshots(self, assignments: str, *params: Any) -> None:
        """Run ``UPDATE eskit_snapshots SET <assignments>`` on the raw table."""
        if self.kind == "sqlite":
            assert isinstance(self.events, SQLiteEventStore)
            with sqlite3.connect(self.events.path) as conn:
                conn.execute(f"UPDATE eskit_snapshots SET {assignments}", params)
            conn.close()
        else:
            import psycopg

            schema = self.events.schema  # type: ignore[attr-defined]
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(
                    f'UPDATE "{schema}".eskit_snapshots SET {assignments.replace("?", "%s")}',
                    params,
                )


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    if kind == "memory":
        events: EventStore = InMemoryEventStore()
        return Backend(kind, events, InMemorySnapshotStore(events))
    if kind == "sqlite":
        sqlite_events = SQLiteEventStore(tmp_path / "events.db")
        return Backend(kind, sqlite_events, SQLiteSnapshotStore(sqlite_events))
    from eskit import PostgresEventStore, PostgresSnapshotStore

    dsn = request.getfixturevalue("postgres_dsn")
    pg = PostgresEventStore(dsn, schema=new_schema_name(), pool_size=3)
    return Backend(kind, pg, PostgresSnapshotStore(pg), dsn)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = _open(request.param, tmp_path, request)
    yield b
    b.events.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backends with real rows that raw SQL can damage."""
    b = _open(request.param, tmp_path, request)
    yield b
    b.events.close()


def _spy_reads(monkeypatch: pytest.MonkeyPatch, store: EventStore) -> list[tuple[int, Any]]:
    reads: list[tuple[int, Any]] = []
    original = store.read_stream

    def read_stream(stream_id: Any, from_version: int = 0, to_version: Any = None,
                    **kwargs: Any) -> Any:
        reads.append((from_version, to_version))
        return original(stream_id, from_version, to_version, **kwargs)

    monkeypatch.setattr(store, "read_stream", read_stream)
    return reads


def _spy_applied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The versions of the events applied to any aggregate from now on (what was replayed)."""
    applied: list[int] = []
    original = Aggregate.apply_event

    def apply_event(self: Aggregate, event: Any) -> None:
        applied.append(event.version)
        original(self, event)

    monkeypatch.setattr(Aggregate, "apply_event", apply_event)
    return applied


def _saved_ledger(repo: Repository, deposits: int, *, per_save: int = 1) -> Ledger:
    """A ledger saved ``per_save`` events at a time (so policies see each save)."""
    ledger = Ledger(uuid.uuid4())
    ledger.raise_event(Opened("ann"))
    repo.save(ledger)
    for i in range(deposits):
        ledger.raise_event(Deposited(Decimal(i + 1) / 4))
        if (i + 1) % per_save == 0:
            repo.save(ledger)
    repo.save(ledger)
    return ledger


def _versions(backend: Backend, ledger_id: Any, upto: int) -> list[int]:
    """The versions of the snapshots stored for a ledger, found by probing."""
    found: list[int] = []
    bound = upto
    while bound > 0:
        snap = backend.snapshots.latest(ledger_id, aggregate_type_name(Ledger), bound)
        if snap is None:
            break
        found.append(snap.version)
        bound = snap.version - 1
    return sorted(found)


# --------------------------------------------------------------------------- loading


def test_loading_via_a_snapshot_replays_only_the_events_after_it(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = backend.repository()
    ledger = make_ledger(uuid.uuid4(), 40)
    repo.save(ledger)
    snapshot = repo.take_snapshot(repo.get(ledger.aggregate_id, Ledger))
    for i in range(7):
        ledger.raise_event(Deposited(Decimal(i)))
    repo.save(ledger)
    applied = _spy_applied(monkeypatch)
    loaded = repo.get(ledger.aggregate_id, Ledger)
    assert applied == list(range(snapshot.version + 1, snapshot.version + 8))
    assert state_of(loaded) == state_of(backend.replay().get(ledger.aggregate_id, Ledger))
    assert loaded.version == snapshot.version + 7


def test_snapshot_state_keeps_decimals_sets_dicts_tuples_and_times_exactly(
    backend: Backend,
) -> None:
    from datetime import UTC, datetime

    repo = backend.repository()
    ledger = make_ledger("exact", 5)
    ledger.raise_event(Noted("nested", {"when": datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                                        "ids": (uuid.UUID(int=7),), "big": 2**80,
                                        "nan": Decimal("NaN")}))
    repo.save(ledger)
    repo.take_snapshot(ledger)
    loaded = repo.get("exact", Ledger)
    assert state_of(loaded) == state_of(ledger)
    assert loaded.tags == ledger.tags
    assert isinstance(loaded.tags, set)
    assert loaded.moves == ledger.moves
    assert isinstance(loaded.moves[0], tuple)
    assert loaded.notes["nested"]["ids"] == (uuid.UUID(int=7),)


def test_a_loaded_aggregate_saves_and_snapshots_again_normally(backend: Backend) -> None:
    repo = backend.repository(EveryNEvents(5))
    ledger = _saved_ledger(repo, 12)
    again = repo.get(ledger.aggregate_id, Ledger)
    for i in range(6):
        again.raise_event(Tagged(f"x{i}"))
        repo.save(again)
    assert state_of(repo.get(ledger.aggregate_id, Ledger)) == state_of(
        backend.replay().get(ledger.aggregate_id, Ledger)
    )


# --------------------------------------------------------------------------- policies


def test_every_n_events_takes_a_snapshot_each_time_n_events_were_added(
    backend: Backend,
) -> None:
    repo = backend.repository(EveryNEvents(10))
    ledger = _saved_ledger(repo, 34)  # versions 1..35, saved one event at a time
    assert _versions(backend, ledger.aggregate_id, 35) == [10, 20, 30]


def test_a_batch_crossing_several_boundaries_takes_one_snapshot_at_its_end(
    backend: Backend,
) -> None:
    repo = backend.repository(EveryNEvents(10))
    ledger = make_ledger(uuid.uuid4(), 25)  # 1 + 25 + 9 = 35 events in one save
    repo.save(ledger)
    assert _versions(backend, ledger.aggregate_id, 35) == [35]


def test_loading_a_long_stream_without_a_snapshot_takes_one(backend: Backend) -> None:
    ledger = make_ledger(uuid.uuid4(), 30)
    backend.replay().save(ledger)  # written by code that knows nothing of snapshots
    repo = backend.repository(EveryNEvents(10))
    repo.get(ledger.aggregate_id, Ledger)
    assert _versions(backend, ledger.aggregate_id, 100) == [ledger.version]


def test_on_demand_snapshots_only_when_asked(backend: Backend) -> None:
    repo = backend.repository(OnDemand())
    ledger = _saved_ledger(repo, 30)
    repo.get(ledger.aggregate_id, Ledger)
    assert _versions(backend, ledger.aggregate_id, 100) == []
    taken = repo.take_snapshot(repo.get(ledger.aggregate_id, Ledger))
    assert taken.version == ledger.version
    assert _versions(backend, ledger.aggregate_id, 100) == [ledger.version]


def test_no_snapshots_neither_takes_nor_reads_them(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make_ledger(uuid.uuid4(), 20)
    backend.repository().save(ledger)
    backend.repository().take_snapshot(ledger)
    repo = backend.repository(NoSnapshots())
    reads = _spy_reads(monkeypatch, backend.events)
    applied = _spy_applied(monkeypatch)
    repo.get(ledger.aggregate_id, Ledger)
    assert reads == [(0, HISTORY_PAGE)], "every event, from the first, in one page"
    assert applied == list(range(1, ledger.version + 1))
    with pytest.raises(InvalidInputError, match="switched off"):
        repo.take_snapshot(ledger)


class Journal(Ledger):
    pass


class Diary(Journal):
    pass


def test_a_policy_mapping_gives_each_class_its_own_n_along_the_mro() -> None:
    store = InMemoryEventStore()
    snapshots = InMemorySnapshotStore(store)
    repo = Repository(store, snapshots=snapshots, snapshot_policy={
        Aggregate: EveryNEvents(50), Journal: EveryNEvents(5),
    })
    counts = {}
    for cls in (Ledger, Journal, Diary):
        ledger = cls(f"{cls.__name__}-1")
        for i in range(12):
            ledger.raise_event(Tagged(str(i)))
            repo.save(ledger)
        counts[cls.__name__] = [
            getattr(snapshots.latest(ledger.aggregate_id, aggregate_type_name(cls), v), "version",
                    None)
            for v in (4, 5, 10, 12)
        ]
    assert counts == {
        "Ledger": [None, None, None, None],
        "Journal": [None, 5, 10, 10],
        "Diary": [None, 5, 10, 10],  # inherits Journal's policy
    }


def test_a_policy_mapping_without_a_default_leaves_other_classes_on_demand() -> None:
    store = InMemoryEventStore()
    snapshots = InMemorySnapshotStore(store)
    repo = Repository(store, snapshots=snapshots, snapshot_policy={Journal: EveryNEvents(1)})
    ledger = make_ledger("plain", 3)
    repo.save(ledger)
    assert snapshots.latest("plain", aggregate_type_name(Ledger)) is None
    assert repo.take_snapshot(ledger).version == ledger.version


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", None])
def test_every_n_events_needs_a_positive_int(bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        EveryNEvents(bad)


@pytest.mark.parametrize(
    "bad", ["often", {Ledger: 10}, {"Ledger": EveryNEvents(1)}, {int: EveryNEvents(1)}]
)
def test_a_bad_policy_choice_is_invalid_input(bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        Repository(InMemoryEventStore(), snapshot_policy=bad)


# --------------------------------------------------------------------------- failures stay quiet


class FlakySnapshots(SnapshotStore):
    """Wraps a snapshot store; the first ``failures`` saves fail like a database would."""

    def __init__(self, inner: SnapshotStore, failures: int, error: Exception | None = None):
        self.inner, self.failures = inner, failures
        self.error = error or StoreError("database is down")
        self.attempts = 0

    def _save(self, stream: str, snapshot: Any) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        self.inner.save(snapshot)

    def _latest(self, aggregate_id: Any, stream: str, aggregate_type: str,
                max_version: Any) -> Any:
        return self.inner.latest(aggregate_id, aggregate_type, max_version)


def test_a_failed_snapshot_write_never_fails_the_save_and_is_retried_next_save(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryEventStore()
    flaky = FlakySnapshots(InMemorySnapshotStore(store), failures=1)
    repo = Repository(store, snapshots=flaky, snapshot_policy=EveryNEvents(5))
    ledger = Ledger("flaky")
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        for i in range(5):
            ledger.raise_event(Tagged(str(i)))
            assert repo.save(ledger) is not None  # the events are saved regardless
    assert store.head_version("flaky") == 5
    assert flaky.attempts == 1
    assert "could not snapshot Ledger 'flaky' at version 5" in caplog.text
    assert "database is down" in caplog.text
    ledger.raise_event(Tagged("5"))
    repo.save(ledger)  # due again: the failed snapshot is retried
    assert flaky.attempts == 2
    found = flaky.latest("flaky", aggregate_type_name(Ledger))
    assert found is not None
    assert found.version == 6


def test_a_failed_snapshot_write_is_retried_by_the_next_load() -> None:
    store = InMemoryEventStore()
    flaky = FlakySnapshots(InMemorySnapshotStore(store), failures=1)
    repo = Repository(store, snapshots=flaky, snapshot_policy=EveryNEvents(5))
    repo.save(make_ledger("later", 6))
    assert flaky.attempts == 1
    assert flaky.latest("later", aggregate_type_name(Ledger)) is None
    Repository(store, snapshots=flaky, snapshot_policy=EveryNEvents(5)).get("later", Ledger)
    assert flaky.attempts == 2
    assert flaky.latest("later", aggregate_type_name(Ledger)) is not None


class Unstorable(Aggregate):
    def __init__(self, aggregate_id: Any) -> None:
        super().__init__(aggregate_id)
        self.lock = threading.Lock()  # the codec cannot store this

    def handle_Touched(self, data: Any) -> None:
        pass


class BrokenHook(Ledger):
    def snapshot_state(self) -> dict[str, Any]:
        raise RuntimeError("hook bug")


@pytest.mark.parametrize(
    ("cls", "message"),
    [(Unstorable, "cannot encode a value of type _thread.lock"), (BrokenHook, "hook bug")],
)
def test_state_that_cannot_be_snapshotted_is_logged_and_the_save_still_succeeds(
    cls: type[Aggregate], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryEventStore()
    repo = Repository(store, snapshots=InMemorySnapshotStore(store),
                      snapshot_policy=EveryNEvents(1))
    aggregate = cls("x")
    if cls is Unstorable:
        aggregate.raise_event("Touched", {})
    else:
        aggregate.raise_event(Tagged("t"))
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        assert repo.save(aggregate) is not None
    assert store.head_version("x") == 1
    assert message in caplog.text
    with pytest.raises((EncodingError, RuntimeError)):
        repo.take_snapshot(aggregate)  # asked for explicitly: the error is the caller's


def test_a_sqlite_snapshot_gives_up_quickly_when_another_process_holds_the_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)  # appends would wait up to 30 s for the lock
    repo = Repository(store, snapshots=SQLiteSnapshotStore(store, lock_timeout=0.2),
                      snapshot_policy=OnDemand())
    ledger = make_ledger("busy", 1)
    repo.save(ledger)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusyError):
            repo.take_snapshot(ledger)
        assert time.monotonic() - started < 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert repo.take_snapshot(ledger).version == ledger.version  # and works once it is free
    store.close()


# --------------------------------------------------------------------------- state versions


class LedgerV1(Ledger):
    snapshot_name = "tests.snap.EvolvingLedger"


class LedgerV2(Ledger):
    snapshot_name = "tests.snap.EvolvingLedger"
    state_version = 2

    def __init__(self, ledger_id: Any) -> None:
        super().__init__(ledger_id)
        self.deposits = 0

    def _deposited(self, event: Deposited) -> None:  # type: ignore[override]
        super()._deposited(event)
        self.deposits += 1


@snapshot_upcaster(LedgerV2, from_version=1)
def _count_deposits(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "deposits": len(state["moves"])}


class LedgerV3(LedgerV2):
    snapshot_name = "tests.snap.EvolvingLedger"
    state_version = 3  # and no upcaster from 2


def _v1_snapshot(backend: Backend, deposits: int = 20) -> Ledger:
    ledger = LedgerV1(uuid.uuid4())
    ledger.raise_event(Opened("ann"))
    for i in range(deposits):
        ledger.raise_event(Deposited(Decimal(i)))
    repo = backend.repository()
    repo.save(ledger)
    repo.take_snapshot(ledger)
    ledger.raise_event(Deposited(Decimal(100)))
    repo.save(ledger)
    return ledger


def test_an_older_snapshot_is_upcast_by_the_registered_function(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = _v1_snapshot(backend)
    applied = _spy_applied(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        loaded = backend.repository().get(ledger.aggregate_id, LedgerV2)
    assert applied == [22], "the v1 snapshot at version 21 was used"
    assert caplog.text == ""
    assert loaded.deposits == 21
    assert state_of(loaded) == state_of(backend.replay().get(ledger.aggregate_id, LedgerV2))


def test_a_snapshot_with_no_upcaster_path_is_ignored_and_the_events_replayed(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = _v1_snapshot(backend)
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        loaded = backend.repository().get(ledger.aggregate_id, LedgerV3)
    assert "no snapshot upcaster goes from 2 to 3" in caplog.text
    assert state_of(loaded) == state_of(backend.replay().get(ledger.aggregate_id, LedgerV3))


def test_a_snapshot_from_a_newer_state_version_is_ignored(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = LedgerV3(uuid.uuid4())
    ledger.raise_event(Deposited(Decimal(1)))
    backend.repository().save(ledger)
    backend.repository().take_snapshot(ledger)
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        loaded = backend.repository().get(ledger.aggregate_id, LedgerV1)
    assert "newer than LedgerV1's (1)" in caplog.text
    assert state_of(loaded) == state_of(backend.replay().get(ledger.aggregate_id, LedgerV1))


class GrownLedger(Ledger):
    """Gained an attribute but nobody raised state_version: the default restore notices."""

    snapshot_name = "tests.snap.GrowingLedger"

    def __init__(self, ledger_id: Any) -> None:
        super().__init__(ledger_id)
        self.limit = Decimal(500)


class SmallLedger(Ledger):
    snapshot_name = "tests.snap.GrowingLedger"


def test_a_snapshot_lacking_an_attribute_the_class_now_has_is_not_restored(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = make_ledger("grown", 3)
    small = SmallLedger("grown")
    for event in ledger.get_uncommitted_events():
        small.apply_event(event)
    backend.replay().save(ledger)
    backend.repository().take_snapshot(small)
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        loaded = backend.repository().get("grown", GrownLedger)
    assert "no value for limit" in caplog.text
    assert loaded.limit == Decimal(500)


def test_upcasters_are_checked_when_registered() -> None:
    with pytest.raises(InvalidInputError):
        snapshot_upcaster(int, from_version=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        snapshot_upcaster(Ledger, from_version=0)
    with pytest.raises(InvalidInputError, match="already has a snapshot upcaster"):
        snapshot_upcaster(LedgerV2, from_version=1)(lambda state: state)


# --------------------------------------------------------------------------- hooks and names


class Shelf(Aggregate):
    """Keeps a derived index it does not want stored: custom hooks."""

    state_version = 4

    def __init__(self, shelf_id: Any) -> None:
        super().__init__(shelf_id)
        self.books: list[str] = []
        self.index: dict[str, int] = {}

    def handle_Shelved(self, data: dict[str, Any]) -> None:
        self.books.append(data["title"])
        self.index = {t: i for i, t in enumerate(self.books)}

    def snapshot_state(self) -> dict[str, Any]:
        return {"books": self.books}

    def restore_snapshot(self, state: Any) -> None:
        self.books = list(state["books"])
        self.index = {t: i for i, t in enumerate(self.books)}


def test_custom_snapshot_hooks_decide_what_is_stored_and_how_it_comes_back(
    backend: Backend,
) -> None:
    repo = backend.repository()
    shelf = Shelf("s")
    for title in ("a", "b", "c"):
        shelf.raise_event("Shelved", {"title": title})
    repo.save(shelf)
    snapshot = repo.take_snapshot(shelf)
    assert snapshot.state_version == 4
    assert b"index" not in snapshot.state
    loaded = repo.get("s", Shelf)
    assert (loaded.books, loaded.index) == (["a", "b", "c"], {"a": 0, "b": 1, "c": 2})


class Renamed(Ledger):
    snapshot_name = "tests.snap.StableName"


class RenamedAgain(Ledger):
    snapshot_name = "tests.snap.StableName"


class SubOfRenamed(Renamed):
    pass


def test_an_explicit_snapshot_name_survives_a_rename_and_is_not_inherited(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert aggregate_type_name(RenamedAgain) == "tests.snap.StableName"
    assert aggregate_type_name(SubOfRenamed) == f"{__name__}:SubOfRenamed"
    assert aggregate_type_name(Ledger) == "tests.snapshot_model:Ledger"
    ledger = Renamed("stable")
    for i in range(10):
        ledger.raise_event(Tagged(str(i)))
    repo = backend.repository()
    repo.save(ledger)
    repo.take_snapshot(ledger)
    applied = _spy_applied(monkeypatch)
    repo.get("stable", RenamedAgain)
    assert applied == [], "the snapshot at the head: nothing to replay"
    repo.get("stable", SubOfRenamed)
    assert applied == list(range(1, 11)), "another name, so no snapshot"


@pytest.mark.parametrize("name", ["", 5, "a\x00b"])
def test_a_bad_snapshot_name_is_invalid_input_at_load(name: Any) -> None:
    cls = type("BadName", (Ledger,), {"snapshot_name": name})
    store = InMemoryEventStore()
    repo = Repository(store, snapshots=InMemorySnapshotStore(store))
    repo.save(make_ledger("bad", 1))
    with pytest.raises(InvalidInputError):
        repo.get("bad", cls)


def test_take_snapshot_refuses_unsaved_events_and_needs_a_snapshot_store() -> None:
    store = InMemoryEventStore()
    repo = Repository(store, snapshots=InMemorySnapshotStore(store))
    ledger = make_ledger("u", 1)
    with pytest.raises(InvalidInputError, match="unsaved events"):
        repo.take_snapshot(ledger)
    repo.save(ledger)
    with pytest.raises(StoreError, match="no snapshot store"):
        Repository(store).take_snapshot(ledger)
    with pytest.raises(InvalidInputError, match="snapshots must be a SnapshotStore"):
        Repository(store, snapshots=store)  # type: ignore[arg-type]


def test_a_past_state_cannot_be_saved_over_the_present(backend: Backend) -> None:
    repo = backend.repository()
    repo.save(make_ledger("p", 5))
    past = repo.get("p", Ledger, version=3)
    past.raise_event(Tagged("late"))
    with pytest.raises(ConcurrencyError):
        repo.save(past)


def test_snapshots_work_beside_the_cache(backend: Backend) -> None:
    repo = backend.repository(EveryNEvents(4), cache_size=10)
    other = backend.repository(EveryNEvents(4))
    ledger = _saved_ledger(repo, 10)
    elsewhere = other.get(ledger.aggregate_id, Ledger)
    for i in range(5):
        elsewhere.raise_event(Untagged(str(i)))
        other.save(elsewhere)
    assert state_of(repo.get(ledger.aggregate_id, Ledger)) == state_of(
        backend.replay().get(ledger.aggregate_id, Ledger)
    )


# --------------------------------------------------------------------------- corrupt rows


CORRUPTIONS = {
    "state is not JSON": ("state = ?", '{"balance": '),
    "state is a JSON array": ("state = ?", "[1, 2, 3]"),
    "state names an unknown codec tag": ("state = ?", '{"balance": {"__eskit__": "nope"}}'),
    "state lacks attributes": ("state = ?", '{"owner": "mallory"}'),
    "state sets a managed attribute": ("state = ?", '{"version": 1}'),
    "state version unknown, no upcaster": ("state_version = ?", 9),
    "version above the head": ("version = version + 1000", None),
    "event id of another history": ("event_id = ?", "random-uuid"),
    "version is not an integer": ("version = ?", 12.5),
    "time is text": ("taken_at = ?", "yesterday"),
    "event id is short": ("event_id = ?", b"\x01\x02"),
}
SQLITE_ONLY = {
    "state is not JSON", "version is not an integer", "time is text", "event id is short",
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_snapshot_row_is_skipped_with_a_warning_in_favour_of_replay(
    database: Backend, corruption: str, caplog: pytest.LogCaptureFixture
) -> None:
    repo = database.repository()
    ledger = make_ledger(uuid.uuid4(), 20)
    repo.save(ledger)
    repo.take_snapshot(ledger)
    ledger.raise_event(Deposited(Decimal("0.01")))
    repo.save(ledger)
    assignment, value = CORRUPTIONS[corruption]
    if value == "random-uuid":
        value = uuid.uuid4().bytes if database.kind == "sqlite" else str(uuid.uuid4())
    if database.kind == "postgres" and assignment == "state = ?":
        assignment = "state = ?::json"
    if database.kind == "postgres" and corruption in SQLITE_ONLY:
        # PostgreSQL's column types refuse this damage or turn it into a valid value
        # ("yesterday" is a timestamp there); either way the load must equal a replay.
        import psycopg

        with contextlib.suppress(psycopg.errors.DataError, psycopg.errors.DatatypeMismatch):
            database.update_snapshots(assignment, value)
        loaded = repo.get(ledger.aggregate_id, Ledger)
        assert state_of(loaded) == state_of(database.replay().get(ledger.aggregate_id, Ledger))
        return
    database.update_snapshots(assignment, *([] if value is None else [value]))
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        loaded = repo.get(ledger.aggregate_id, Ledger)
    assert state_of(loaded) == state_of(database.replay().get(ledger.aggregate_id, Ledger))
    assert "ignoring the snapshot of Ledger" in caplog.text
    assert "replaying its events instead" in caplog.text


def test_a_corrupt_snapshot_is_replaced_by_the_next_one_the_policy_takes(
    database: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    repo = database.repository(EveryNEvents(10))
    ledger = make_ledger(uuid.uuid4(), 20)
    repo.save(ledger)  # a snapshot at the head
    database.update_snapshots("state = ?" + ("::json" if database.kind == "postgres" else ""),
                              "[]")
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        repo.get(ledger.aggregate_id, Ledger)  # ignores it and, being due, takes a new one
        caplog.clear()
        loaded = repo.get(ledger.aggregate_id, Ledger)
    assert caplog.text == ""
    assert state_of(loaded) == state_of(ledger)


# --------------------------------------------------------------------------- schema upgrade


def test_a_sqlite_store_of_schema_version_1_is_upgraded_on_open(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "v1.db"
    shutil.copy(FIXTURE_V1, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT value FROM eskit_meta WHERE key = 'schema_version'"
        ).fetchone() == ("1",)
        before = conn.execute("SELECT COUNT(*) FROM eskit_events").fetchone()[0]
    conn.close()

    # Inspecting leaves it as it was: events readable, no snapshot table, a clear error.
    with SQLiteEventStore(path, create=False) as inspecting:
        assert sum(s.version for s in inspecting.list_streams()) == before
        with pytest.raises(StoreError, match="open it once with create=True"):
            SQLiteSnapshotStore(inspecting)

    with SQLiteEventStore(path) as store:  # create=True: migrates 1 -> 2
        stream = store.list_streams()[0].stream_id
        store.append(stream, [Tagged("after-upgrade")])
        snapshots = SQLiteSnapshotStore(store)
        repo = Repository(store, snapshots=snapshots, snapshot_policy=OnDemand())
        ledger = make_ledger("new", 2)
        repo.save(ledger)
        assert repo.take_snapshot(ledger).version == ledger.version
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT value FROM eskit_meta WHERE key = 'schema_version'"
        ).fetchone() == (str(SQLITE_SCHEMA_VERSION),)  # 1 -> 2 -> ... -> the newest
        count = conn.execute("SELECT COUNT(*) FROM eskit_events").fetchone()[0]
        assert count == before + 1 + ledger.version
    conn.close()


def test_a_postgres_schema_of_version_1_is_upgraded_by_setup(postgres_dsn: str) -> None:
    import psycopg

    from eskit import PostgresEventStore, PostgresSnapshotStore
    from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
    from eskit.stores.postgres_schema import Statements

    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for statement in statements.migrations[0]:
            conn.execute(statement)
        conn.execute(statements.write_schema_version, ("1",))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        old.append("acc", [Opened("ann")], 0)  # written while still at version 1
        assert old.schema_version() == 1
        with pytest.raises(StoreError, match="eskit migrate"):
            PostgresSnapshotStore(old)
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == POSTGRES_SCHEMA_VERSION
        repo = Repository(store, snapshots=PostgresSnapshotStore(store))
        ledger = repo.get("acc", Ledger)
        assert repo.take_snapshot(ledger).version == 1


# --------------------------------------------------------------------------- races (RELIABILITY 14)


def test_snapshots_taken_while_writers_race_are_never_above_the_head_and_always_sound(
    database: Backend,
) -> None:
    store, snapshots = database.events, database.snapshots
    ids = [f"race-{n}" for n in range(2)]
    setup = Repository(store)
    for ledger_id in ids:
        setup.save(make_ledger(ledger_id, 0))
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(3))
        try:
            for i in range(40):
                ledger_id = ids[(seed + i) % len(ids)]
                for _ in range(50):
                    ledger = repo.get(ledger_id, Ledger)
                    ledger.raise_event(Deposited(Decimal(seed * 1000 + i)))
                    try:
                        repo.save(ledger)
                        break
                    except ConcurrencyError:
                        continue
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    replay = Repository(store)
    for ledger_id in ids:
        head = store.head_version(ledger_id)
        name = aggregate_type_name(Ledger)
        bound, checked = head, 0
        while (snap := snapshots.latest(ledger_id, name, bound)) is not None:
            assert snap.version <= head
            restored = Repository(store, snapshots=InMemoryOnly(snap, store)).get(
                ledger_id, Ledger
            )
            assert state_of(restored) == state_of(replay.get(ledger_id, Ledger))
            bound, checked = snap.version - 1, checked + 1
        assert checked >= 5


class InMemoryOnly(SnapshotStore):
    """A snapshot store holding exactly one given snapshot (to test each one alone)."""

    def __init__(self, snapshot: Any, store: EventStore) -> None:
        self.snapshot = snapshot

    def _save(self, stream: str, snapshot: Any) -> None:
        pass

    def _latest(self, aggregate_id: Any, stream: str, aggregate_type: str,
                max_version: Any) -> Any:
        return self.snapshot


# --------------------------------------------------------------------------- the property


COMMANDS = st.one_of(
    st.builds(Deposited, st.decimals(allow_nan=False, places=2, min_value=-1000,
                                     max_value=1000)),
    st.builds(Tagged, st.sampled_from("abcde")),
    st.builds(Untagged, st.sampled_from("abcde")),
    st.builds(Noted, st.sampled_from(["x", "y", "z"]), st.one_of(
        st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
        st.frozensets(st.integers(0, 9), max_size=3), st.none(),
    )),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(COMMANDS, min_size=1, max_size=6), min_size=1, max_size=8),
    every=st.integers(1, 7),
    on_demand=st.sets(st.integers(1, 48), max_size=6),
    kind=st.sampled_from(["memory", "sqlite"]),
)
def test_state_loaded_via_any_snapshot_equals_state_from_full_replay(
    batches: list[list[Any]], every: int, on_demand: set[int], kind: str
) -> None:
    """Random histories and snapshot points: snapshot + tail == full replay at every version."""
    store: EventStore = InMemoryEventStore() if kind == "memory" else SQLiteEventStore(":memory:")
    snapshots: SnapshotStore = (
        InMemorySnapshotStore(store) if kind == "memory"
        else SQLiteSnapshotStore(store)  # type: ignore[arg-type]
    )
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(every))
    replay = Repository(store)
    ledger = Ledger("prop")
    ledger.raise_event(Opened("ann"))
    for batch in batches:
        for command in batch:
            ledger.raise_event(command)
        repo.save(ledger)
        for version in sorted(v for v in on_demand if v <= ledger.version):
            repo.take_snapshot(repo.get("prop", Ledger, version=version))
    head = ledger.version
    warnings = _Records()
    logging.getLogger("eskit.snapshots").addHandler(warnings)
    try:
        for version in range(1, head + 1):
            assert state_of(repo.get("prop", Ledger, version=version)) == state_of(
                replay.get("prop", Ledger, version=version)
            ), version
        assert state_of(repo.get("prop", Ledger)) == state_of(replay.get("prop", Ledger))
    finally:
        logging.getLogger("eskit.snapshots").removeHandler(warnings)
    # Every snapshot was sound, so none was skipped: the loads above really used them.
    assert warnings.records == []
    if head >= every:
        assert snapshots.latest("prop", aggregate_type_name(Ledger)) is not None
    store.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Scores(Aggregate):
    """State keyed by what is natural, not by strings: it used to never be snapshotted."""

    def __init__(self, aggregate_id: Any) -> None:
        super().__init__(aggregate_id)
        self.by_player: dict[uuid.UUID, int] = {}
        self.by_cell: dict[tuple[int, int], Decimal] = {}
        self.by_round: dict[int, str] = {}

    def handle_Scored(self, data: dict[str, Any]) -> None:
        player = uuid.UUID(data["player"])
        self.by_player[player] = self.by_player.get(player, 0) + data["points"]
        self.by_cell[(data["x"], data["y"])] = Decimal(data["points"])
        self.by_round[len(self.by_round) + 1] = data["player"]


def test_state_with_non_string_dict_keys_is_snapshotted_and_restored_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryEventStore()
    snapshots = InMemorySnapshotStore(store)
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
    scores = Scores("game-1")
    players = [uuid.UUID(int=i) for i in (1, 2)]
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        for i in range(4):
            scores.raise_event("Scored", {"player": str(players[i % 2]), "points": i,
                                          "x": i, "y": -i})
            repo.save(scores)
    assert caplog.text == ""
    assert snapshot_failures.total == 0
    assert snapshots.latest("game-1", aggregate_type_name(Scores)) is not None
    loaded = repo.get("game-1", Scores)
    replayed = Repository(store).get("game-1", Scores)
    assert loaded.by_player == replayed.by_player == {players[0]: 2, players[1]: 4}
    assert [type(k) for k in loaded.by_player] == [uuid.UUID, uuid.UUID]
    assert loaded.by_cell == replayed.by_cell
    assert list(loaded.by_round) == [1, 2, 3, 4]


def test_a_snapshot_that_keeps_failing_warns_once_and_counts_every_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryEventStore()
    repo = Repository(store, snapshots=InMemorySnapshotStore(store),
                      snapshot_policy=EveryNEvents(1))
    aggregate = Unstorable("u-1")
    with caplog.at_level(logging.DEBUG, logger="eskit.snapshots"):
        for _ in range(5):
            aggregate.raise_event("Touched", {})
            assert repo.save(aggregate) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "visible once, not on every save"
    assert "cannot encode a value of type _thread.lock" in warnings[0].getMessage()
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 4
    assert snapshot_failures.count(Unstorable) == 5
    assert snapshot_failures.as_dict() == {aggregate_type_name(Unstorable): 5}
    assert "cannot encode a value of type _thread.lock" in (
        snapshot_failures.last_error(Unstorable) or ""
    )


def test_after_a_snapshot_succeeds_a_new_failure_warns_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryEventStore()
    flaky = FlakySnapshots(InMemorySnapshotStore(store), failures=1)
    repo = Repository(store, snapshots=flaky, snapshot_policy=EveryNEvents(1))
    ledger = Ledger("again")
    with caplog.at_level(logging.WARNING, logger="eskit.snapshots"):
        for round_ in range(3):
            if round_ == 2:
                flaky.failures = 1
            ledger.raise_event(Tagged(str(round_)))
            repo.save(ledger)
    assert [r.getMessage().count("database is down") for r in caplog.records] == [1, 1]
    assert snapshot_failures.count(Ledger) == 2


def test_a_snapshot_taken_at_a_split_event_is_not_followed_by_its_parts_again() -> None:
    from eskit import EventRegistry

    registry = EventRegistry()

    @registry.split("tests.snap.TwoDeposits")
    def _split(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [("Credited", {"n": data["a"]}), ("Credited", {"n": data["b"]})]

    class Till(Aggregate):
        def __init__(self, till_id: Any) -> None:
            super().__init__(till_id)
            self.total = 0

        def handle_Credited(self, data: dict[str, Any]) -> None:
            self.total += data["n"]

    Till.registry = registry
    store = InMemoryEventStore(registry=registry)
    from eskit import NewEvent

    store.append("till-1", [NewEvent("Credited", {"n": 1}),
                            NewEvent("tests.snap.TwoDeposits", {"a": 10, "b": 100})])
    repo = Repository(store, snapshots=InMemorySnapshotStore(store), snapshot_policy=OnDemand())
    snapshot = repo.take_snapshot(repo.get("till-1", Till))
    assert snapshot.version == 2
    store.append("till-1", [NewEvent("Credited", {"n": 1000})])
    via_snapshot = repo.get("till-1", Till)
    replayed = Repository(store).get("till-1", Till)
    assert via_snapshot.total == replayed.total == 1111
    assert via_snapshot.version == replayed.version == 3
    assert repo.get("till-1", Till, version=2).total == 111
