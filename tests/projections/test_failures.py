"""Failure handling: retry with backoff, then stop or park, and operator retries."""

import pytest

from eskit import NewEvent
from eskit.projections import (
    ProjectionFailed,
    ProjectionRunner,
    RetryPolicy,
    partition_of,
    retry_parked,
    skip_parked,
)
from tests.projections.helpers import Counter, added

FAST = RetryPolicy(max_attempts=3, backoff=0.001)


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=0.1, max_backoff=0.5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]


def test_partition_of_is_stable_and_spreads_streams() -> None:
    assert partition_of("account-1", 1) == 0
    assert partition_of("account-1", 4) == partition_of("account-1", 4)
    assert len({partition_of(f"s{i}", 4) for i in range(100)}) == 4


def test_a_poison_event_stops_the_projection_after_its_retries(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    runner = ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST)
    with pytest.raises(ProjectionFailed) as failed:
        runner.run_until_caught_up()
    assert failed.value.event.event_type == "Poison"
    assert backend.read_counts() == {"a": (1, 1)}
    (state,) = backend.target.states("counter")
    assert "attempt 3 of 3" in state.last_error


def test_a_poison_event_is_parked_and_the_rest_proceeds(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    backend.store.append("b", [added(5)])
    runner = ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST,
                              on_failure="park")
    assert runner.run_until_caught_up() == 3
    assert backend.read_counts() == {"a": (2, 3), "b": (1, 5)}
    (letter,) = backend.target.dead_letters("counter")
    assert (letter.stream_id, letter.event_type, letter.attempts) == ("a", "Poison", 3)
    assert "poison" in letter.error
    (state,) = backend.target.states("counter")
    assert state.position == backend.store.head_position()


def test_with_parked_streams_wait_a_streams_later_events_wait_behind_the_parked_one(
    backend,
) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    backend.store.append("b", [added(5)])
    runner = ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST,
                              on_failure="park", parked_streams="wait")
    runner.run_until_caught_up()
    assert backend.read_counts() == {"a": (1, 1), "b": (1, 5)}
    letters = backend.target.dead_letters("counter")
    assert [d.event_type for d in letters] == ["Poison", "Added"]
    assert "waiting" in letters[1].error


class Cured(Counter):
    """The counter after the bug is fixed: poison events now count."""

    def handle_Poison(self, event, tx) -> None:
        self._count(event, tx)


def test_parked_events_can_be_retried_in_order_once_the_cause_is_fixed(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison", {"amount": 7}), added(2)])
    ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST, on_failure="park",
                     parked_streams="wait").run_until_caught_up()
    with pytest.raises(RuntimeError):
        retry_parked(backend.store, Counter(), backend.target)
    assert len(backend.target.dead_letters("counter")) == 2
    done = retry_parked(backend.store, Cured(), backend.target)
    assert len(done) == 2
    assert backend.read_counts() == {"a": (3, 10)}
    assert backend.target.dead_letters("counter") == []


def test_a_skipped_parked_event_stays_listed_as_skipped(backend) -> None:
    backend.store.append("a", [NewEvent("Poison")])
    ProjectionRunner(backend.store, Counter(), backend.target, retry=FAST,
                     on_failure="park").run_until_caught_up()
    (letter,) = backend.target.dead_letters("counter")
    skip_parked(backend.target, "counter", letter.event_id)
    assert backend.target.dead_letters("counter") == []
    (skipped,) = backend.target.dead_letters("counter", status="skipped")
    assert skipped.event_id == letter.event_id


def test_retries_parking_and_stops_are_logged_and_handled_events_are_not(caplog) -> None:
    import logging

    from eskit import InMemoryEventStore
    from eskit.projections import InMemoryTarget, Projection

    class Noop(Projection):
        name = "noop"

        def handle_Added(self, event, tx) -> None: ...

        def handle_Poison(self, event, tx) -> None:
            raise RuntimeError("poison")

    store = InMemoryEventStore()
    store.append("a", [added(1) for _ in range(50)])
    caplog.set_level(logging.DEBUG, logger="eskit.projections")
    target = InMemoryTarget()
    ProjectionRunner(store, Noop(), target).run_until_caught_up()
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []

    store.append("a", [NewEvent("Poison")])
    ProjectionRunner(store, Noop(), target, retry=FAST, on_failure="park",
                     name="parking").run_until_caught_up()
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.WARNING] * 2
    assert any("parking the event" in r.getMessage() for r in caplog.records)
    assert {r.name for r in caplog.records} == {"eskit.projections.runner"}
    caplog.clear()
    with pytest.raises(ProjectionFailed):
        ProjectionRunner(store, Noop(), target, retry=FAST,
                         name="stopping").run_until_caught_up()
    assert [r.levelname for r in caplog.records if "stops" in r.getMessage()] == ["ERROR"]
