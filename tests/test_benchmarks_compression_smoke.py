"""Smoke test of the compression benchmark: it runs, counts every event, and on the
order workload compression shrinks what is stored. Tiny sizes; no timing asserts."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.compression import QUICK, main, order_payload, run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_both_workloads_run_on_and_off(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        request.getfixturevalue("postgres_dsn")  # fails under CI=true when down
    results = run(backend, QUICK, repeat=1, workdir=tmp_path)
    assert [(r.workload, r.compression) for r in results] == [
        ("bank", "off"), ("bank", "on"), ("orders", "off"), ("orders", "on")
    ]
    assert [r.events for r in results] == [200, 200, 60, 60]
    bank_off, bank_on, orders_off, orders_on = results
    # Small events stay below the threshold: stored alike.
    assert bank_on.payload_bytes_per_event == bank_off.payload_bytes_per_event
    assert orders_on.payload_bytes_per_event < orders_off.payload_bytes_per_event
    assert all(r.read_all_per_s > 0 and r.load_per_s > 0 for r in results)


def test_an_order_is_about_4_kb_of_json() -> None:
    import random

    from eskit import codec

    sizes = [len(codec.encode(order_payload(random.Random(n), n))) for n in range(20)]
    assert all(3000 < s < 5500 for s in sizes)


def test_the_command_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    assert main(["--quick", "--repeat", "1", "--backend", "sqlite", "--output", str(output)]) == 0
    assert '"bytes_per_event"' in output.read_text()
