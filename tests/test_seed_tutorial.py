"""The seed tutorial's code, with only its bugs fixed, running on eskit.

The tutorial ("Event Sourcing in Python", our seed document) defines Event,
EventStore, Aggregate, BankAccount, Repository and an in-memory store. Here
Event, EventStore, Aggregate and Repository come from eskit; BankAccount, the
tutorial's own ``InMemoryEventStore(EventStore)`` and the usage scenario are
copied from the tutorial as closely as possible. Every change is marked
``FIX:`` with the reason. The bugs:

1. ``UUID()`` raises ``TypeError`` (a UUID needs a value): use ``uuid4()``.
2. ``datetime.now()`` is naive local time, ambiguous across machines and DST:
   eskit's ``Aggregate.raise_event`` stamps events with aware UTC.
3. ``handle_AccountOpened`` never set ``account_number``, so an account loaded
   by replay did not know its own number.
4. The tutorial's ``Repository.get`` calls ``aggregate_class(aggregate_id)``,
   a ``TypeError`` for ``BankAccount(aggregate_id, account_number)``; eskit's
   ``Aggregate.create_blank`` passes ``None`` and the creation event sets it.
5. The tutorial's repository cache returns the cached object itself and never
   looks at the store again: stale state once anybody else writes, and a
   command that fails half-way leaves its changes in the cache. eskit's
   ``Repository`` catches up with the store on every ``get`` and hands out copies.
6. The tutorial's ``Repository.get`` of an unknown id returns a blank aggregate
   (which would even accept deposits); eskit raises ``AggregateNotFound``.
7. Money as ``float`` (``0.1 + 0.2 != 0.3``): ``Decimal``, which eskit stores exactly.
8. ``deposit``/``withdraw`` accepted zero and negative amounts (a negative
   deposit is a withdrawal that skips the funds check) and worked on an account
   that was never opened; ``open_account`` accepted a negative initial deposit.
9. The tutorial's ``Aggregate.apply_event`` silently skipped events it had no
   handler for and never checked their order, and ``get_uncommitted_events``
   returned its internal list; eskit's ``Aggregate`` fixes all three.
10. The tutorial's in-memory store checked the version and wrote in two steps
    (two threads could both pass the check) and raised a bare ``ValueError``;
    it now holds a lock and raises ``eskit.ConcurrencyError`` (still a
    ``ValueError``, so seed code that catches ``ValueError`` keeps working).
"""

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List
from uuid import UUID, uuid4

import pytest

import eskit
from eskit import (
    Aggregate,
    AggregateNotFound,
    ConcurrencyError,
    Event,
    EventStore,
    Repository,
)

# --------------------------------------------------------------------------- the tutorial's code


class BankAccount(Aggregate):
    def __init__(self, aggregate_id: UUID, account_number: str):
        super().__init__(aggregate_id)
        self.account_number = account_number
        self.balance = Decimal("0")  # FIX: Decimal, not float (0.0)
        self.is_closed = False

    def open_account(self, initial_deposit: Decimal):
        if self.version > 0:
            raise ValueError("Account already exists")
        if initial_deposit < 0:  # FIX: no negative opening balance
            raise ValueError("Initial deposit cannot be negative")
        self.raise_event("AccountOpened", {
            "account_number": self.account_number,
            "initial_deposit": initial_deposit
        })

    def handle_AccountOpened(self, event_data: Dict):
        self.account_number = event_data["account_number"]  # FIX: a replayed account knows its number
        self.balance = event_data["initial_deposit"]

    def deposit(self, amount: Decimal):
        if self.version == 0:  # FIX: no deposits to an account that was never opened
            raise ValueError("Account not opened")
        if self.is_closed:
            raise ValueError("Cannot deposit to closed account")
        if amount <= 0:  # FIX: a negative deposit would be a withdrawal without checks
            raise ValueError("Deposit amount must be positive")
        self.raise_event("MoneyDeposited", {"amount": amount})

    def handle_MoneyDeposited(self, event_data: Dict):
        self.balance += event_data["amount"]

    def withdraw(self, amount: Decimal):
        if self.version == 0:  # FIX: as for deposit
            raise ValueError("Account not opened")
        if self.is_closed:
            raise ValueError("Cannot withdraw from closed account")
        if amount <= 0:  # FIX: a negative withdrawal would be a deposit
            raise ValueError("Withdrawal amount must be positive")
        if self.balance < amount:
            raise ValueError("Insufficient funds")
        self.raise_event("MoneyWithdrawn", {"amount": amount})

    def handle_MoneyWithdrawn(self, event_data: Dict):
        self.balance -= event_data["amount"]

    def close_account(self):
        if self.is_closed:
            raise ValueError("Account already closed")
        self.raise_event("AccountClosed", {})

    def handle_AccountClosed(self, event_data: Dict):
        self.is_closed = True


# Simple in-memory event store (the tutorial's own: only the seed API, no modern methods)
class InMemoryEventStore(EventStore):
    def __init__(self):
        self._events = {}  # aggregate_id -> List[Event]
        self._lock = threading.Lock()  # FIX: check the version and write as one step

    def save_events(self, aggregate_id: UUID, events: List[Event], expected_version: int):
        with self._lock:
            existing = self._events.get(aggregate_id, [])
            if len(existing) != expected_version:
                # FIX: eskit.ConcurrencyError (a ValueError) instead of a bare ValueError
                raise ConcurrencyError(aggregate_id, expected_version, len(existing))
            self._events[aggregate_id] = existing + list(events)

    def get_events(self, aggregate_id: UUID, from_version: int = 0) -> List[Event]:
        events = self._events.get(aggregate_id, [])
        return events[from_version:]


def tutorial_usage(event_store: EventStore, reopen: Callable[[], EventStore] | None = None) -> BankAccount:
    """The tutorial's "Usage" block. ``reopen`` gives a new store instance for the final get."""
    repository = Repository(event_store)

    # Create account
    account_id = uuid4()  # FIX: UUID() raises TypeError
    account = BankAccount(account_id, "ACC-001")
    account.open_account(Decimal("1000.0"))  # FIX: Decimal, not 1000.0
    repository.save(account)

    # Load and modify
    account = repository.get(account_id, BankAccount)
    account.deposit(Decimal("500.0"))
    account.withdraw(Decimal("200.0"))
    repository.save(account)

    # Replay all events to get current state
    if reopen is not None:
        repository = Repository(reopen())
    account = repository.get(account_id, BankAccount)
    print(f"Balance: {account.balance}")  # 1300.0
    return account


# --------------------------------------------------------------------------- fixtures

STORES = ["tutorial", "memory", "sqlite"]


class StoreMaker:
    """Makes the store under test; for SQLite also reopens the same file."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "bank.db"
        self._opened: List[EventStore] = []

    def new(self) -> EventStore:
        if self.kind == "tutorial":
            store: EventStore = InMemoryEventStore()
        elif self.kind == "memory":
            store = eskit.InMemoryEventStore()
        else:
            store = eskit.SQLiteEventStore(self.path)
        self._opened.append(store)
        return store

    def reopen(self) -> EventStore | None:
        """A second instance on the same storage, if the kind has one."""
        if self.kind != "sqlite":
            return None
        store = eskit.SQLiteEventStore(self.path)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=STORES)
def stores(request: Any, tmp_path: Path) -> Iterator[StoreMaker]:
    maker = StoreMaker(request.param, tmp_path)
    yield maker
    maker.close()


def open_account(repository: Repository, number: str = "ACC-002", amount: str = "100") -> UUID:
    account = BankAccount(uuid4(), number)
    account.open_account(Decimal(amount))
    repository.save(account)
    return account.aggregate_id


# --------------------------------------------------------------------------- the scenario


def test_the_tutorial_scenario_gives_1300(stores: StoreMaker) -> None:
    store = stores.new()
    account = tutorial_usage(store, stores.reopen if stores.kind == "sqlite" else None)
    assert account.balance == Decimal("1300")
    assert type(account.balance) is Decimal
    assert account.account_number == "ACC-001"  # set by replay, not by the constructor
    assert account.version == 3
    assert not account.is_closed
    assert account.get_uncommitted_events() == []

    check = stores.reopen() or store
    events = check.read_stream(account.aggregate_id)
    assert [e.event_type for e in events] == ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]
    assert [e.version for e in events] == [1, 2, 3]
    assert events[0].event_data == {"account_number": "ACC-001", "initial_deposit": Decimal("1000.0")}
    assert all(e.aggregate_id == account.aggregate_id for e in events)
    for e in events:  # FIX 2: aware UTC timestamps
        assert e.timestamp.tzinfo is not None
        assert e.timestamp.utcoffset() == timedelta(0)


def test_the_tutorial_store_is_used_through_its_own_methods() -> None:
    """eskit's EventStore routes the modern API to save_events/get_events of a seed subclass."""
    store = InMemoryEventStore()
    account = tutorial_usage(store)
    assert account.balance == Decimal("1300")
    stored = store._events[account.aggregate_id]  # where the tutorial's store keeps them
    assert [e.version for e in stored] == [1, 2, 3]
    assert store.head_version(account.aggregate_id) == 3
    assert [e.event_type for e in store.read_stream(account.aggregate_id, 1)] == [
        "MoneyDeposited", "MoneyWithdrawn"
    ]


def test_the_original_uuid_call_was_a_bug() -> None:
    with pytest.raises(TypeError):
        UUID()  # what the tutorial wrote
    assert uuid4().version == 4


def test_raised_events_are_stamped_in_utc() -> None:
    account = BankAccount(uuid4(), "ACC-003")
    account.open_account(Decimal("1"))
    (event,) = account.get_uncommitted_events()
    assert event.timestamp.tzinfo is not None
    assert event.timestamp.utcoffset() == timedelta(0)
    assert event.timestamp.tzinfo == UTC


# --------------------------------------------------------------------------- concurrency


def test_a_concurrent_modification_is_a_value_error(stores: StoreMaker) -> None:
    store = stores.new()
    repository = Repository(store)
    account_id = open_account(repository)

    first = repository.get(account_id, BankAccount)
    second = repository.get(account_id, BankAccount)
    first.deposit(Decimal("10"))
    repository.save(first)

    second.withdraw(Decimal("50"))
    try:
        repository.save(second)
    except ValueError as e:  # as seed code catches it
        caught: Exception | None = e
    else:
        caught = None
    assert isinstance(caught, ConcurrencyError)
    assert second.get_uncommitted_events()  # kept, so the caller can retry

    # Nothing of the loser was written; reload and retry works.
    assert repository.get(account_id, BankAccount).balance == Decimal("110")
    retry = repository.get(account_id, BankAccount)
    retry.withdraw(Decimal("50"))
    repository.save(retry)
    assert repository.get(account_id, BankAccount).balance == Decimal("60")


def test_seed_save_events_with_a_wrong_version_is_a_value_error(stores: StoreMaker) -> None:
    store = stores.new()
    repository = Repository(store)
    account_id = open_account(repository)
    account = repository.get(account_id, BankAccount)
    account.deposit(Decimal("5"))
    events = account.get_uncommitted_events()
    with pytest.raises(ValueError):
        store.save_events(account_id, events, 0)  # the stream is at version 1
    assert len(store.get_events(account_id)) == 1
    store.save_events(account_id, events, 1)
    assert [e.version for e in store.get_events(account_id)] == [1, 2]


def test_threads_saving_one_account_through_the_tutorial_store() -> None:
    """The tutorial store's lock (FIX 10): racing saves never lose or double a version."""
    store = InMemoryEventStore()
    repository = Repository(store)
    account_id = open_account(repository, amount="0")
    barrier = threading.Barrier(8)
    wins, losses = [], []

    def run() -> None:
        barrier.wait(timeout=30)
        for _ in range(30):
            account = repository.get(account_id, BankAccount)
            account.deposit(Decimal("1"))
            try:
                repository.save(account)
            except ValueError:
                losses.append(1)
            else:
                wins.append(1)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(wins) + len(losses) == 8 * 30
    assert [e.version for e in store.get_events(account_id)] == list(range(1, len(wins) + 2))
    assert repository.get(account_id, BankAccount).balance == Decimal(len(wins))


# --------------------------------------------------------------------------- the repository


def test_get_of_an_unknown_id_raises_aggregate_not_found(stores: StoreMaker) -> None:
    repository = Repository(stores.new())
    unknown = uuid4()
    with pytest.raises(AggregateNotFound) as info:
        repository.get(unknown, BankAccount)
    assert info.value.aggregate_id == unknown
    assert isinstance(info.value, LookupError)


def test_a_second_repository_sees_the_first_ones_writes(stores: StoreMaker) -> None:
    """The tutorial's cache returned stale state; eskit's Repository does not (FIX 5)."""
    store = stores.new()
    first = Repository(store, cache_size=10)
    second = Repository(stores.reopen() or store, cache_size=10)
    account_id = open_account(first, amount="100")

    seen_by_second = second.get(account_id, BankAccount)  # now cached in `second`
    assert seen_by_second.balance == Decimal("100")

    account = first.get(account_id, BankAccount)
    account.deposit(Decimal("25"))
    first.save(account)

    fresh = second.get(account_id, BankAccount)
    assert fresh.balance == Decimal("125")
    assert fresh.version == 2

    # And `second` can write on top of it, without a ConcurrencyError.
    fresh.withdraw(Decimal("5"))
    second.save(fresh)
    assert first.get(account_id, BankAccount).balance == Decimal("120")


def test_the_cache_hands_out_copies(stores: StoreMaker) -> None:
    """A command that fails half-way, or is never saved, does not leak into the next get."""
    repository = Repository(stores.new(), cache_size=10)
    account_id = open_account(repository, amount="100")

    loaded = repository.get(account_id, BankAccount)
    loaded.deposit(Decimal("1000"))  # never saved
    again = repository.get(account_id, BankAccount)
    assert again is not loaded
    assert again.balance == Decimal("100")
    assert again.get_uncommitted_events() == []


# --------------------------------------------------------------------------- the account


def test_a_replayed_account_keeps_its_number_and_closed_state(stores: StoreMaker) -> None:
    store = stores.new()
    repository = Repository(store)
    account_id = open_account(repository, number="ACC-777")
    account = repository.get(account_id, BankAccount)
    account.close_account()
    repository.save(account)

    replayed = Repository(stores.reopen() or store).get(account_id, BankAccount)
    assert replayed.account_number == "ACC-777"
    assert replayed.is_closed
    with pytest.raises(ValueError, match="closed"):
        replayed.deposit(Decimal("1"))
    with pytest.raises(ValueError, match="closed"):
        replayed.withdraw(Decimal("1"))
    with pytest.raises(ValueError, match="already closed"):
        replayed.close_account()


def test_money_is_exact(stores: StoreMaker) -> None:
    """FIX 7: with floats, three deposits of 0.10 make 0.30000000000000004."""
    store = stores.new()
    repository = Repository(store)
    account_id = open_account(repository, amount="0")
    for _ in range(3):
        account = repository.get(account_id, BankAccount)
        account.deposit(Decimal("0.10"))
        repository.save(account)
    balance = Repository(stores.reopen() or store).get(account_id, BankAccount).balance
    assert balance == Decimal("0.30")
    assert type(balance) is Decimal
    assert 0.1 + 0.1 + 0.1 != 0.3  # the float bug the tutorial had


def test_commands_check_their_invariants() -> None:
    account = BankAccount(uuid4(), "ACC-004")
    with pytest.raises(ValueError, match="not opened"):
        account.deposit(Decimal("1"))
    with pytest.raises(ValueError, match="not opened"):
        account.withdraw(Decimal("1"))
    with pytest.raises(ValueError, match="negative"):
        account.open_account(Decimal("-1"))
    account.open_account(Decimal("10"))
    with pytest.raises(ValueError, match="already exists"):
        account.open_account(Decimal("10"))
    for bad in (Decimal("0"), Decimal("-5")):
        with pytest.raises(ValueError, match="positive"):
            account.deposit(bad)
        with pytest.raises(ValueError, match="positive"):
            account.withdraw(bad)
    with pytest.raises(ValueError, match="Insufficient funds"):
        account.withdraw(Decimal("10.01"))
    assert account.balance == Decimal("10")
    assert len(account.get_uncommitted_events()) == 1  # failed commands raised nothing


def test_uncommitted_events_are_a_copy() -> None:
    """FIX 9: the tutorial handed out its internal list."""
    account = BankAccount(uuid4(), "ACC-005")
    account.open_account(Decimal("1"))
    events = account.get_uncommitted_events()
    events.clear()
    assert len(account.get_uncommitted_events()) == 1


def test_an_event_without_a_handler_is_not_silently_skipped() -> None:
    """FIX 9: the tutorial's apply_event ignored unknown event types."""
    store = eskit.InMemoryEventStore()
    account_id = uuid4()
    store.append(account_id, [eskit.NewEvent("AccountOpened", {"account_number": "X", "initial_deposit": Decimal("1")}),
                              eskit.NewEvent("InterestAccrued", {"amount": Decimal("1")})])
    with pytest.raises(eskit.UnknownEventTypeError):
        Repository(store).get(account_id, BankAccount)


def test_a_retry_through_the_tutorial_store_is_idempotent() -> None:
    """The contract in eskit.stores.base promises idempotent retries for every store."""
    store = InMemoryEventStore()
    event = eskit.NewEvent("AccountOpened", {"account_number": "R", "initial_deposit": Decimal("1")})
    store.append("acc", [event], eskit.ANY)
    result = store.append("acc", [event], eskit.ANY)  # the acknowledgement was lost; retry
    assert result.duplicate
    assert [e.event_id for e in store.get_events("acc")] == [event.event_id]
