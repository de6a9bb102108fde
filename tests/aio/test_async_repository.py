"""AsyncRepository keeps eskit.Repository's promises, on every async store."""

import asyncio
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from eskit import AggregateNotFound, ConcurrencyError, InvalidInputError, Repository
from eskit.aio import AsyncInMemoryEventStore, AsyncRepository
from examples.bank.domain import BankAccount
from tests.aio.conftest import OpenStore


def _open_account(owner: str = "Alice", deposit: str = "100.00") -> BankAccount:
    account = BankAccount(uuid4())
    account.open("ACC-1", owner, Decimal(deposit))
    return account


@pytest.mark.parametrize("cache_size", [0, 10])
def test_saved_aggregate_loads_back_with_the_same_state(
    open_store: OpenStore, cache_size: int
) -> None:
    async def main() -> None:
        store = await open_store()
        try:
            repository = AsyncRepository(store, cache_size=cache_size)
            account = _open_account()
            account.deposit(Decimal("25.50"))
            result = await repository.save(account, metadata={"user": "teller"})
            assert result is not None
            assert result.version == 2
            assert account.get_uncommitted_events() == []
            assert await repository.save(account) is None, "nothing left to save"

            loaded = await repository.get(account.aggregate_id, BankAccount)
            assert (loaded.balance, loaded.owner, loaded.version) == (Decimal("125.50"),
                                                                      "Alice", 2)
            stored = await store.read_stream(account.aggregate_id)
            assert [e.metadata for e in stored] == [{"user": "teller"}] * 2
        finally:
            await store.close()

    asyncio.run(main())


def test_concurrent_save_of_a_stale_copy_is_a_conflict_and_keeps_its_events(
    open_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await open_store()
        try:
            repository = AsyncRepository(store)
            account = _open_account()
            await repository.save(account)
            first = await repository.get(account.aggregate_id, BankAccount)
            second = await repository.get(account.aggregate_id, BankAccount)
            first.deposit(Decimal("1.00"))
            second.withdraw(Decimal("2.00"))
            await repository.save(first)
            with pytest.raises(ConcurrencyError) as caught:
                await repository.save(second)
            assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
            assert len(second.get_uncommitted_events()) == 1, "the command can be retried"

            retried = await repository.get(account.aggregate_id, BankAccount)
            retried.withdraw(Decimal("2.00"))
            await repository.save(retried)
            final = await repository.get(account.aggregate_id, BankAccount)
            assert (final.balance, final.version) == (Decimal("99.00"), 3)
        finally:
            await store.close()

    asyncio.run(main())


def test_loading_an_aggregate_with_no_events_raises_aggregate_not_found(
    open_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await open_store()
        try:
            missing = uuid4()
            with pytest.raises(AggregateNotFound) as caught:
                await AsyncRepository(store, cache_size=5).get(missing, BankAccount)
            assert caught.value.aggregate_id == missing
            assert caught.value.aggregate_class is BankAccount
        finally:
            await store.close()

    asyncio.run(main())


def test_cached_aggregate_is_never_stale_and_callers_get_copies() -> None:
    async def main() -> None:
        store = AsyncInMemoryEventStore()
        cached = AsyncRepository(store, cache_size=2)
        other_writer = AsyncRepository(store)
        account = _open_account()
        await cached.save(account)

        elsewhere = await other_writer.get(account.aggregate_id, BankAccount)
        elsewhere.deposit(Decimal("5.00"))
        await other_writer.save(elsewhere)

        loaded = await cached.get(account.aggregate_id, BankAccount)
        assert (loaded.balance, loaded.version) == (Decimal("105.00"), 2)
        loaded.balance = Decimal("1000000.00")  # a caller scribbling on its copy
        again = await cached.get(account.aggregate_id, BankAccount)
        assert again.balance == Decimal("105.00")
        assert again is not loaded

    asyncio.run(main())


def test_cache_keeps_only_the_most_recently_used_aggregates() -> None:
    async def main() -> None:
        store = AsyncInMemoryEventStore()
        repository = AsyncRepository(store, cache_size=1)
        reads: list[Any] = []
        original = store.read_stream

        async def counting(stream_id: Any, from_version: int = 0, **kwargs: Any) -> Any:
            reads.append((stream_id, from_version))
            return await original(stream_id, from_version, **kwargs)

        store.read_stream = counting  # type: ignore[method-assign,assignment]
        a, b = _open_account(), _open_account("Bob")
        await repository.save(a)
        await repository.save(b)  # evicts a
        await repository.get(b.aggregate_id, BankAccount)
        await repository.get(a.aggregate_id, BankAccount)
        assert reads == [(b.aggregate_id, 1), (a.aggregate_id, 0)], "b from cache, a replayed"

    asyncio.run(main())


@pytest.mark.parametrize("cache_size", [-1, 1.5, "3", None])
def test_invalid_cache_size_is_rejected(cache_size: Any) -> None:
    with pytest.raises(InvalidInputError):
        AsyncRepository(AsyncInMemoryEventStore(), cache_size=cache_size)


def test_sync_and_async_repositories_share_one_domain_model() -> None:
    async def main() -> None:
        store = AsyncInMemoryEventStore()
        account = _open_account()
        await AsyncRepository(store).save(account)

        sync_repository = Repository(store.sync_store)
        loaded = sync_repository.get(account.aggregate_id, BankAccount)
        loaded.deposit(Decimal("0.01"))
        sync_repository.save(loaded)

        again = await AsyncRepository(store).get(account.aggregate_id, BankAccount)
        assert again.balance == Decimal("100.01")

    asyncio.run(main())
