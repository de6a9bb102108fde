"""Monitoring: lag in events and seconds, rate, parked count, last error; Prometheus export."""

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from eskit import NewEvent
from eskit.projections import ProjectionFailed, ProjectionRunner, RetryPolicy, retry_parked
from eskit.projections.metrics import ProjectionCollector
from eskit.projections.monitoring import projection_status
from tests.projections.helpers import Counter, added, append_visible
from tests.projections.test_failures import Cured


def test_status_reports_lag_until_the_projection_catches_up(backend) -> None:
    backend.store.append("a", [added(1) for _ in range(5)])
    runner = ProjectionRunner(backend.store, Counter(), backend.target, batch_size=2)
    runner.run_batch()
    (status,) = projection_status(backend.store, backend.target)
    assert (status.name, status.events_handled, status.lag_events) == ("counter", 2, 3)
    later = backend.store.read_stream("a")[2].timestamp + timedelta(seconds=30)
    (status,) = projection_status(backend.store, backend.target, now=later)
    assert 29 < status.lag_seconds <= 30
    assert status.head == backend.store.head_position()
    assert status.events_per_second > 0
    runner.run_until_caught_up()
    (status,) = projection_status(backend.store, backend.target)
    assert status.caught_up
    assert status.lag_seconds == 0.0
    assert status.checkpoint == status.head


def _metrics(backend) -> str:
    registry = CollectorRegistry()
    registry.register(ProjectionCollector(backend.store, backend.target))
    return generate_latest(registry).decode()


def test_prometheus_metrics_show_lag_parked_events_and_failing_state(backend) -> None:
    append_visible(backend.store, "a", [NewEvent("Poison"), added(1)])
    ProjectionRunner(backend.store, Counter(), backend.target, on_failure="park",
                     retry=RetryPolicy(max_attempts=1)).run_until_caught_up()
    text = _metrics(backend)
    labels = '{partition="0",projection="counter"}'
    assert f"eskit_projection_lag_events{labels} 0.0" in text
    assert f"eskit_projection_parked_events{labels} 1.0" in text
    assert f"eskit_projection_events_parked_total{labels} 1.0" in text
    assert f"eskit_projection_events_handled_total{labels} 1.0" in text
    # Parked, the projection goes on: it is not failing (the error stays with the event).
    assert f"eskit_projection_failing{labels} 0.0" in text
    retry_parked(backend.store, Cured(), backend.target)
    text = _metrics(backend)
    assert f"eskit_projection_parked_events{labels} 0.0" in text
    assert f"eskit_projection_events_retried_total{labels} 1.0" in text
    assert f"eskit_projection_events_parked_total{labels} 1.0" in text


def test_metrics_export_counts_and_lag_never_positions(backend) -> None:
    append_visible(backend.store, "a", [added(1) for _ in range(3)])
    ProjectionRunner(backend.store, Counter(), backend.target, batch_size=2).run_batch()
    text = _metrics(backend)
    assert "position" not in text
    samples = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    assert samples
    # PostgreSQL positions are about 2**64 * transaction id: nothing near that is exported.
    assert all(float(value) < 1e9 for _, value in samples if "_created" not in _)
    assert 'eskit_projection_lag_events{partition="0",projection="counter"} 1.0' in text


def test_last_error_and_the_failing_gauge_clear_when_a_new_process_recovers(backend) -> None:
    append_visible(backend.store, "a", [added(1), NewEvent("Poison", {"amount": 5}), added(2)])
    with pytest.raises(ProjectionFailed):
        ProjectionRunner(backend.store, Counter(), backend.target,
                         retry=RetryPolicy(max_attempts=2, backoff=0.001)).run_until_caught_up()
    (state,) = backend.target.states("counter")
    assert "attempt 2 of 2" in state.last_error
    assert 'eskit_projection_failing{partition="0",projection="counter"} 1.0' in _metrics(backend)
    # The fix is deployed; a new process (a new runner, a new target) picks up.
    target = backend.new_target()
    try:
        assert ProjectionRunner(backend.store, Cured(), target).run_until_caught_up() == 2
    finally:
        target.close()
    (state,) = backend.target.states("counter")
    assert (state.last_error, state.last_error_at) == (None, None)
    assert 'eskit_projection_failing{partition="0",projection="counter"} 0.0' in _metrics(backend)
    assert backend.read_counts() == {"a": (3, 8)}


def test_last_error_stays_while_the_runner_works_towards_the_failing_event(backend) -> None:
    append_visible(backend.store, "a", [added(1), added(1), NewEvent("Poison")])
    fast = RetryPolicy(max_attempts=1, backoff=0.001)
    with pytest.raises(ProjectionFailed):
        ProjectionRunner(backend.store, Counter(), backend.target,
                         retry=fast).run_until_caught_up()
    with backend.target.transaction() as conn:  # replay from the start, error kept
        backend.target.save_position(conn, "counter", 0, 0, 0, None, None)
    runner = ProjectionRunner(backend.store, Counter(), backend.target, on_failure="park",
                              retry=fast)
    runner.run_batch()  # the batch fails: one event at a time from now on
    runner.run_batch()  # the first event alone goes through; the poison is still ahead
    (state,) = backend.target.states("counter")
    assert state.last_error is not None
    runner.run_until_caught_up()
    (state,) = backend.target.states("counter")
    assert state.last_error is None
    assert len(backend.target.dead_letters("counter")) == 1
