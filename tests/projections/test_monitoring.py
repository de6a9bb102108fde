"""Monitoring: lag in events and seconds, rate, parked count, last error; Prometheus export."""

from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest

from eskit import NewEvent
from eskit.projections import ProjectionRunner, RetryPolicy
from eskit.projections.metrics import ProjectionCollector
from eskit.projections.monitoring import projection_status
from tests.projections.helpers import Counter, added


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


def test_prometheus_metrics_show_lag_parked_events_and_failing_state(backend) -> None:
    backend.store.append("a", [NewEvent("Poison"), added(1)])
    ProjectionRunner(backend.store, Counter(), backend.target, on_failure="park",
                     retry=RetryPolicy(max_attempts=1)).run_until_caught_up()
    registry = CollectorRegistry()
    registry.register(ProjectionCollector(backend.store, backend.target))
    text = generate_latest(registry).decode()
    assert 'eskit_projection_lag_events{partition="0",projection="counter"} 0.0' in text
    assert 'eskit_projection_parked_events{partition="0",projection="counter"} 1.0' in text
    assert 'eskit_projection_failing{partition="0",projection="counter"} 1.0' in text
    assert 'eskit_projection_events_handled{partition="0",projection="counter"} 1.0' in text
