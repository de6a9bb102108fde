"""Smoke test of the protection benchmark: every mode runs on both backends, counts every
event, and checks plaintext never reached the store. Tiny sizes; no timing asserts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.protection import MODES, QUICK, main, run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_mode_runs(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        request.getfixturevalue("postgres_dsn")  # fails under CI=true when down
    results = run([backend], QUICK, repeat=1)
    assert [r.mode for r in results] == list(MODES)
    assert {r.events for r in results} == {QUICK.events}
    assert all(r.append_per_s > 0 and r.read_all_per_s > 0 and r.load_per_s > 0
               for r in results)


def test_the_command_prints_the_table_and_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.json"
    assert main(["--quick", "--repeat", "1", "--backend", "sqlite", "--json", str(out)]) == 0
    assert "| sqlite | fields+payload |" in capsys.readouterr().out
    assert [r["mode"] for r in json.loads(out.read_text())] == list(MODES)


def test_the_instruction_counter_s_worker_runs_without_valgrind() -> None:
    from benchmarks.protection_ic import main as ic_main

    assert ic_main(["--work", "fields", "read", "1", "20"]) == 0
    assert ic_main(["--work", "plain", "append", "2", "20"]) == 0
