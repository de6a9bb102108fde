"""Retrying parked events: exactly once under concurrent retries, in stream order."""

import multiprocessing
import threading
import time

import pytest

from eskit import InMemoryEventStore, NewEvent
from eskit.errors import InvalidInputError
from eskit.projections import (
    InMemoryTarget,
    ParkedEventBlocked,
    Projection,
    ProjectionRunner,
    RetryPolicy,
    retry_parked,
    skip_parked,
)
from tests.projections.helpers import Counter, added, append_visible, wait_visible
from tests.projections.workers import SlowCured, open_backend, retry_all

FAST = RetryPolicy(max_attempts=1, backoff=0.001)
PARKED = 12


def _park_poison(store, target, streams: int = 4) -> None:
    """PARKED poison events on ``streams`` streams, each followed by one Added."""
    for i in range(PARKED):
        store.append(f"s{i % streams}", [NewEvent("Poison", {"amount": 100}), added(1)])
    wait_visible(store, 2 * PARKED)
    ProjectionRunner(store, Counter(), target, retry=FAST, on_failure="park",
                     parked_streams="continue").run_until_caught_up()
    assert len(target.dead_letters("counter")) == PARKED


def _where(backend) -> tuple[str, str | None]:
    return (str(backend.path), None) if backend.kind == "sqlite" else (backend.dsn, backend.schema)


def test_two_processes_retrying_at_once_apply_each_parked_event_exactly_once(backend) -> None:
    _park_poison(backend.store, backend.target)
    where, schema = _where(backend)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    children = [
        context.Process(target=retry_all, args=(backend.kind, where, schema, start, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    start.set()
    done = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    # Every stream: its 3 Added (1 each) plus 3 Poison (100 each), each counted once.
    assert backend.read_counts() == {f"s{i}": (6, 303) for i in range(4)}
    assert len(done[0]) + len(done[1]) == PARKED
    assert sorted(done[0] + done[1]) == sorted(
        d.event_id for d in backend.target.dead_letters("counter", status="retried")
    )
    assert backend.target.dead_letters("counter") == []


def test_two_threads_retrying_at_once_apply_each_parked_event_exactly_once(backend) -> None:
    _park_poison(backend.store, backend.target)
    where, schema = _where(backend)
    done: list[list[str]] = []
    barrier = threading.Barrier(2)

    def retry() -> None:
        store, target = open_backend(backend.kind, where, schema)
        try:
            barrier.wait(10)
            done.append(retry_parked(store, SlowCured(), target))
        finally:
            store.close()
            target.close()

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert backend.read_counts() == {f"s{i}": (6, 303) for i in range(4)}
    assert sum(map(len, done)) == PARKED


class Tally(Projection):
    """An in-memory read model: how often each event was applied, in what order."""

    name = "counter"

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[str, int]] = []
        self.broken = True

    def handle_Poison(self, event, tx) -> None:
        if self.broken:
            raise RuntimeError("poison")
        time.sleep(0.002)  # long enough for the retries to overlap
        self.applied.append((event.stream_id, event.version))

    def handle_Added(self, event, tx) -> None:
        self.applied.append((event.stream_id, event.version))


def test_threads_retrying_on_an_in_memory_target_apply_each_parked_event_exactly_once() -> None:
    store, target, tally = InMemoryEventStore(), InMemoryTarget(), Tally()
    for i in range(PARKED):
        store.append(f"s{i % 4}", [NewEvent("Poison")])
    ProjectionRunner(store, tally, target, retry=FAST, on_failure="park").run_until_caught_up()
    tally.broken = False
    barrier = threading.Barrier(4)

    def retry() -> None:
        barrier.wait(10)
        retry_parked(store, tally, target)

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(tally.applied) == sorted({(f"s{i % 4}", i // 4 + 1) for i in range(PARKED)})


def test_retrying_an_event_waiting_behind_an_earlier_parked_one_is_refused(backend) -> None:
    append_visible(backend.store, "a", [added(1), NewEvent("Poison", {"amount": 7}), added(2)])
    ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST, on_failure="park",
                     parked_streams="wait").run_until_caught_up()
    poison, waiting = backend.target.dead_letters("counter")
    with pytest.raises(ParkedEventBlocked) as refused:
        retry_parked(backend.store, SlowCured(), backend.target, waiting.event_id)
    assert refused.value.blocked_by == [poison.event_id]
    assert poison.event_id in str(refused.value)
    assert backend.read_counts() == {"a": (1, 1)}          # nothing was applied
    assert len(backend.target.dead_letters("counter")) == 2
    # In order, one at a time, it goes through.
    assert retry_parked(backend.store, SlowCured(), backend.target, poison.event_id) == [
        poison.event_id]
    assert retry_parked(backend.store, SlowCured(), backend.target, waiting.event_id) == [
        waiting.event_id]
    assert backend.read_counts() == {"a": (3, 10)}


def test_an_event_behind_a_skipped_one_can_be_retried(backend) -> None:
    append_visible(backend.store, "a", [NewEvent("Poison"), added(2)])
    ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST, on_failure="park",
                     parked_streams="wait").run_until_caught_up()
    poison, waiting = backend.target.dead_letters("counter")
    skip_parked(backend.target, "counter", poison.event_id)
    assert retry_parked(backend.store, SlowCured(), backend.target) == [waiting.event_id]
    assert backend.read_counts() == {"a": (1, 2)}


def test_a_retried_or_unknown_event_cannot_be_skipped_or_retried_again(backend) -> None:
    append_visible(backend.store, "a", [NewEvent("Poison")])
    ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST,
                     on_failure="park").run_until_caught_up()
    (letter,) = backend.target.dead_letters("counter")
    assert retry_parked(backend.store, SlowCured(), backend.target) == [letter.event_id]
    with pytest.raises(InvalidInputError):
        skip_parked(backend.target, "counter", letter.event_id)
    with pytest.raises(InvalidInputError):
        retry_parked(backend.store, SlowCured(), backend.target, letter.event_id)
    assert backend.read_counts() == {"a": (1, 0)}
