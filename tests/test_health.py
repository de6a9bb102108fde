"""Readiness checks (eskit.health): ok, degraded or failing, with figures and thresholds."""

import asyncio
import json
import sqlite3
import time

import psycopg
import pytest

from eskit import (
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    SQLiteTarget,
    check_health,
)
from eskit.aio import AsyncSQLiteEventStore
from eskit.health import HealthCheck, HealthReport, check_health_async
from eskit.projections import ProjectionFailed, ProjectionRunner, RetryPolicy
from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from eskit.stores.sqlite import SCHEMA_VERSION
from tests.conftest import new_schema_name
from tests.projections.helpers import Counter, added, append_visible


def _by_name(report: HealthReport) -> dict[str, HealthCheck]:
    return {check.name: check for check in report.checks}


@pytest.fixture
def sqlite(tmp_path):
    store = SQLiteEventStore(tmp_path / "events.db")
    target = SQLiteTarget(store.path)
    yield store, target
    target.close()
    store.close()


def test_a_healthy_store_is_ok_and_the_report_is_json(sqlite) -> None:
    store, target = sqlite
    store.append("a", [added(1)])
    ProjectionRunner(store, Counter(), target).run_until_caught_up()
    report = check_health(store, projections=target)
    assert report.status == "ok"
    assert report.ok
    checks = _by_name(report)
    assert 0 <= checks["store"].figure < 5  # seconds to read the head
    assert (checks["schema"].figure, checks["schema"].threshold) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert (checks["projection counter"].status, checks["projection counter"].figure) == ("ok", 0)
    assert "transactions" not in checks  # SQLite has no long appending transactions
    document = json.loads(json.dumps(report.to_dict()))
    assert document["status"] == "ok"
    assert [c["name"] for c in document["checks"]] == ["store", "schema", "projection counter"]


def test_a_projection_more_than_max_lag_behind_is_degraded(sqlite) -> None:
    store, target = sqlite
    store.append("a", [added(1)])
    ProjectionRunner(store, Counter(), target).run_until_caught_up()
    store.append("a", [added(1) for _ in range(5)])
    within = _by_name(check_health(store, projections=target, max_lag=5))["projection counter"]
    assert (within.status, within.figure, within.threshold) == ("ok", 5, 5)
    report = check_health(store, projections=target, max_lag=3)
    lagging = _by_name(report)["projection counter"]
    assert report.status == "degraded"
    assert (lagging.status, lagging.figure) == ("degraded", 4)  # counted up to max_lag + 1
    assert "more than 3 events behind" in lagging.message


def test_a_projection_failing_on_an_event_is_degraded_even_within_max_lag(sqlite) -> None:
    store, target = sqlite
    store.append("a", [added(1), NewEvent("Poison")])
    with pytest.raises(ProjectionFailed):
        ProjectionRunner(store, Counter(), target,
                         retry=RetryPolicy(max_attempts=1, backoff=0.001)).run_until_caught_up()
    check = _by_name(check_health(store, projections=target))["projection counter"]
    assert check.status == "degraded"
    assert "failing:" in check.message


def test_a_store_with_migrations_pending_is_degraded(tmp_path) -> None:
    path = tmp_path / "old.db"
    SQLiteEventStore(path).close()
    with sqlite3.connect(path) as raw:  # back to schema version 1 (before snapshots)
        raw.execute("DROP TABLE eskit_snapshots")
        raw.execute("UPDATE eskit_meta SET value = '1' WHERE key = 'schema_version'")
    with SQLiteEventStore(path, create=False) as store:
        check = _by_name(check_health(store))["schema"]
    assert (check.status, check.figure, check.threshold) == ("degraded", 1, SCHEMA_VERSION)
    assert f"{SCHEMA_VERSION - 1} migrations pending" in check.message


def test_an_unreadable_store_is_failing_and_nothing_else_is_checked(tmp_path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.close()
    report = check_health(store)
    assert report.status == "failing"
    assert [(c.name, c.status) for c in report.checks] == [("store", "failing")]
    assert "closed" in report.checks[0].message


def test_an_unreadable_async_store_is_failing_too(tmp_path) -> None:
    async def run() -> HealthReport:
        store = await AsyncSQLiteEventStore.open(tmp_path / "events.db")
        await store.close()
        return await check_health_async(store)

    report = asyncio.run(run())
    assert [(c.name, c.status) for c in report.checks] == [("store", "failing")]


def test_an_in_memory_store_has_no_schema_to_check() -> None:
    report = check_health(InMemoryEventStore())
    assert [c.name for c in report.checks] == ["store"]
    assert report.ok


@pytest.mark.parametrize(("option", "value"), [
    ("max_lag", -1), ("max_lag", 1.5), ("max_lag", True),
    ("max_transaction_age", 0), ("max_transaction_age", float("nan")),
    ("max_transaction_age", float("inf")), ("max_transaction_age", "60"),
])
def test_bad_thresholds_are_refused_before_any_io(option, value) -> None:
    class Untouchable(InMemoryEventStore):
        def head_position(self) -> int:
            raise AssertionError("I/O before validation")

    with pytest.raises(InvalidInputError, match=option):
        check_health(Untouchable(), **{option: value})
    with pytest.raises(InvalidInputError, match=option):
        asyncio.run(check_health_async(None, **{option: value}))  # type: ignore[arg-type]


def test_the_async_check_reports_the_same_as_the_sync_one(sqlite) -> None:
    store, target = sqlite
    store.append("a", [added(1)])
    ProjectionRunner(store, Counter(), target).run_until_caught_up()
    store.append("a", [added(1) for _ in range(3)])
    sync = check_health(store, projections=target, max_lag=2)
    async_store = AsyncSQLiteEventStore.from_sync(store)
    async_report = asyncio.run(check_health_async(async_store, projections=target, max_lag=2))
    assert async_report.checks[1:] == sync.checks[1:]  # all but the time the read took
    assert sync.status == "degraded"


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres(postgres_dsn):
    from eskit import PostgresTarget
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        target = PostgresTarget(postgres_dsn, schema=schema)
        try:
            yield store, target
        finally:
            target.close()


def _open_append(store, conn) -> None:
    """An append left open in ``conn``: it holds readers back until it ends."""
    conn.execute(
        f'INSERT INTO "{store.schema}".eskit_events (event_id, stream_id, version, event_type,'
        " schema_version, recorded_at, data, metadata)"
        " VALUES (gen_random_uuid(), 'slow', 1, 'Slow', 1, now(), '{}', '{}')"
    )


def test_postgres_lagging_projection_and_open_append_are_degraded(
    postgres, postgres_dsn
) -> None:
    store, target = postgres
    append_visible(store, "a", [added(1)])
    ProjectionRunner(store, Counter(), target).run_until_caught_up()
    append_visible(store, "a", [added(1), added(1)])
    report = check_health(store, projections=target, max_lag=1)
    checks = _by_name(report)
    assert (checks["schema"].status, checks["schema"].figure) == ("ok", POSTGRES_SCHEMA_VERSION)
    assert checks["projection counter"].status == "degraded"
    assert checks["transactions"].status == "ok"
    # JSON numbers: no figure is a position (about 2**64 times a transaction id here).
    figures = [c["figure"] for c in json.loads(json.dumps(report.to_dict()))["checks"]]
    assert all(f is None or abs(f) < 2**53 for f in figures)
    with psycopg.connect(postgres_dsn) as appending:
        _open_append(store, appending)
        time.sleep(0.2)
        report = check_health(store, max_transaction_age=0.1)
        held = _by_name(report)["transactions"]
        assert report.status == "degraded"
        assert (held.status, held.threshold) == ("degraded", 0.1)
        assert held.figure >= 0.2
        assert "idle_in_transaction_session_timeout" in held.message
        assert asyncio.run(_async_transactions(postgres_dsn, store.schema)).status == "degraded"
        appending.rollback()
    assert _by_name(check_health(store, max_transaction_age=0.1))["transactions"].status == "ok"


async def _async_transactions(dsn: str, schema: str) -> HealthCheck:
    from eskit.aio import AsyncPostgresEventStore

    async with AsyncPostgresEventStore(dsn, schema=schema) as store:
        report = await check_health_async(store, max_transaction_age=0.1)
    assert _by_name(report)["schema"].status == "ok"
    return _by_name(report)["transactions"]


def test_postgres_without_pg_read_all_stats_is_degraded_with_the_grant_named(
    postgres, postgres_dsn
) -> None:
    import uuid

    from psycopg.conninfo import make_conninfo

    from eskit.stores.postgres import PostgresEventStore

    store, _ = postgres
    role = f"eskit_test_role_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA "{store.schema}" TO "{role}"')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{store.schema}" TO "{role}"')
        try:
            limited = PostgresEventStore(make_conninfo(postgres_dsn, user=role),
                                         schema=store.schema, setup=False)
            try:
                with psycopg.connect(postgres_dsn) as holder:
                    _open_append(store, holder)
                    report = check_health(limited)
                    holder.rollback()
            finally:
                limited.close()
        finally:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
    check = _by_name(report)["transactions"]
    assert (report.status, check.status, check.figure) == ("degraded", "degraded", None)
    assert "pg_read_all_stats" in check.message


def test_postgres_store_whose_server_is_gone_is_failing(postgres_dsn) -> None:
    from eskit.stores.postgres import PostgresEventStore

    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    store.close()  # its pool is gone: every read fails, as with the server down
    report = check_health(store)
    assert report.status == "failing"
    assert [c.name for c in report.checks] == ["store"]
