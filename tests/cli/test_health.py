"""``eskit health``: a readiness probe's table or JSON, and its exit status 0 / 1 / 2."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from eskit import SQLiteEventStore, SQLiteTarget
from eskit.projections import ProjectionRunner
from eskit.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA
from tests.cli.helpers import assert_no_traceback, eskit_cli, rows
from tests.conftest import new_schema_name
from tests.projections.helpers import Counter, added, append_visible

SECRET = "hunter2-health"


@pytest.fixture
def lagging(tmp_path):
    """A SQLite store whose projection is 3 events behind."""
    path = tmp_path / "shop.db"
    with SQLiteEventStore(path) as store, SQLiteTarget(str(path)) as target:
        store.append("a", [added(1)])
        ProjectionRunner(store, Counter(), target).run_until_caught_up()
        store.append("a", [added(1) for _ in range(3)])
    return path


def test_health_of_a_ready_store_prints_a_table_and_exits_0(lagging):
    result = eskit_cli("health", lagging)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"health of {lagging}: ok" in " ".join(result.stdout.split())
    table = {row[0]: row[1:] for row in rows(result.stdout)}
    assert table["store"][:1] == ["ok"]
    assert table["schema"][:3] == ["ok", str(SQLITE_SCHEMA), str(SQLITE_SCHEMA)]
    assert table["projection counter"][:3] == ["ok", "3", "1000"]


def test_health_of_a_lagging_projection_is_degraded_and_exits_1(lagging):
    result = eskit_cli("health", lagging, "--max-lag", "2", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "degraded"
    (projection,) = [c for c in report["checks"] if c["name"] == "projection counter"]
    assert (projection["status"], projection["figure"], projection["threshold"]) == (
        "degraded", 3, 2)
    # Without the projections, the same store is ok.
    assert eskit_cli("health", lagging, "--max-lag", "2", "--no-projections").returncode == 0


def test_health_of_a_missing_store_is_failing_and_exits_2(tmp_path):
    result = eskit_cli("health", tmp_path / "nope.db", "--json")
    assert result.returncode == 2
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert report["status"] == "failing"
    assert "does not exist" in report["checks"][0]["message"]
    assert not (tmp_path / "nope.db").exists(), "a health check creates nothing"


def test_health_of_an_unreachable_server_is_failing_without_showing_the_password():
    dsn = f"host=127.0.0.1 port=1 dbname=nothing user=ann password={SECRET}"
    for args in (["health", dsn], ["health", dsn, "--json"]):
        result = eskit_cli(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert_no_traceback(result)
        assert SECRET not in result.stdout + result.stderr
        assert "failing" in result.stdout
        assert "cannot connect to PostgreSQL" in " ".join(result.stdout.split())


def test_health_creates_no_projection_tables_where_no_projection_ran(tmp_path):
    path = tmp_path / "plain.db"
    with SQLiteEventStore(path) as store:
        store.append("a", [added(1)])
    before = path.read_bytes()
    result = eskit_cli("health", path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c["name"] for c in json.loads(result.stdout)["checks"]] == ["store", "schema"]
    assert path.read_bytes() == before, "a health check must not change the store"


def test_a_bad_threshold_is_a_usage_error_exit_2(lagging):
    result = eskit_cli("health", lagging, "--max-lag", "-1")
    assert result.returncode == 2
    assert_no_traceback(result)


def test_health_on_postgres_from_eskit_dsn_is_degraded_by_an_open_append(postgres_dsn):
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    dsn = make_conninfo(postgres_dsn, password=SECRET)  # trust auth ignores it
    env = {"ESKIT_DSN": dsn}
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        append_visible(store, "a", [added(1)])
        ready = eskit_cli("health", "--schema", schema, "--json", env=env)
        assert ready.returncode == 0, ready.stdout + ready.stderr
        names = [c["name"] for c in json.loads(ready.stdout)["checks"]]
        assert names == ["store", "schema", "transactions"]  # no projection ever ran
        with psycopg.connect(postgres_dsn) as conn:  # and none was created by the check
            assert conn.execute("SELECT to_regclass(%s)",
                                (f'"{schema}".eskit_projections',)).fetchone() == (None,)
        with psycopg.connect(postgres_dsn) as appending:
            appending.execute(
                f'INSERT INTO "{schema}".eskit_events (event_id, stream_id, version,'
                " event_type, schema_version, recorded_at, data, metadata)"
                " VALUES (gen_random_uuid(), 'slow', 1, 'Slow', 1, now(), '{}', '{}')"
            )
            time.sleep(0.2)
            held = eskit_cli("health", "--schema", schema, "--max-transaction-age", "0.1",
                             env=env)
            appending.rollback()
    assert held.returncode == 1, held.stdout + held.stderr
    assert SECRET not in held.stdout + held.stderr
    table = {row[0]: row[1:] for row in rows(held.stdout)}
    assert table["transactions"][0] == "degraded"
    assert table["transactions"][2] == "0.1"


def test_health_of_a_postgres_schema_without_eskit_tables_is_failing(postgres_dsn):
    result = eskit_cli("health", postgres_dsn, "--schema", new_schema_name(), "--json")
    assert result.returncode == 2
    assert "holds no eskit store" in json.loads(result.stdout)["checks"][0]["message"]
