"""The trace context spliced into encoded metadata is exactly what encoding it would give.

eskit.observability.otel._inject adds the carrier's members to each event's already
encoded metadata instead of encoding the merged dict again (the per-event cost of a
traced append). These tests pin that the bytes are codec.encode's own, for every shape
of metadata, and that the shapes the codec encodes tagged take the encoding path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from eskit import InMemoryEventStore, NewEvent, codec
from eskit.observability import TRACEPARENT_KEY, TRACESTATE_KEY
from eskit.observability.otel import _inject
from eskit.stores.arguments import prepare_batch

METADATA: list[dict[Any, Any]] = [
    {},
    {"correlation_id": "c-1"},
    {"user": "ännä ✓", "n": 2**70, "when": datetime(2026, 1, 2, tzinfo=UTC)},
    {"amount": Decimal("1.10"), "nested": {"a": [1, (2, 3)], "__eskit__": "x"}},
    {"__eskit__": "looks like a tag"},  # encoded as a tagged dict
    {1: "not a str key"},  # encoded as a tagged map
    {TRACESTATE_KEY: "caller=1"},  # replaced by the span's tracestate
    {TRACESTATE_KEY: "caller=1", "z": None},
]


def _span(state: TraceState | None) -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
        is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=state,
    ))


@pytest.mark.parametrize(
    "state", [None, TraceState([("vendor", "v1")]), TraceState([("vendor", 'a"b\\c')])]
)
@pytest.mark.parametrize("metadata", METADATA, ids=range(len(METADATA)))
def test_spliced_metadata_is_the_codecs_encoding_of_the_merged_dict(
    metadata: dict[Any, Any], state: TraceState | None
) -> None:
    store = InMemoryEventStore()
    batch = prepare_batch("s", [NewEvent("E", {"x": 1}, metadata=metadata)],
                          registry=store.registry, max_event_bytes=store.max_event_bytes)
    _inject(store, batch, _span(state))
    carrier = {TRACEPARENT_KEY: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    if state is not None:
        carrier[TRACESTATE_KEY] = state.to_header()
        assert carrier[TRACESTATE_KEY]  # the state was valid, so it is carried
    merged = {**metadata, **carrier}
    (p,) = batch
    assert p.metadata_dict == merged
    assert p.metadata == codec.encode(merged)
    assert codec.decode(p.metadata) == merged


def test_a_batch_gets_one_context_and_the_callers_own_is_kept() -> None:
    store = InMemoryEventStore()
    own = {TRACEPARENT_KEY: "00-11111111111111111111111111111111-2222222222222222-01"}
    events = [NewEvent("E", {"i": i}, metadata={"i": i}) for i in range(3)]
    events.append(NewEvent("E", {}, metadata=own, event_id=UUID(int=7)))
    batch = prepare_batch("s", events, registry=store.registry,
                          max_event_bytes=store.max_event_bytes)
    _inject(store, batch, _span(None))
    parents = {p.metadata_dict[TRACEPARENT_KEY] for p in batch[:3]}
    assert len(parents) == 1
    assert batch[3].metadata_dict == own
    assert batch[3].metadata == codec.encode(own)
    for p in batch:
        assert codec.decode(p.metadata) == p.metadata_dict


def test_a_recording_sdk_span_splices_too() -> None:
    store = InMemoryEventStore()
    span = TracerProvider().get_tracer("t").start_span("x")
    batch = prepare_batch("s", [NewEvent("E", {}, metadata={"k": "v"})],
                          registry=store.registry, max_event_bytes=store.max_event_bytes)
    _inject(store, batch, span)
    span.end()
    (p,) = batch
    assert p.metadata == codec.encode(p.metadata_dict)
    assert list(p.metadata_dict) == ["k", TRACEPARENT_KEY]
