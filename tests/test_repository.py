"""The repository saves uncommitted events and never returns stale state."""

import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from eskit import (
    Aggregate,
    AggregateNotFound,
    ConcurrencyError,
    EventStore,
    InMemoryEventStore,
    Repository,
    SQLiteEventStore,
    domain_event,
    handles,
)


@domain_event("tests.repo.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@domain_event("tests.repo.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: Decimal


class Wallet(Aggregate):
    def __init__(self, aggregate_id: Any, owner: str) -> None:
        super().__init__(aggregate_id)
        self.owner = owner
        self.balance = Decimal(0)

    @classmethod
    def open(cls, owner: str) -> "Wallet":
        wallet = cls(uuid.uuid4(), owner)
        wallet.raise_event(Opened(owner))
        return wallet

    def deposit(self, amount: Decimal) -> None:
        self.raise_event(Deposited(amount))

    @handles(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> EventStore:
    if request.param == "memory":
        return InMemoryEventStore()
    return SQLiteEventStore(tmp_path / "events.db")


def test_saved_aggregate_loads_back_with_the_same_state(store: EventStore) -> None:
    repo = Repository(store)
    wallet = Wallet.open("ann")
    wallet.deposit(Decimal("10.25"))
    result = repo.save(wallet)
    assert result is not None
    assert result.version == 2
    assert wallet.get_uncommitted_events() == []
    loaded = repo.get(wallet.aggregate_id, Wallet)
    assert (loaded.owner, loaded.balance, loaded.version) == ("ann", Decimal("10.25"), 2)


def test_saving_without_new_events_writes_nothing(store: EventStore) -> None:
    repo = Repository(store)
    wallet = Wallet.open("ann")
    repo.save(wallet)
    assert repo.save(wallet) is None
    assert store.head_position() == 1


def test_unknown_id_raises_aggregate_not_found(store: EventStore) -> None:
    with pytest.raises(AggregateNotFound, match="Wallet") as caught:
        Repository(store).get(uuid.uuid4(), Wallet)
    assert isinstance(caught.value, LookupError)


def test_concurrent_saves_of_one_aggregate_let_only_the_first_win(store: EventStore) -> None:
    repo = Repository(store)
    wallet = Wallet.open("ann")
    repo.save(wallet)
    first, second = repo.get(wallet.aggregate_id, Wallet), repo.get(wallet.aggregate_id, Wallet)
    first.deposit(Decimal(1))
    second.deposit(Decimal(2))
    repo.save(first)
    with pytest.raises(ConcurrencyError):
        repo.save(second)
    assert len(second.get_uncommitted_events()) == 1, "the loser keeps its events to retry"
    assert repo.get(wallet.aggregate_id, Wallet).balance == Decimal(1)


def test_creating_an_aggregate_under_a_taken_id_says_the_stream_already_exists(
    store: EventStore,
) -> None:
    repo = Repository(store)
    wallet = Wallet.open("ann")
    for amount in ("1", "2", "3"):
        wallet.deposit(Decimal(amount))
    repo.save(wallet)
    twin = Wallet(wallet.aggregate_id, "bob")
    twin.raise_event(Opened("bob"))
    with pytest.raises(ConcurrencyError) as caught:
        repo.save(twin)
    message = str(caught.value)
    assert f"stream '{wallet.aggregate_id}' already exists (at version 4)" in message
    assert "expected version 0" not in message
    assert (caught.value.expected_version, caught.value.actual_version) == (0, 4)


def test_metadata_given_to_save_lands_on_every_event(store: EventStore) -> None:
    repo = Repository(store)
    wallet = Wallet.open("ann")
    wallet.deposit(Decimal(1))
    repo.save(wallet, metadata={"correlation_id": "req-7", "user": "ann"})
    assert all(
        e.metadata == {"correlation_id": "req-7", "user": "ann"}
        for e in store.read_stream(wallet.aggregate_id)
    )


def test_cached_repository_never_returns_state_older_than_the_store(store: EventStore) -> None:
    cached = Repository(store, cache_size=10)
    other = Repository(store)
    wallet = Wallet.open("ann")
    cached.save(wallet)
    assert cached.get(wallet.aggregate_id, Wallet).balance == 0
    elsewhere = other.get(wallet.aggregate_id, Wallet)
    elsewhere.deposit(Decimal(5))
    other.save(elsewhere)
    fresh = cached.get(wallet.aggregate_id, Wallet)
    assert fresh.balance == Decimal(5)
    assert fresh.version == 2


def test_cached_repository_hands_out_copies(store: EventStore) -> None:
    repo = Repository(store, cache_size=10)
    wallet = Wallet.open("ann")
    repo.save(wallet)
    mine = repo.get(wallet.aggregate_id, Wallet)
    mine.deposit(Decimal(100))  # not saved
    assert repo.get(wallet.aggregate_id, Wallet).balance == 0


def test_cache_keeps_only_the_most_recent_aggregates(store: EventStore) -> None:
    repo = Repository(store, cache_size=2)
    wallets = [Wallet.open(f"w{i}") for i in range(3)]
    for w in wallets:
        repo.save(w)
    assert len(repo._cache._entries) == 2


def test_threads_sharing_a_repository_do_not_lose_deposits(tmp_path: Any) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    repo = Repository(store, cache_size=4)
    wallet = Wallet.open("ann")
    repo.save(wallet)

    def deposit_with_retry() -> None:
        for _ in range(10):
            while True:
                w = repo.get(wallet.aggregate_id, Wallet)
                w.deposit(Decimal(1))
                try:
                    repo.save(w)
                    break
                except ConcurrencyError:
                    continue

    threads = [threading.Thread(target=deposit_with_retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert repo.get(wallet.aggregate_id, Wallet).balance == Decimal(40)
    store.close()
