"""Smoke test of the benchmark harness (benchmarks/): it runs, and both sides agree.

Only the quick sizes and two runs per side; nothing here looks at timings. The
PostgreSQL cases use the test server (``ESKIT_TEST_POSTGRES_DSN``) and are
skipped when it is unreachable, like the other PostgreSQL tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.backends import BACKENDS, PostgresBackend
from benchmarks.scenarios import QUICK_SIZES, SCENARIOS, applies, run_scenario

CASES = [(s, b) for s in SCENARIOS for b in BACKENDS if applies(s, BACKENDS[b])]


@pytest.mark.parametrize(("scenario", "backend"), CASES)
def test_scenario_stores_the_same_events_as_the_raw_driver(
    scenario: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    target = BACKENDS[backend]
    if target.kind == "postgres":
        target = PostgresBackend(request.getfixturevalue("postgres_dsn"))
    results = run_scenario(scenario, target, tmp_path, QUICK_SIZES, repeat=2)
    assert len(results) == SCENARIOS[scenario].pairs
    for m in results:
        assert m.eskit_stored == m.raw_stored == m.events
        assert m.eskit_check == m.raw_check
        assert len(m.eskit_seconds) == len(m.raw_seconds) == 2


def test_a_postgres_scenario_gets_a_fresh_schema_and_drops_it(
    postgres_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    def exists(schema: str) -> bool:
        with psycopg.connect(postgres_dsn) as conn:
            query = "SELECT count(*) FROM pg_namespace WHERE nspname = %s"
            return conn.execute(query, (schema,)).fetchone() == (1,)

    with PostgresBackend(postgres_dsn).scenario("smoke", tmp_path) as locations:
        schema = locations("eskit-smoke")
        assert exists(schema)
    assert not exists(schema)
