"""Projection status as Prometheus metrics (``pip install 'eskit[metrics]'``).

:class:`ProjectionCollector` computes :func:`~eskit.projections.monitoring.projection_status`
on every scrape and exposes it as gauges labelled by projection and partition::

    eskit_projection_checkpoint_position, eskit_projection_head_position,
    eskit_projection_lag_events, eskit_projection_lag_seconds,
    eskit_projection_events_per_second, eskit_projection_events_handled,
    eskit_projection_parked_events, eskit_projection_failing (1 while last_error is set)

Register it with a registry and serve it however you serve metrics, e.g.
``prometheus_client.start_http_server(9100, registry=registry)``.
A scrape reads the target and the store: keep scrape intervals in seconds, not
milliseconds, on large stores (lag counting reads up to ``count_limit`` events).
"""

from __future__ import annotations

from collections.abc import Iterator

from eskit.errors import MissingExtraError

try:
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("metrics", "eskit's Prometheus metrics", name=exc.name) from exc

from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.monitoring import projection_status
from eskit.stores.base import EventStore

__all__ = ["ProjectionCollector"]

_GAUGES = (
    ("checkpoint_position", "Position of the last event the projection read", "checkpoint"),
    ("head_position", "Position of the newest event in the store", "head"),
    ("lag_events", "Events after the checkpoint", "lag_events"),
    ("lag_seconds", "Seconds the oldest unprocessed event has waited", "lag_seconds"),
    ("events_per_second", "Recent handling rate", "events_per_second"),
    ("events_handled", "Events handled since the projection started", "events_handled"),
    ("parked_events", "Events parked in the dead-letter table", "parked"),
)


class ProjectionCollector(Collector):
    """A Prometheus collector for every projection stored in ``target``."""

    def __init__(
        self, store: EventStore, target: ProjectionTarget, *, count_limit: int = 100_000
    ) -> None:
        self.store = store
        self.target = target
        self.count_limit = count_limit

    def collect(self) -> Iterator[GaugeMetricFamily]:
        statuses = projection_status(self.store, self.target, count_limit=self.count_limit)
        labels = ["projection", "partition"]
        for metric, help_text, attribute in _GAUGES:
            family = GaugeMetricFamily(f"eskit_projection_{metric}", help_text, labels=labels)
            for s in statuses:
                family.add_metric([s.name, str(s.partition)], float(getattr(s, attribute)))
            yield family
        failing = GaugeMetricFamily(
            "eskit_projection_failing", "1 while the projection's last error is set",
            labels=labels,
        )
        for s in statuses:
            failing.add_metric([s.name, str(s.partition)], 1.0 if s.last_error else 0.0)
        yield failing
