"""AsyncProjectionRunner's reads: each batch read once, from where the last one checkpointed.

Every event handled exactly once, nothing left running after the runner returns, and
events read from a position the checkpoint no longer is at (another runner moved it)
are read again from the checkpoint, never used.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eskit import InMemoryEventStore, NewEvent
from eskit.aio import AsyncInMemoryEventStore, AsyncProjectionRunner
from eskit.projections import InMemoryTarget, Projection, ProjectionRunner


class Seen(Projection):
    name = "seen"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def handle_E(self, event: Any, tx: Any) -> None:
        self.seen.append(event.event_data["n"])


def _store(events: int) -> AsyncInMemoryEventStore:
    sync = InMemoryEventStore()
    for n in range(events):
        sync.append(f"s-{n % 7}", [NewEvent("E", {"n": n})])
    return AsyncInMemoryEventStore.from_sync(sync)


def _spy(store: AsyncInMemoryEventStore) -> list[tuple[int, int | None]]:
    calls: list[tuple[int, int | None]] = []
    original = store.read_all

    def read_all(from_position: int = 0, limit: int | None = None, **kw: Any) -> Any:
        calls.append((from_position, limit))
        return original(from_position, limit, **kw)

    store.read_all = read_all  # type: ignore[method-assign]
    # A projection that names its types reads through the filtered page: spied the same.
    filtered = store._filtered_page

    async def filtered_page(after: int, limit: int, *args: Any) -> Any:
        calls.append((after, limit))
        return await filtered(after, limit, *args)

    store._filtered_page = filtered_page  # type: ignore[method-assign]
    return calls


def test_each_batch_is_read_once_from_the_previous_checkpoint_and_handled_once() -> None:
    async def main() -> None:
        store = _store(35)
        calls = _spy(store)
        projection = Seen()
        runner = AsyncProjectionRunner(store, projection, InMemoryTarget(), batch_size=10)
        assert await runner.run_until_caught_up() == 35
        assert projection.seen == list(range(35))
        positions = [e.position async for e in store.read_all()]
        calls.pop()  # the read just above
        # 0, then after the 10th, 20th and 30th event, then the empty read that says
        # caught up (as the sync runner does): each once.
        assert calls == [(0, 10), (positions[9], 10), (positions[19], 10),
                         (positions[29], 10), (positions[34], 10)]
        more = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert more == []

    asyncio.run(main())


def test_after_another_runner_moved_the_checkpoint_only_what_it_left_is_handled() -> None:
    async def main() -> None:
        store = _store(30)
        target = InMemoryTarget()
        projection = Seen()
        runner = AsyncProjectionRunner(store, projection, target, batch_size=10)
        first = await runner.run_batch()
        assert first.read == 10
        # Another runner of the same projection moves the checkpoint meanwhile.
        other = Seen()
        ProjectionRunner(store.sync_store, other, target, batch_size=15).run_batch()
        assert other.seen == list(range(10, 25))
        assert await runner.run_until_caught_up() == 5  # only what the other left
        assert projection.seen == [*range(10), *range(25, 30)]

    asyncio.run(main())
