"""Smoke test of the benchmark harness (benchmarks/): it runs, and both sides agree.

Only the quick sizes and one run per side; nothing here looks at timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.sqlite_scenarios import BACKENDS, QUICK_SIZES, SCENARIOS, run_scenario


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_stores_the_same_events_as_raw_sqlite(
    scenario: str, backend: str, tmp_path: Path
) -> None:
    m = run_scenario(scenario, backend, tmp_path, QUICK_SIZES, repeat=1)
    expected = SCENARIOS[scenario].events(QUICK_SIZES)
    assert m.eskit_stored == m.raw_stored == expected
    assert m.eskit_check == m.raw_check
    assert len(m.eskit_seconds) == len(m.raw_seconds) == 1
