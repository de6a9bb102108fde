"""Where the CLI finds its store, and that it never prints a DSN's password."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import eskit
from eskit.cli._common import redact
from tests.cli.helpers import assert_no_traceback, eskit_cli, rows

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://ann:s3cr3t-pw@db.example:5432/shop",
         "host=db.example port=5432 dbname=shop user=ann password=***"),
        ("postgres://ann@db.example/shop?password=s3cr3t-pw&sslmode=require",
         "host=db.example dbname=shop user=ann password=*** sslmode=require"),
        ("host=db.example dbname=shop user=ann password=s3cr3t-pw",
         "host=db.example dbname=shop user=ann password=***"),
        ("host=db.example password='s3cr3t pw' dbname=shop",
         "host=db.example password=*** dbname=shop"),
        ("postgresql://ann@db.example/shop", "postgresql://ann@db.example/shop"),
        ("host=db.example dbname=shop", "host=db.example dbname=shop"),
        ("shop.db", "shop.db"),
    ],
)
def test_redact_hides_the_password_of_url_and_keyword_dsns_and_leaves_files_alone(dsn, shown):
    if "***" in shown:  # rewritten in keyword form, in psycopg's order of keywords
        assert conninfo_to_dict(redact(dsn)) == conninfo_to_dict(shown)
    else:
        assert redact(dsn) == shown
    assert "s3cr3t" not in redact(dsn)


def test_a_dsn_that_cannot_be_parsed_is_still_shown_without_its_password():
    assert "s3cr3t" not in redact("host=db.example password=s3cr3t-pw dbname")


def _with_password(dsn):
    return make_conninfo(dsn, password=SECRET)


def _as_url(params):
    return (f"postgresql://{params['user']}:{SECRET}@{params.get('host', '127.0.0.1')}:"
            f"{params.get('port', 5432)}/{params['dbname']}")


@pytest.fixture
def pg_store(postgres_dsn):
    from eskit.stores.postgres import PostgresEventStore
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("acc-1", [eskit.NewEvent("Opened", {"limit": 5}),
                               eskit.NewEvent("Raised", {"limit": 9})], 0)
    return schema


def test_no_command_prints_the_password_of_the_dsn_it_was_given(postgres_dsn, pg_store):
    schema = pg_store
    for dsn in (_with_password(postgres_dsn), _as_url(conninfo_to_dict(postgres_dsn))):
        for args in (
            ["streams", dsn], ["events", dsn, "acc-1"], ["state", dsn, "acc-1"],
            ["diff", dsn, "acc-1", "1", "2"], ["upcast-check", dsn],
            ["projections", "status", dsn], ["migrate", dsn],
            ["events", dsn, "no-such-stream"],  # an error message naming the store
        ):
            result = eskit_cli(*args, "--schema", schema)
            assert result.returncode in (0, 2, 4), (args, result.stderr)
            output = result.stdout + result.stderr
            assert SECRET not in output, (args, output)
            assert_no_traceback(result)
        listed = eskit_cli("streams", dsn, "--schema", schema)
        assert "password=***" in " ".join(listed.stdout.split())


@pytest.mark.parametrize(
    "dsn",
    [f"postgresql://ann:{SECRET}@127.0.0.1:1/nothing",
     f"host=127.0.0.1 port=1 dbname=nothing user=ann password={SECRET}",
     f"host=127.0.0.1 port=1 password={SECRET} dbname"],  # malformed: psycopg quotes it back
)
def test_a_failed_connection_reports_one_line_without_the_password(dsn):
    result = eskit_cli("streams", dsn)
    assert result.returncode == 2
    assert SECRET not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)


def test_a_libpq_keyword_dsn_opens_a_postgres_store(postgres_dsn, pg_store):
    keywords = " ".join(f"{k}={v}" for k, v in conninfo_to_dict(postgres_dsn).items())
    result = eskit_cli("streams", keywords, "--schema", pg_store)
    assert result.returncode == 0, result.stderr
    assert [r[:2] for r in rows(result.stdout) if r[0] == "acc-1"] == [["acc-1", "2"]]


def test_the_store_can_come_from_eskit_dsn_instead_of_the_command_line(tmp_path, postgres_dsn,
                                                                       pg_store):
    env = {"ESKIT_DSN": _with_password(postgres_dsn)}
    listed = eskit_cli("streams", "--schema", pg_store, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r[0] for r in rows(listed.stdout)] == ["acc-1"]
    shown = eskit_cli("events", "acc-1", "--schema", pg_store, env=env)
    assert shown.returncode == 0, shown.stderr
    assert [r[2] for r in rows(shown.stdout) if r[0].isdigit()] == ["Opened", "Raised"]
    changed = eskit_cli("diff", "acc-1", "1", "2", "--schema", pg_store, env=env)
    assert [r[:4] for r in rows(changed.stdout) if r[0] == "limit"] == [
        ["limit", "changed", "5", "9"]]
    assert SECRET not in listed.stdout + shown.stdout + changed.stdout


def test_a_store_named_on_the_command_line_wins_over_eskit_dsn(tmp_path):
    path = tmp_path / "shop.db"
    with eskit.SQLiteEventStore(path) as store:
        store.append("order-1", [eskit.NewEvent("OrderPlaced")])
    env = {"ESKIT_DSN": str(tmp_path / "elsewhere.db")}
    assert eskit_cli("events", path, "order-1", env=env).returncode == 0
    from_env = eskit_cli("events", "order-1", env=env)
    assert from_env.returncode == 2
    assert "elsewhere.db" in from_env.stderr  # it did read ESKIT_DSN


def test_without_eskit_dsn_a_missing_store_is_a_usage_error():
    result = eskit_cli("streams", env={"ESKIT_DSN": None})
    assert result.returncode == 2
    assert "Missing argument" in result.stderr
