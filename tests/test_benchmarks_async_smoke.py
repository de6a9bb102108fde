"""Smoke test of ``benchmarks.async_vs_sync``: every scenario runs on both sides and reports.

Tiny sizes, one run; nothing here looks at timings. The benchmark itself checks that
each side read, projected and appended the expected number of events (it raises
otherwise), so a run that returns means both sides did the same work.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.async_vs_sync import QUICK, PostgresBackend, main, run, run_backend, table


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_scenario_runs_on_both_sides(
    backend: str, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    results = run([backend], QUICK, repeat=1, dsn=dsn, progress=lambda _: None)
    assert [r.scenario for r in results] == [
        "command x1", f"command x{QUICK.concurrency}",
        f"read_all ({QUICK.events:,})", f"projection ({QUICK.events:,})",
    ]
    for r in results:
        assert r.backend == backend
        assert len(r.sync) == len(r.async_) == 1
        assert r.sync[0] > 0
        assert r.async_[0] > 0
    assert "async/sync" in table(results)


def test_a_postgres_run_drops_its_schemas(postgres_dsn: str) -> None:
    import psycopg

    backend = PostgresBackend(postgres_dsn)
    asyncio.run(run_backend(backend, QUICK, repeat=1, progress=lambda _: None))
    with psycopg.connect(postgres_dsn) as conn:
        left = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
            ([backend.schema, backend.commands],),
        ).fetchall()
    assert left == []


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick", "--backend", "sqlite"]) == 0
    out = capsys.readouterr().out
    for word in ("async/sync", "command x1", "read_all", "projection"):
        assert word in out


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_the_tracing_benchmark_measures_every_operation_and_leaves_tracing_off(
    backend: str, request: pytest.FixtureRequest
) -> None:
    from benchmarks.observability import MODES, OPERATIONS
    from benchmarks.observability import run as run_tracing
    from benchmarks.observability import table as tracing_table
    from eskit.observability import _hooks

    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    figures = run_tracing(3, 600, 1, "NORMAL", backend=backend, loads=3, projected=600,
                          **({"dsn": dsn} if dsn else {}))
    assert set(figures) == set(MODES)
    for ops in figures.values():
        assert set(ops) == {k for op in OPERATIONS for k in (op, f"{op}_cpu")}
        assert all(v > 0 for v in ops.values())
    assert _hooks.active is None
    assert "projection" in tracing_table(figures)
