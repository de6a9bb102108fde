"""Tracing and metrics for eskit's stores, repositories, projections and process managers.

Nothing is observed until :func:`instrument` is called; until then each hooked call
(append, a ``read_all`` page, a repository load, a projection batch, a process-manager
step) costs one attribute read. ``instrument()`` with no arguments turns on
OpenTelemetry tracing and metrics through the global providers (``eskit[otel]``,
the API only: without an SDK they are OpenTelemetry's no-ops); Prometheus store
metrics are :class:`eskit.observability.prometheus.StoreMetrics` (``eskit[metrics]``),
passed in ``recorders``. See docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eskit.observability import _hooks
from eskit.observability._hooks import Observer, Recorder

__all__ = ["TRACEPARENT_KEY", "TRACESTATE_KEY", "Recorder", "instrument", "uninstrument"]

TRACEPARENT_KEY = "traceparent"
"""The event metadata key of the W3C ``traceparent`` written at append (see :mod:`.otel`)."""
TRACESTATE_KEY = "tracestate"
"""The event metadata key of the W3C ``tracestate``, when the append's context has one."""


def instrument(
    *,
    tracing: bool = True,
    otel_metrics: bool = True,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    recorders: Sequence[Recorder] = (),
) -> None:
    """Observe every store in this process from now on (replacing an earlier call).

    ``tracing``: OpenTelemetry spans, and the append's trace context in each event's
    metadata; ``otel_metrics``: store metrics through OpenTelemetry's metrics API;
    the providers default to the global ones. ``recorders`` adds other metric sinks
    (:class:`~eskit.observability.prometheus.StoreMetrics`). Raises
    :class:`~eskit.errors.MissingExtraError` if OpenTelemetry is asked for and
    ``eskit[otel]`` is not installed. Not guaranteed: spans of calls already running.
    """
    sinks: list[Recorder] = list(recorders)
    traces = None
    if tracing or otel_metrics:
        from eskit.observability import otel

        if tracing:
            traces = otel.OtelTracing(tracer_provider)
        if otel_metrics:
            sinks.append(otel.OtelMetrics(meter_provider))
    _hooks.active = Observer(traces, sinks) if traces is not None or sinks else None


def uninstrument() -> None:
    """Stop observing: the hooks go back to costing one attribute read."""
    _hooks.active = None
