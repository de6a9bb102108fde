"""Smoke test of the snapshot benchmarks: they run, and loads with and without snapshots agree.

Quick sizes, one timed run; nothing here looks at timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.snapshots import QUICK, main, run


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_every_snapshot_scenario_runs_and_agrees(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        request.getfixturevalue("postgres_dsn")  # skips (or fails in CI) when down
    results = run(backend, QUICK, repeat=1, workdir=tmp_path, budget=0.001)
    assert len(results) == 7
    assert [r.replayed for r in results] == [10, 310, 10, 255, 55, 255, 55]
    assert all(r.seconds and r.ms > 0 for r in results)


def test_the_command_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    assert main(["--quick", "--repeat", "1", "--backend", "memory", "--output", str(output)]) == 0
    assert '"median_ms"' in output.read_text()
