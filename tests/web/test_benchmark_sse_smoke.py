"""Smoke test of the SSE benchmark: it runs and counts every event; no timing is checked."""

from benchmarks.http_sse import measure


def test_the_sse_benchmark_receives_every_event() -> None:
    rates = measure(300, streams=10, repeat=1)
    assert len(rates) == 1
    assert rates[0] > 0
