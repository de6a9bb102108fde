"""Smoke test of the filtered-read benchmark: it runs, and every filtered read agrees.

A tiny log, one timed run; nothing here looks at timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.filtered_read import main, run
from eskit.projections import partition_of


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_filtered_read_scenario_runs_and_agrees(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    results = run(backend, 3_000, repeat=1, workdir=tmp_path, **({"dsn": dsn} if dsn else {}))
    assert [r.scenario for r in results] == ["unfiltered", "by type", "by category",
                                             "subscription", "partition 1/4"]
    # 1 event in 100 is Rare; batch 1 of 3 (events 1,000 to 1,999) is the audit- stream.
    quarter = sum(1_000 for s in ("load-0", "audit-1", "load-2") if partition_of(s, 4) == 0)
    assert [r.returned for r in results] == [30, 30, 1_000, 30, quarter]
    assert all(r.seconds > 0 for r in results)


def test_the_command_prints_its_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.json"
    assert main(["--events", "2000", "--repeat", "1", "--backend", "sqlite",
                 "--output", str(output)]) == 0
    assert "by type" in capsys.readouterr().out
    assert '"scenario": "by category"' in output.read_text()
