"""``python -m benchmarks.observability``: the cost of tracing on SQLite appends and read_all.

Three modes, interleaved round by round in one process so that they share the
machine's state: ``off`` (never instrumented: the hooks read one attribute),
``noop`` (instrumented with OpenTelemetry's no-op provider, what an application
gets with the API but no SDK) and ``sdk`` (the SDK recording every span, sampled always, through a
BatchSpanProcessor, as in production, into an exporter that drops them: the cost of
a recorded span and of writing the trace context into each event).
Metrics are off in every mode: this measures tracing. The figure per mode is its
best round (on a shared machine noise only ever slows a round down); the overhead
is relative to ``off``. The appending stores use the default durability
(``synchronous=FULL``) unless ``--synchronous NORMAL``.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

from eskit import NewEvent, SQLiteEventStore, observability

MODES = ("off", "noop", "sdk")


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _set_mode(mode: str, sdk: TracerProvider) -> None:
    if mode == "off":
        observability.uninstrument()
    else:
        provider = sdk if mode == "sdk" else NoOpTracerProvider()
        observability.instrument(tracer_provider=provider, otel_metrics=False)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()`` (CPU time: what other processes' load
    does not add, so the overhead shows through a busy machine's noise)."""
    gc.collect()  # a collection triggered by the previous mode's garbage is not this one's
    started, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - started, time.thread_time() - cpu


def _append_all(store: SQLiteEventStore, prefix: str, appends: int) -> None:
    for i in range(appends):
        store.append(f"{prefix}-{i}", [NewEvent("E", {"n": i})])


def run(
    appends: int, events: int, rounds: int, synchronous: str = "FULL"
) -> dict[str, dict[str, float]]:
    """Per mode: appends (of one event) and events read per second, of wall and CPU time."""
    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(_Drop()))
    keys = ("append", "append_cpu", "read_all", "read_all_cpu")
    results: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in MODES}
    with tempfile.TemporaryDirectory() as folder:
        reader = SQLiteEventStore(Path(folder) / "read.db")
        for i in range(0, events, 500):
            reader.append(f"s-{i}", [NewEvent("E", {"n": n}) for n in range(500)])
        # One writing store per mode, opened and warmed up front; the order of the
        # modes rotates each round, so neither drift nor order favours one of them.
        writers = {
            m: SQLiteEventStore(Path(folder) / f"{m}.db", synchronous=synchronous)  # type: ignore[arg-type]
            for m in MODES
        }
        for store in writers.values():
            _append_all(store, "warm-up", 20)
        for r in range(rounds):
            for mode in MODES[r % 3:] + MODES[:r % 3]:
                _set_mode(mode, sdk)
                store = writers[mode]
                wall, cpu = _timed(lambda s=store, p=f"r{r}": _append_all(s, p, appends))
                results[mode]["append"].append(appends / wall)
                results[mode]["append_cpu"].append(appends / cpu)
                wall, cpu = _timed(lambda: sum(1 for _ in reader.read_all()))
                results[mode]["read_all"].append(events / wall)
                results[mode]["read_all_cpu"].append(events / cpu)
        for store in (*writers.values(), reader):
            store.close()
    observability.uninstrument()
    sdk.shutdown()
    return {m: {k: max(v) for k, v in ops.items()} for m, ops in results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability")
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--synchronous", choices=("FULL", "NORMAL"), default="FULL",
        help="the appending stores' durability (NORMAL: no fsync per append, so the "
             "tracing overhead shows more)",
    )
    args = parser.parse_args(argv)
    figures = run(args.appends, args.events, args.rounds, args.synchronous)
    print(f"SQLite, synchronous={args.synchronous}, {args.appends} appends of one event per round, "
          f"read_all of {args.events} events, best of {args.rounds} rounds")
    base = figures["off"]
    print(f"{'mode':<6} {'append/s':>9} {'vs off':>7} {'CPU':>7} {'read_all ev/s':>14} "
          f"{'vs off':>7} {'CPU':>7}")
    for mode in MODES:
        f = figures[mode]
        cells = [f"{mode:<6}"]
        for op, width in (("append", 9), ("read_all", 14)):
            cells.append(f"{f[op]:>{width}.0f}")
            cells.append(f"{f[op] / base[op] - 1:>+7.1%}")
            cells.append(f"{f[op + '_cpu'] / base[op + '_cpu'] - 1:>+7.1%}")
        print(" ".join(cells))
    print("vs off: throughput change of wall-clock time; CPU: of this thread's CPU time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
