"""Smoke test of the projection benchmark: every scenario runs and builds the same read model.

A small log, one run each; nothing here looks at timings. ``benchmarks.projections``
checks each scenario's balances against the deposits it was given (each counted once)
and raises otherwise.
"""

from __future__ import annotations

import pytest

from benchmarks import projections


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_projection_scenario_runs_and_counts_each_deposit_once(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        monkeypatch.setenv("ESKIT_TEST_POSTGRES_DSN", dsn)  # for the spawned workers
        monkeypatch.setattr(projections, "DSN", dsn)
    runs = projections.run(backend, 1_000, 1)
    assert set(runs) == {(s.name, s.partitions) for s in projections.SCENARIOS[backend]}
    assert all(len(r) == 1 and r[0].rate > 0 and r[0].cpu > 0 for r in runs.values())
