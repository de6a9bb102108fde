"""The projection runner: exactly-once read models with the checkpoint in the same transaction."""

import threading
import time

import pytest

from eskit import InMemoryEventStore, NewEvent
from eskit.errors import InvalidInputError
from eskit.projections import (
    InMemoryTarget,
    Projection,
    ProjectionRunner,
    idempotency_key,
    wait_for_projection,
)
from tests.projections.helpers import Counter, added


def test_projection_handles_every_event_once_and_stores_its_checkpoint(backend) -> None:
    backend.store.append("a", [added(1), added(2)])
    backend.store.append("b", [added(5), NewEvent("Ignored")])
    runner = ProjectionRunner(backend.store, Counter(), backend.target, batch_size=2)
    assert runner.run_until_caught_up() == 3
    assert backend.read_counts() == {"a": (2, 3), "b": (1, 5)}
    (state,) = backend.target.states("counter")
    assert state.position == backend.store.head_position()  # moved past the ignored event
    assert state.events_handled == 3


def test_a_restarted_runner_continues_after_its_checkpoint_without_repeating(backend) -> None:
    backend.store.append("a", [added(1)])
    ProjectionRunner(backend.store, Counter(), backend.target).run_until_caught_up()
    backend.store.append("a", [added(10)])
    again = ProjectionRunner(backend.store, Counter(), backend.new_target())
    assert again.run_until_caught_up() == 1
    assert backend.read_counts() == {"a": (2, 11)}
    again.target.close()


def test_a_failing_batch_rolls_back_read_model_and_checkpoint_together(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    runner = ProjectionRunner(backend.store, Counter(), backend.target, batch_size=10)
    runner.retry = runner.retry.__class__(max_attempts=1)
    with pytest.raises(Exception, match="poison"):
        runner.run_until_caught_up()
    # The first event went through on its own before the poison event; nothing after it.
    assert backend.read_counts() == {"a": (1, 1)}
    (state,) = backend.target.states("counter")
    assert state.events_handled == 1
    assert "poison" in (state.last_error or "")


def test_two_runners_of_one_projection_never_handle_an_event_twice(backend) -> None:
    for i in range(40):
        backend.store.append(f"s{i % 5}", [added(1) for _ in range(5)])
    targets = [backend.new_target(), backend.new_target()]
    runners = [ProjectionRunner(backend.store, Counter(), t, batch_size=7) for t in targets]
    threads = [threading.Thread(target=r.run_until_caught_up) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for t in targets:
        t.close()
    assert sum(n for n, _ in backend.read_counts().values()) == 200


def test_live_runner_misses_nothing_while_writers_append_concurrently(backend) -> None:
    runner = ProjectionRunner(backend.store, Counter(), backend.target, poll_interval=0.05,
                              batch_size=50)
    runner.setup()
    follower = threading.Thread(target=runner.run)
    follower.start()

    def write(worker: int) -> None:
        for i in range(25):
            backend.store.append(f"w{worker}", [added(i)])

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if sum(n for n, _ in backend.read_counts().values()) >= 100:
            break
        time.sleep(0.05)
    runner.stop()
    follower.join(10)
    assert backend.read_counts() == {f"w{w}": (25, sum(range(25))) for w in range(4)}
    (state,) = backend.target.states("counter")
    assert state.position == backend.store.head_position()


class Totals(Projection):
    name = "totals"

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.keys = []

    def handle_Added(self, event, tx) -> None:
        self.total += event.event_data["amount"]
        self.keys.append(idempotency_key(self.name, event))


def test_in_memory_target_keeps_python_read_models_and_checkpoints() -> None:
    store = InMemoryEventStore()
    store.append("x", [added(3), added(4)])
    projection, target = Totals(), InMemoryTarget()
    runner = ProjectionRunner(store, projection, target)
    runner.run_until_caught_up()
    store.append("x", [added(5)])
    runner.run_until_caught_up()
    assert projection.total == 12
    assert target.states()[0].position == 3
    assert len(set(projection.keys)) == 3
    assert idempotency_key("totals", store.read_stream("x")[0]) == projection.keys[0]


def test_projection_filters_by_stream_prefix() -> None:
    class OnlyAccounts(Totals):
        name = "accounts-only"
        stream_prefixes = ("account-",)

    store = InMemoryEventStore()
    store.append("account-1", [added(1)])
    store.append("order-1", [added(100)])
    projection = OnlyAccounts()
    ProjectionRunner(store, projection, InMemoryTarget()).run_until_caught_up()
    assert projection.total == 1


def test_handlers_can_be_declared_with_handles_and_a_type_name() -> None:
    import eskit

    seen = []

    class Named(Projection):
        name = "named"

        @eskit.handles("shop.Item-Added")  # not a valid method name: use @handles
        def _added(self, event, tx) -> None:
            seen.append(event.event_data["n"])

    store = InMemoryEventStore()
    store.append("x", [NewEvent("shop.Item-Added", {"n": 1}), NewEvent("Other")])
    projection = Named()
    assert projection.event_types == {"shop.Item-Added"}
    ProjectionRunner(store, projection, InMemoryTarget()).run_until_caught_up()
    assert seen == [1]


def test_wait_for_returns_once_the_read_model_reflects_an_append(backend) -> None:
    runner = ProjectionRunner(backend.store, Counter(), backend.target, poll_interval=0.02)
    runner.setup()
    worker = threading.Thread(target=runner.run)
    worker.start()
    try:
        result = backend.store.append("w", [added(4), added(5)])
        assert runner.wait_for(result.position, timeout=20)
        assert backend.read_counts()["w"] == (2, 9)
        # The same question from anywhere that can open the target.
        target = backend.new_target()
        try:
            assert wait_for_projection(target, "counter", result.position, 1)
        finally:
            target.close()
    finally:
        runner.stop()
        worker.join(10)


def test_wait_for_times_out_when_no_runner_moves_the_checkpoint(backend) -> None:
    runner = ProjectionRunner(backend.store, Counter(), backend.target)
    result = backend.store.append("w", [added(1)])
    started = time.monotonic()
    assert runner.wait_for(result.position, timeout=0.2) is False
    assert 0.2 <= time.monotonic() - started < 2
    with pytest.raises(InvalidInputError):
        runner.wait_for(-1)
    with pytest.raises(InvalidInputError):
        runner.wait_for(result.position, timeout=float("nan"))


class _Reads:
    """A store seen through the runner's eyes, recording how it is read."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.unfiltered = 0
        self.filtered: list[int] = []

    def read_all(self, *args, **kwargs):
        self.unfiltered += 1
        return self.inner.read_all(*args, **kwargs)

    def _filtered_page(self, after, limit, wanted, tolerant):
        result = self.inner._filtered_page(after, limit, wanted, tolerant)
        self.filtered.append(len(result[0]))
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_projection_reads_only_its_types_and_checkpoints_past_the_rest(backend) -> None:
    backend.store.append("noise", [NewEvent("Ignored") for _ in range(300)])
    backend.store.append("a", [added(1)])
    last = backend.store.append("noise", [NewEvent("Ignored") for _ in range(200)])
    reads = _Reads(backend.store)
    runner = ProjectionRunner(reads, Counter(), backend.target, batch_size=50)
    assert runner.run_until_caught_up() == 1
    # The handled types went to the database: 501 events in batches of 50 would be
    # eleven reads; one found the event, one proved nothing else is there.
    assert reads.unfiltered == 0
    assert reads.filtered == [1, 0]
    assert backend.read_counts() == {"a": (1, 1)}
    (state,) = backend.target.states("counter")
    assert state.position == last.position
    # Once restarted it starts from there: nothing is read again.
    backend.store.append("a", [added(2)])
    again = _Reads(backend.store)
    assert ProjectionRunner(again, Counter(), backend.new_target()).run_until_caught_up() == 1
    assert again.filtered == [1, 0]
    assert backend.read_counts() == {"a": (2, 3)}
