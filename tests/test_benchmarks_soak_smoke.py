"""Smoke test of the soak benchmark: it grows a tiny store and probes it.

Nothing here looks at timings; it checks the store the probes describe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.soak import main, run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_soak_grows_the_store_and_probes_it_twice(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    probes = run(backend, 30_000, 3_000, 2, workdir=str(tmp_path), **({"dsn": dsn} if dsn else {}))
    # The first probe at 5% of the streams (150 streams of 10 events, plus the probe's
    # 2,000 command appends); the last with every stream written.
    assert [p.streams for p in probes] == [150, 3_000]
    assert [p.events for p in probes] == [1_500 + 2_000, 30_000 + 4_000]
    for p in probes:
        assert min(p.grow_per_s, p.append_per_s, p.load_per_s, p.read_all_per_s,
                   p.projection_per_s) > 0
        assert p.table_bytes_per_event > 100
        assert p.index_bytes_per_event > 10


def test_the_command_prints_the_end_to_start_ratios_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "soak.json"
    main(["--backend", "sqlite", "--events", "4000", "--streams", "400", "--probes", "2",
          "--repeat", "2", "--json", str(output)])
    assert "sqlite: end/start (medians of 2) grow" in capsys.readouterr().out
    # The first and the last point probed twice each.
    assert [p["streams"] for p in json.loads(output.read_text())] == [100, 100, 400, 400]
