"""With observability on, each published batch is one PRODUCER span."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.trace import SpanKind

from eskit import NewEvent, SQLiteEventStore
from eskit.bus.memory import MemoryBroker, MemorySink
from eskit.bus.relay import Relay
from tests.bus.conftest import unique_name
from tests.observability.conftest import Otel, otel  # noqa: F401 - the fixture


def test_each_batch_is_one_publish_span(otel: Otel, tmp_path: Path) -> None:  # noqa: F811
    store = SQLiteEventStore(tmp_path / "events.db")
    with otel.tracer.start_as_current_span("request") as request:
        store.append("account-1", [NewEvent("Deposited", {"n": n}) for n in range(5)])
    name = unique_name("traced")
    sink = MemorySink(name)
    try:
        Relay(store, sink, name="r", batch_size=2).run_sync(until_caught_up=True)
    finally:
        MemoryBroker.forget(name)
    spans = otel.spans(f"publish memory://{name}")
    assert len(spans) == 3  # 2 + 2 + 1
    assert all(s.kind is SpanKind.PRODUCER for s in spans)
    assert spans[0].attributes["messaging.destination.name"] == f"memory://{name}"
    # Linked to the append that wrote the batch's first event.
    assert spans[0].links[0].context.trace_id == request.get_span_context().trace_id
