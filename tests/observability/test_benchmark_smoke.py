"""benchmarks/observability.py runs (tiny sizes); it never looks at timings."""

from benchmarks.observability import MODES, run
from eskit.observability import _hooks


def test_observability_benchmark_runs_every_mode_and_leaves_tracing_off():
    figures = run(appends=3, events=500, rounds=1, synchronous="NORMAL")
    assert set(figures) == set(MODES)
    for ops in figures.values():
        assert set(ops) == {"append", "append_cpu", "read_all", "read_all_cpu"}
        assert all(v > 0 for v in ops.values())
    assert _hooks.active is None
