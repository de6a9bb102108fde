"""Store metrics: Prometheus (prometheus_client) and OpenTelemetry metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from eskit import (
    ConcurrencyError,
    DuplicateEventError,
    InMemoryEventStore,
    NewEvent,
    SQLiteEventStore,
    observability,
)
from eskit.observability.prometheus import StoreMetrics

from .conftest import Otel


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = InMemoryEventStore() if request.param == "memory" else SQLiteEventStore(
        tmp_path / "events.db"
    )
    yield s
    s.close()


def exercise(store) -> None:
    store.append("a", [NewEvent("E", {}), NewEvent("E", {})])
    store.append("b", [NewEvent("E", {})])
    with pytest.raises(ConcurrencyError):
        store.append("a", [NewEvent("E", {})], 0)
    assert len(list(store.read_all())) == 3


def test_prometheus_store_metrics_count_appends_events_conflicts_and_reads(store):
    registry = CollectorRegistry()
    observability.instrument(tracing=False, otel_metrics=False,
                             recorders=[StoreMetrics(registry)])
    try:
        exercise(store)
    finally:
        observability.uninstrument()
    store.append("c", [NewEvent("E", {})])  # not counted: no longer instrumented

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"system": store.db_system, **labels})

    assert value("eskit_store_appends_total") == 2
    assert value("eskit_store_events_appended_total") == 3
    assert value("eskit_store_append_conflicts_total") == 1
    assert value("eskit_store_events_read_total") == 3
    assert value("eskit_store_append_seconds_count") == 3  # conflicts are timed too
    assert value("eskit_store_read_all_page_seconds_count") == 1


def test_prometheus_store_metrics_count_failed_operations_by_error(store):
    registry = CollectorRegistry()
    observability.instrument(tracing=False, otel_metrics=False,
                             recorders=[StoreMetrics(registry)])
    try:
        store.append("a", [NewEvent("E", {})])
        reused = NewEvent("E", {}, event_id=store.read_stream("a")[0].event_id)
        with pytest.raises(DuplicateEventError):
            store.append("b", [reused])
    finally:
        observability.uninstrument()
    assert registry.get_sample_value("eskit_store_errors_total", {
        "system": store.db_system, "operation": "append", "error": "DuplicateEventError",
    }) == 1


def test_otel_metrics_follow_the_database_client_duration_convention(otel: Otel, store):
    exercise(store)
    durations = {
        (tuple(sorted(p.attributes.items()))): p.count
        for p in otel.points("db.client.operation.duration")
    }
    system = ("db.system.name", store.db_system)
    assert durations[(("db.operation.name", "append"), system)] == 2
    assert durations[(("db.operation.name", "append"), system,
                      ("error.type", "ConcurrencyError"))] == 1
    assert durations[(("db.operation.name", "read_all"), system)] == 1
    assert [p.value for p in otel.points("eskit.appends")] == [2]
    assert [p.value for p in otel.points("eskit.events.appended")] == [3]
    assert [p.value for p in otel.points("eskit.append.conflicts")] == [1]
    assert [p.value for p in otel.points("eskit.events.read")] == [3]
