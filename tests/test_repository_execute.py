"""Repository.execute: load, run the command, save, and rerun it on conflict, bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    Aggregate,
    AggregateNotFound,
    EventStore,
    InMemoryEventStore,
    InvalidInputError,
    Repository,
    Retry,
    SQLiteEventStore,
)
from tests.conftest import new_schema_name

FAST = Retry(max_attempts=50, first_delay=0.0005, max_delay=0.01)


class Counter(Aggregate):
    def __init__(self, counter_id: Any) -> None:
        super().__init__(counter_id)
        self.value = 0

    def increment(self, by: int = 1) -> None:
        if by <= 0:
            raise ValueError("increments are positive")
        self.raise_event("Incremented", {"by": by})

    def handle_Incremented(self, data: dict[str, Any]) -> None:
        self.value += data["by"]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    s: EventStore
    if request.param == "memory":
        s = InMemoryEventStore()
    elif request.param == "sqlite":
        s = SQLiteEventStore(tmp_path / "events.db")
    else:
        from eskit.stores.postgres import PostgresEventStore

        s = PostgresEventStore(request.getfixturevalue("postgres_dsn"), schema=new_schema_name())
    yield s
    s.close()


def saved_counter(repo: Repository, counter_id: str = "c") -> None:
    counter = Counter(counter_id)
    counter.increment()
    repo.save(counter)


def test_execute_loads_runs_and_saves_returning_the_saved_aggregate(store: EventStore) -> None:
    repo = Repository(store)
    saved_counter(repo)
    counter = repo.execute("c", Counter, lambda c: c.increment(5), metadata={"user": "ann"})
    assert (counter.value, counter.version) == (6, 2)
    assert counter.get_uncommitted_events() == []
    assert store.read_stream("c")[-1].metadata == {"user": "ann"}






def test_execute_lets_a_refused_command_and_a_missing_aggregate_through_unretried(
    store: EventStore,
) -> None:
    repo = Repository(store)
    saved_counter(repo)
    calls: list[int] = []

    def refused(counter: Counter) -> None:
        calls.append(1)
        counter.increment(0)

    with pytest.raises(ValueError, match="positive"):
        repo.execute("c", Counter, refused, retry=FAST)
    assert calls == [1]
    with pytest.raises(AggregateNotFound):
        repo.execute("nope", Counter, lambda c: c.increment(), retry=FAST)
    with pytest.raises(InvalidInputError, match="Retry"):
        repo.execute("c", Counter, lambda c: c.increment(), retry=3)  # type: ignore[arg-type]
    assert len(store.read_stream("c")) == 1


def test_threads_executing_on_one_aggregate_lose_no_increment(store: EventStore) -> None:
    threads_count = 6
    repo = Repository(store, cache_size=4)
    saved_counter(repo)
    barrier = threading.Barrier(threads_count, timeout=20)
    first_try = threading.local()
    errors: list[BaseException] = []

    def command(counter: Counter) -> None:
        if not getattr(first_try, "done", False):  # all decide on the same version once
            first_try.done = True
            barrier.wait()
        counter.increment()

    def run() -> None:
        try:
            repo.execute("c", Counter, command, retry=FAST)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert repo.get("c", Counter).value == 1 + threads_count
    assert [e.version for e in store.read_stream("c")] == list(range(1, threads_count + 2))
