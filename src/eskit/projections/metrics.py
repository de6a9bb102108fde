"""Projection status as Prometheus metrics (``pip install 'eskit[metrics]'``).

:class:`ProjectionCollector` computes :func:`~eskit.projections.monitoring.projection_status`
on every scrape and exposes it labelled by projection and partition:

* gauges: ``eskit_projection_lag_events`` (events after the checkpoint),
  ``..._lag_seconds``, ``..._events_per_second``, ``..._parked_events`` (parked now),
  ``..._skipped_events``, ``..._failing`` (1 while ``last_error`` is set);
* counters: ``eskit_projection_events_handled_total``,
  ``..._events_parked_total`` (ever parked: parked, skipped or retried since),
  ``..._events_retried_total``. A reset or a rebuild starts them over, which
  Prometheus's ``rate()`` treats as a counter reset.

Positions are not exported: on PostgreSQL they are 128-bit (transaction id,
sequence) pairs, which a float sample cannot hold; ``lag_events`` says how far
behind a projection is. Register the collector with a registry and serve it however
you serve metrics, e.g. ``prometheus_client.start_http_server(9100, registry=registry)``.
A scrape reads the target and the store: keep scrape intervals in seconds, not
milliseconds, on large stores (lag counting reads up to ``count_limit`` events).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from eskit.errors import MissingExtraError

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("metrics", "eskit's Prometheus metrics", name=exc.name) from exc

from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.monitoring import ProjectionStatus, projection_status
from eskit.stores.base import EventStore

__all__ = ["ProjectionCollector"]

_Value = Callable[[ProjectionStatus], float]

_GAUGES: tuple[tuple[str, str, _Value], ...] = (
    ("lag_events", "Events after the checkpoint (counted up to count_limit)",
     lambda s: s.lag_events),
    ("lag_seconds", "Seconds the oldest unprocessed event has waited", lambda s: s.lag_seconds),
    ("events_per_second", "Recent handling rate", lambda s: s.events_per_second),
    ("parked_events", "Events parked in the dead-letter table now", lambda s: s.parked),
    ("skipped_events", "Parked events an operator skipped", lambda s: s.skipped),
    ("failing", "1 while the projection's last error is set",
     lambda s: 1.0 if s.last_error else 0.0),
)
_COUNTERS: tuple[tuple[str, str, _Value], ...] = (
    ("events_handled", "Events handled", lambda s: s.events_handled),
    ("events_parked", "Events ever parked (parked, skipped or retried since)",
     lambda s: s.parked + s.skipped + s.retried),
    ("events_retried", "Parked events handled by a retry", lambda s: s.retried),
)


class ProjectionCollector(Collector):
    """A Prometheus collector for every projection stored in ``target``."""

    def __init__(
        self, store: EventStore, target: ProjectionTarget, *, count_limit: int = 100_000
    ) -> None:
        self.store = store
        self.target = target
        self.count_limit = count_limit

    def collect(self) -> Iterator[Metric]:
        statuses = projection_status(self.store, self.target, count_limit=self.count_limit)
        labels = ["projection", "partition"]
        for metric, help_text, value in _GAUGES:
            gauge = GaugeMetricFamily(f"eskit_projection_{metric}", help_text, labels=labels)
            for s in statuses:
                gauge.add_metric([s.name, str(s.partition)], float(value(s)))
            yield gauge
        for metric, help_text, value in _COUNTERS:
            counter = CounterMetricFamily(
                f"eskit_projection_{metric}", help_text, labels=labels
            )
            for s in statuses:
                counter.add_metric([s.name, str(s.partition)], float(value(s)))
            yield counter
