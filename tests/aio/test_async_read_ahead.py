"""read_all's read-ahead on the stores that do I/O: the same pages, at most one ahead.

AsyncEventStore._iter_all asks for the next page in a task while it yields the
current one. These tests pin what must not change with it: the same queries in the
same order, the same events for every limit, and a consumer that stops early leaves
nothing behind (no unretrieved task error, the store closes).
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import pytest

from eskit import NewEvent
from eskit.aio import AsyncEventStore
from eskit.errors import StoreUnavailableError
from tests.aio.conftest import OpenStore


async def _filled(open_store: OpenStore, events: int) -> AsyncEventStore:
    store = await open_store()
    for start in range(0, events, 500):
        await store.append(f"s-{start}", [NewEvent("E", {"n": n}) for n in range(500)])
    return store


def _spy(store: AsyncEventStore) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    original = store._read_all_page

    async def counting(after: int, limit: int) -> list[Any]:
        calls.append((after, limit))
        return await original(after, limit)

    store._read_all_page = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("limit", [None, 999, 1000, 1001, 2000, 2500, 3000])
def test_every_limit_reads_the_same_events_as_without_read_ahead(
    open_durable_store: OpenStore, limit: int | None
) -> None:
    async def main() -> None:
        store = await _filled(open_durable_store, 2500)
        try:
            assert store._read_ahead
            ahead = [e.position async for e in store.read_all(limit=limit)]
            store._read_ahead = False
            plain = [e.position async for e in store.read_all(limit=limit)]
            assert ahead == plain
            assert len(ahead) == min(2500, limit or 2500)
            assert ahead == sorted(ahead)
        finally:
            await store.close()

    asyncio.run(main())


def test_read_ahead_asks_for_the_next_page_once_a_full_one_has_arrived(
    open_durable_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await _filled(open_durable_store, 2500)
        try:
            calls = _spy(store)
            events = store.read_all()
            first = await anext(events)
            # The first page is in hand, and the second was asked for (not the third).
            assert len(calls) == 2
            assert calls[0] == (0, 1000)
            rest = [e async for e in events]
            assert len(rest) == 2499
            # Continue after the last position of each page; stop at the short one.
            assert [limit for _, limit in calls] == [1000, 1000, 1000]
            assert calls[1][0] > first.position
        finally:
            await store.close()

    asyncio.run(main())


def test_a_consumer_that_stops_early_leaves_no_unretrieved_error(
    open_durable_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await _filled(open_durable_store, 2500)
        original = store._read_all_page
        started = asyncio.Event()

        async def failing(after: int, limit: int) -> list[Any]:
            if after:  # the read-ahead of the second page fails
                started.set()
                raise StoreUnavailableError("gone")
            return await original(after, limit)

        store._read_all_page = failing  # type: ignore[method-assign]
        try:
            events = store.read_all()
            await anext(events)
            await events.aclose()  # stop while the read-ahead is out
            await started.wait()
            await asyncio.sleep(0)
        finally:
            await store.close()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reported: list[dict[str, Any]] = []

        async def run() -> None:
            asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
            await main()
            gc.collect()
            await asyncio.sleep(0)

        asyncio.run(run())
    assert reported == []


def test_a_failing_next_page_raises_where_it_would_without_read_ahead(
    open_durable_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await _filled(open_durable_store, 2500)
        original = store._read_all_page

        async def failing(after: int, limit: int) -> list[Any]:
            if after:
                raise StoreUnavailableError("gone")
            return await original(after, limit)

        store._read_all_page = failing  # type: ignore[method-assign]
        seen: list[int] = []

        async def consume() -> None:
            async for event in store.read_all():
                seen.append(event.position)

        try:
            with pytest.raises(StoreUnavailableError):
                await consume()
            assert len(seen) == 1000  # the whole first page, then the error
        finally:
            await store.close()

    asyncio.run(main())
