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

:class:`StoreStatsCollector` exports the store's size (:func:`eskit.stats`) as gauges
``eskit_store_stats_*``, measured on scrape at most once every ``max_age`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from eskit.errors import EskitError, InvalidInputError, MissingExtraError

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional extra: say which one, not just "no module"
    raise MissingExtraError("metrics", "eskit's Prometheus metrics", name=exc.name) from exc

from eskit.maintenance.stats import DEFAULT_TOP, StoreStats, check_top, stats
from eskit.stores.base import EventStore

__all__ = ["StoreMetrics", "StoreStatsCollector"]

_log = logging.getLogger("eskit.observability")

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


_STATS_GAUGES: tuple[tuple[str, str, Callable[[StoreStats], int | None]], ...] = (
    ("events", "Events in the store", lambda s: s.events),
    ("streams", "Streams in the store", lambda s: s.streams),
    ("payload_bytes", "Data and metadata bytes of every event, as stored",
     lambda s: s.payload_bytes),
    ("storage_bytes", "Bytes on disk (PostgreSQL: event table and indexes; SQLite: file)",
     lambda s: s.storage_bytes),
    ("snapshots", "Stored snapshots", lambda s: s.snapshots),
    ("snapshot_bytes", "Bytes of the snapshots' stored state", lambda s: s.snapshot_bytes),
    ("deleted_streams", "Streams deleted, soft and hard", lambda s: s.deleted_streams),
    ("deleted_events", "Events hard deletes removed", lambda s: s.deleted_events),
    ("truncated_streams", "Streams truncation shortened", lambda s: s.truncated_streams),
    ("truncated_events", "Events truncations removed", lambda s: s.truncated_events),
    ("archived_streams", "Streams moved to an archive", lambda s: s.archived_streams),
    ("archived_events", "Events moved to an archive", lambda s: s.archived_events),
)
_CATEGORY_GAUGES: tuple[tuple[str, str], ...] = (
    ("category_events", "Events of one of the largest categories"),
    ("category_bytes", "Payload bytes of one of the largest categories"),
)


class StoreStatsCollector(Collector):
    """Gauges of ``store``'s size, re-measured on scrape at most every ``max_age`` seconds.

    Register it yourself: ``REGISTRY.register(StoreStatsCollector(store))``.
    Gauges (label ``system``): ``eskit_store_stats_events``, ``_streams``,
    ``_payload_bytes``, ``_storage_bytes``, ``_snapshots``, ``_snapshot_bytes``,
    ``_deleted_streams``, ``_deleted_events``, ``_truncated_streams``,
    ``_truncated_events``, ``_archived_streams``, ``_archived_events``
    (a figure the store does not have is left out), per category (labels
    ``system``, ``category``; the ``top`` largest) ``_category_events`` and
    ``_category_bytes``, and ``eskit_store_stats_age_seconds``, how old the
    figures are. Measuring reads the whole event table (see
    :mod:`eskit.maintenance.stats`), so ``max_age`` bounds that cost: scrapes in
    between get the cached figures. A measurement that fails is logged; the
    previous figures are served (their age shows it) and it is tried again
    after ``max_age``. Thread-safe: concurrent scrapes measure once.
    """

    def __init__(
        self, store: EventStore, *, max_age: float = 60.0, top: int = DEFAULT_TOP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (isinstance(max_age, bool) or not isinstance(max_age, int | float)
                or not 0 <= max_age < float("inf")):
            raise InvalidInputError(f"max_age must be a finite number of seconds >= 0, "
                                    f"not {max_age!r}")
        self.store = store
        self.max_age = float(max_age)
        self.top = check_top(top)
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: StoreStats | None = None
        self._measured_at: float | None = None  # of the figures served
        self._tried_at: float | None = None  # of the last attempt, failed or not

    def describe(self) -> Iterator[Metric]:
        # Registering a collector calls collect() unless it describes itself: that
        # would measure the store at start-up, so the names are given here.
        for name, help_text, _ in _STATS_GAUGES:
            yield GaugeMetricFamily(f"eskit_store_stats_{name}", help_text, labels=["system"])
        for name, help_text in _CATEGORY_GAUGES:
            yield GaugeMetricFamily(f"eskit_store_stats_{name}", help_text,
                                    labels=["system", "category"])
        yield GaugeMetricFamily("eskit_store_stats_age_seconds", "Age of the size figures",
                                labels=["system"])

    def current(self) -> StoreStats | None:
        """The figures a scrape now serves, measuring first if they are older than ``max_age``."""
        with self._lock:
            now = self._clock()
            if self._tried_at is None or now - self._tried_at >= self.max_age:
                self._tried_at = now
                try:
                    self._stats = stats(self.store, top=self.top)
                    self._measured_at = now
                except EskitError as exc:
                    _log.warning("eskit: could not measure the store's size: %s", exc)
            return self._stats

    def collect(self) -> Iterator[Metric]:
        found = self.current()
        if found is None:
            return
        system = [found.system]
        for name, help_text, value in _STATS_GAUGES:
            figure = value(found)
            if figure is not None:
                gauge = GaugeMetricFamily(f"eskit_store_stats_{name}", help_text,
                                          labels=["system"])
                gauge.add_metric(system, float(figure))
                yield gauge
        events = GaugeMetricFamily("eskit_store_stats_category_events", _CATEGORY_GAUGES[0][1],
                                   labels=["system", "category"])
        size = GaugeMetricFamily("eskit_store_stats_category_bytes", _CATEGORY_GAUGES[1][1],
                                 labels=["system", "category"])
        for category in found.largest_categories:
            events.add_metric([found.system, category.category], float(category.events))
            size.add_metric([found.system, category.category], float(category.bytes))
        yield events
        yield size
        assert self._measured_at is not None
        age = GaugeMetricFamily("eskit_store_stats_age_seconds", "Age of the size figures",
                                labels=["system"])
        age.add_metric(system, max(0.0, self._clock() - self._measured_at))
        yield age
