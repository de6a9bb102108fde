"""Reading and loading a long stream holds one page of it, not the whole stream.

Measured with tracemalloc (Python allocations) while 20,000 events are read; before
paging, ``read_stream`` held every stored row and every event at once (100,000
events: 104 MB at the peak on SQLite, 106 MB on PostgreSQL), and loading an
aggregate went through it. A page of 1,000 events costs under 2 MB.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import Aggregate, EventStore, NewEvent, Repository, SQLiteEventStore
from eskit.aio import AsyncRepository, AsyncSQLiteEventStore
from tests.conftest import new_schema_name

EVENTS = 20_000
BOUND = 5_000_000  # bytes: a few pages, far below the ~20 MB of the whole stream


class Counter(Aggregate):
    def __init__(self, counter_id: Any) -> None:
        super().__init__(counter_id)
        self.total = 0

    def handle_Counted(self, data: dict[str, Any]) -> None:
        self.total += data["n"]


def _fill(store: EventStore) -> None:
    note = "a note long enough to make each event weigh what real events weigh"
    for start in range(0, EVENTS, 1000):
        store.append("c", [NewEvent("Counted", {"n": 1, "note": note}) for _ in range(1000)],
                     start)


def _peak(action: Callable[[], object]) -> tuple[object, int]:
    """What ``action`` returns, and the peak of Python memory above what it returns."""
    tracemalloc.start()
    try:
        result = action()
        kept, peak = tracemalloc.get_traced_memory()
        return result, peak - kept
    finally:
        tracemalloc.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        store: EventStore = SQLiteEventStore(tmp_path / "events.db", synchronous="NORMAL")
    else:
        from eskit.stores.postgres import PostgresEventStore

        dsn = request.getfixturevalue("postgres_dsn")
        store = PostgresEventStore(dsn, schema=new_schema_name())
    with store:
        _fill(store)
        yield store


def test_iterating_a_long_stream_holds_one_page_not_the_stream(store: EventStore) -> None:
    count, peak = _peak(lambda: sum(1 for _ in store.iter_stream("c")))
    assert count == EVENTS
    assert peak < BOUND, f"{peak / 1e6:.1f} MB at the peak"
    backwards, peak = _peak(lambda: sum(1 for _ in store.iter_stream("c", backwards=True)))
    assert backwards == EVENTS
    assert peak < BOUND, f"{peak / 1e6:.1f} MB at the peak, backwards"


def test_loading_a_long_aggregate_holds_one_page_not_the_stream(store: EventStore) -> None:
    repository = Repository(store)
    total, peak = _peak(lambda: repository.get("c", Counter).total)
    assert total == EVENTS
    assert peak < BOUND, f"{peak / 1e6:.1f} MB at the peak"


def test_read_stream_holds_its_list_and_one_page_not_every_row_too(store: EventStore) -> None:
    # The returned list grows with the stream; what read_stream needs on top of it
    # (the stored rows, an upcast copy) is one page.
    events, above = _peak(lambda: store.read_stream("c"))
    assert isinstance(events, list)
    assert len(events) == EVENTS
    assert above < BOUND, f"{above / 1e6:.1f} MB at the peak above the list"


def test_async_loading_and_iterating_hold_one_page_not_the_stream(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await AsyncSQLiteEventStore.open(tmp_path / "events.db")
        try:
            _fill(store.sync_store)
            repository = AsyncRepository(store)
            tracemalloc.start()
            try:
                assert (await repository.get("c", Counter)).total == EVENTS
                count = 0
                async for _ in store.iter_stream("c"):
                    count += 1
                assert count == EVENTS
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < BOUND, f"{peak / 1e6:.1f} MB at the peak"
        finally:
            await store.close()

    asyncio.run(scenario())
