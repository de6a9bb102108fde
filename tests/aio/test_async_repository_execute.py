"""AsyncRepository.execute: the sync repository's retry contract, awaited, on every store."""

from __future__ import annotations

import asyncio

import pytest

from eskit import CommandRetriesExhausted, Retry
from eskit.aio import AsyncRepository
from tests.aio.conftest import OpenStore
from tests.test_repository_execute import Counter

FAST = Retry(max_attempts=50, first_delay=0.0005, max_delay=0.01)


def test_async_execute_runs_saves_and_reruns_after_a_conflict(open_store: OpenStore) -> None:
    async def main() -> None:
        async with await open_store() as store:
            repo, other = AsyncRepository(store), AsyncRepository(store)
            counter = Counter("c")
            counter.increment()
            await repo.save(counter)
            seen: list[int] = []

            async def command(c: Counter) -> None:  # a coroutine function is awaited
                seen.append(c.version)
                if len(seen) == 1:
                    await other.execute("c", Counter, lambda o: o.increment(100))
                c.increment()

            saved = await repo.execute("c", Counter, command, retry=FAST, metadata={"u": "a"})
            assert seen == [1, 2]
            assert (saved.value, saved.version) == (102, 3)
            assert (await store.read_stream("c"))[-1].metadata == {"u": "a"}

            plain = await repo.execute("c", Counter, lambda c: c.increment(3))
            assert plain.value == 105

    asyncio.run(main())


def test_async_execute_gives_up_with_command_retries_exhausted(open_store: OpenStore) -> None:
    async def main() -> None:
        async with await open_store() as store:
            repo, other = AsyncRepository(store), AsyncRepository(store)
            counter = Counter("c")
            counter.increment()
            await repo.save(counter)

            async def command(c: Counter) -> None:
                await other.execute("c", Counter, lambda o: o.increment(100))
                c.increment(7)

            twice = Retry(max_attempts=2, first_delay=0)
            with pytest.raises(CommandRetriesExhausted) as raised:
                await repo.execute("c", Counter, command, retry=twice)
            assert raised.value.attempts == 2
            values = [e.event_data["by"] for e in await store.read_stream("c")]
            assert values == [1, 100, 100]

    asyncio.run(main())


def test_async_tasks_executing_on_one_aggregate_lose_no_increment(open_store: OpenStore) -> None:
    async def main() -> None:
        async with await open_store() as store:
            repo = AsyncRepository(store)
            counter = Counter("c")
            counter.increment()
            await repo.save(counter)

            async def command(c: Counter) -> None:
                await asyncio.sleep(0)  # let the other tasks load the same version
                c.increment()

            await asyncio.gather(*(repo.execute("c", Counter, command, retry=FAST)
                                   for _ in range(10)))
            assert (await repo.get("c", Counter)).value == 11

    asyncio.run(main())
