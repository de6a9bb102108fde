"""Store metrics for Prometheus (``pip install 'eskit[metrics]'``).

:class:`StoreMetrics` registers, on the registry you give it, labelled by ``system``
(the store's ``db.system.name``: ``sqlite``, ``postgresql``, ``memory``):

* counters ``eskit_store_appends_total`` (appends that stored their batch),
  ``eskit_store_events_appended_total``, ``eskit_store_append_conflicts_total``
  (:class:`~eskit.errors.ConcurrencyError`), ``eskit_store_events_read_total``
  (read_all throughput: ``rate()`` of it is events read per second) and
  ``eskit_store_errors_total`` (by ``operation`` and ``error``);
* histograms ``eskit_store_append_seconds``, ``eskit_store_load_seconds`` (a
  repository load, snapshot and replay included) and ``eskit_store_read_all_page_seconds``.

Pass it to :func:`eskit.observability.instrument` (``recorders=[metrics]``). The
projection gauges are :class:`eskit.projections.metrics.ProjectionCollector`.
"""

from __future__ import annotations

from eskit.errors import MissingExtraError

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("metrics", "eskit's Prometheus metrics", name=exc.name) from exc

__all__ = ["StoreMetrics"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StoreMetrics:
    """Prometheus counters and latency histograms of every instrumented store."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("system",)) -> Counter:
            return Counter(f"eskit_store_{name}", doc, labels, registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(
                f"eskit_store_{name}_seconds", doc, ("system",), buckets=_BUCKETS,
                registry=registry,
            )

        self.appends = counter("appends", "Appends that stored their batch")
        self.events_appended = counter("events_appended", "Events appended")
        self.conflicts = counter(
            "append_conflicts", "Appends refused because the stream had moved"
        )
        self.events_read = counter("events_read", "Events read by read_all")
        self.errors = counter(
            "errors", "Failed store operations", ("system", "operation", "error")
        )
        self.append_seconds = histogram("append", "Append latency")
        self.load_seconds = histogram("load", "Repository load latency")
        self.read_page_seconds = histogram("read_all_page", "Latency of one read_all page")

    def appended(self, system: str, events: int, seconds: float) -> None:
        self.appends.labels(system).inc()
        self.events_appended.labels(system).inc(events)
        self.append_seconds.labels(system).observe(seconds)

    def conflicted(self, system: str, seconds: float) -> None:
        self.conflicts.labels(system).inc()
        self.append_seconds.labels(system).observe(seconds)

    def failed(self, system: str, operation: str, error: str, seconds: float) -> None:
        self.errors.labels(system, operation, error).inc()

    def loaded(self, system: str, events: int, seconds: float) -> None:
        self.load_seconds.labels(system).observe(seconds)

    def read_page(self, system: str, events: int, seconds: float) -> None:
        self.events_read.labels(system).inc(events)
        self.read_page_seconds.labels(system).observe(seconds)
