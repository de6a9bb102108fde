"""Smoke test of the hash-chain benchmark: both modes append and read; no timing asserts."""

from __future__ import annotations

import pytest

from benchmarks.chain import OPERATIONS, cost, run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_both_modes_run_every_operation(backend: str, request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    result = run(20, 200, 1, backend=backend, **({"dsn": dsn} if dsn else {}))
    for mode in ("chained", "unchained"):
        assert all(result[mode][op] > 0 for op in OPERATIONS), result
        assert all(result[mode][f"{op}_cpu"] > 0 for op in OPERATIONS), result
    assert set(cost(result)) == set(result["chained"])
