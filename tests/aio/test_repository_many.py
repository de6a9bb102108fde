"""Repository.save(a, b, ...) and AsyncRepository.save(a, b, ...): one append_many call.

The all-or-nothing cases run on every store through the contract
(eskit.testing.multistream_contract); these check what the repositories add:
a transfer between two accounts, the cache, and snapshots taken per aggregate
after the one commit.
"""

import asyncio
from decimal import Decimal
from uuid import uuid4

import pytest

from eskit import (
    EveryNEvents,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidInputError,
    MultiStreamConcurrencyError,
    Repository,
)
from eskit.aio import AsyncInMemoryEventStore, AsyncInMemorySnapshotStore, AsyncRepository
from eskit.snapshots import aggregate_type_name
from examples.bank.domain import BankAccount
from tests.aio.conftest import OpenStore


def _account(deposit: str) -> BankAccount:
    account = BankAccount(uuid4())
    account.open("ACC-1", "Alice", Decimal(deposit))
    return account


def test_async_repository_moves_money_between_two_accounts_all_or_nothing(
    open_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await open_store()
        try:
            repo = AsyncRepository(store, cache_size=10)
            a, b = _account("100.00"), _account("5.00")
            results = await repo.save(a, b)
            assert [r.version for r in results if r] == [1, 1]
            a = await repo.get(a.aggregate_id, BankAccount)
            b = await repo.get(b.aggregate_id, BankAccount)
            a.withdraw(Decimal("30.00"))
            b.deposit(Decimal("30.00"))
            stale = await repo.get(b.aggregate_id, BankAccount)
            stale.deposit(Decimal("1.00"))
            await repo.save(stale)  # b moves on under the transfer
            with pytest.raises(MultiStreamConcurrencyError) as caught:
                await repo.save(a, b, metadata={"transfer": "t-1"})
            assert [c.stream_id for c in caught.value.conflicts] == [b.aggregate_id]
            assert len(a.get_uncommitted_events()) == 1, "events kept for the retry"
            assert (await repo.get(a.aggregate_id, BankAccount)).balance == Decimal("100.00")
            a = await repo.get(a.aggregate_id, BankAccount)
            b = await repo.get(b.aggregate_id, BankAccount)
            a.withdraw(Decimal("30.00"))
            b.deposit(Decimal("30.00"))
            done = await repo.save(a, b, metadata={"transfer": "t-1"})
            assert [r.version for r in done if r] == [2, 3]
            balances = [(await repo.get(x.aggregate_id, BankAccount)).balance for x in (a, b)]
            assert balances == [Decimal("70.00"), Decimal("36.00")]
            stored = await store.read_stream(b.aggregate_id, 2)
            assert [e.metadata for e in stored] == [{"transfer": "t-1"}]
        finally:
            await store.close()

    asyncio.run(main())


def test_async_repository_takes_each_aggregates_snapshot_after_the_one_commit() -> None:
    async def main() -> None:
        store = AsyncInMemoryEventStore()
        snapshots = AsyncInMemorySnapshotStore(store)
        repo = AsyncRepository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
        a, b = _account("1.00"), _account("2.00")
        a.deposit(Decimal("1.00"))  # a: 2 events, due; b: 1 event, not due
        await repo.save(a, b)
        name = aggregate_type_name(BankAccount)
        taken = await snapshots.latest(a.aggregate_id, name)
        assert taken is not None
        assert taken.version == 2
        assert await snapshots.latest(b.aggregate_id, name) is None

    asyncio.run(main())


def test_sync_repository_saves_several_and_snapshots_each_as_its_policy_says() -> None:
    store = InMemoryEventStore()
    snapshots = InMemorySnapshotStore(store)
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
    a, b, idle = _account("1.00"), _account("2.00"), _account("3.00")
    repo.save(idle)
    b.deposit(Decimal("1.00"))
    results = repo.save(a, b, idle)
    assert results[2] is None, "nothing to save for idle"
    assert [r.stream_id for r in results if r] == [a.aggregate_id, b.aggregate_id]
    name = aggregate_type_name(BankAccount)
    assert snapshots.latest(a.aggregate_id, name) is None
    taken = snapshots.latest(b.aggregate_id, name)
    assert taken is not None
    assert taken.version == 2
    assert repo.save(idle, idle) == [None, None], "nothing to save: no call at all"


def test_saving_the_same_aggregate_twice_in_one_call_is_refused() -> None:
    repo = Repository(InMemoryEventStore())
    a = _account("1.00")
    with pytest.raises(InvalidInputError, match="twice"):
        repo.save(a, a)
    assert len(a.get_uncommitted_events()) == 1
    with pytest.raises(InvalidInputError, match="aggregates"):
        repo.save(a, "not an aggregate")  # type: ignore[call-overload]


def test_conflict_errors_survive_pickling_with_every_stream() -> None:
    import pickle

    from eskit import NO_STREAM, ConcurrencyError

    single = pickle.loads(pickle.dumps(ConcurrencyError("s", NO_STREAM, 2)))
    assert (single.stream_id, single.expected_version, single.actual_version) == ("s", NO_STREAM, 2)
    assert str(single) == str(ConcurrencyError("s", NO_STREAM, 2))
    error = MultiStreamConcurrencyError([ConcurrencyError("a", 1, 2), ConcurrencyError("b", 0, 3)])
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is MultiStreamConcurrencyError
    assert [(c.stream_id, c.expected_version, c.actual_version) for c in again.conflicts] == [
        ("a", 1, 2), ("b", 0, 3)
    ]
    assert str(again) == str(error)


def test_repository_save_of_several_carries_the_event_context_onto_every_event() -> None:
    from eskit.context import event_context

    store = InMemoryEventStore()
    repo = Repository(store)
    a, b = _account("1.00"), _account("2.00")
    with event_context(actor="teller:7", correlation_id="req-1"):
        repo.save(a, b, metadata={"channel": "web"})
    stored = [*store.read_stream(a.aggregate_id), *store.read_stream(b.aggregate_id)]
    assert [e.metadata for e in stored] == [
        {"channel": "web", "actor": "teller:7", "correlation_id": "req-1"}
    ] * 2
