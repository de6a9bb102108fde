"""AsyncRepository.execute: the sync repository's retry contract, awaited, on every store."""

from __future__ import annotations

import asyncio

from eskit import Retry
from eskit.aio import AsyncRepository
from tests.aio.conftest import OpenStore
from tests.test_repository_execute import Counter

FAST = Retry(max_attempts=50, first_delay=0.0005, max_delay=0.01)






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
