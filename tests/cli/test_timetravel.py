"""``eskit state`` and ``eskit diff``: a stream's state at a version or a time."""

from __future__ import annotations

import pytest

import eskit
from tests.cli.helpers import assert_no_traceback, eskit_cli, rows


@pytest.fixture
def timeline_db(tmp_path):
    """A stream 'order-7' of 4 events, a minute apart from 2025-03-01 09:00 UTC."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    path = tmp_path / "orders.db"
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    events = [
        ("OrderPlaced", {"customer": "zoë", "total": Decimal("10.00"), "status": "new"}),
        ("LineAdded", {"sku": "pen", "total": Decimal("12.50")}),
        ("OrderPaid", {"status": "paid", "paid_by": "card"}),
        ("LineAdded", {"sku": "ink", "total": Decimal("15.00")}),
    ]
    with eskit.SQLiteEventStore(path) as store:
        store.append("order-7", [
            eskit.NewEvent(kind, data, timestamp=t0 + timedelta(minutes=i))
            for i, (kind, data) in enumerate(events)
        ], 0)
    return path


def _cells(result):
    """{field: [value, set at version, by event]} of a `state` table."""
    return {r[0]: r[1:] for r in rows(result.stdout) if r[0] not in ("field", "")}


def test_state_shows_each_fields_last_value_and_the_event_that_set_it(timeline_db):
    result = eskit_cli("state", timeline_db, "order-7")
    assert result.returncode == 0, result.stderr
    assert _cells(result) == {
        "customer": ['"zoë"', "1", "OrderPlaced"],
        "total": ["15.00", "4", "LineAdded"],
        "status": ['"paid"', "3", "OrderPaid"],
        "sku": ['"ink"', "4", "LineAdded"],
        "paid_by": ['"card"', "3", "OrderPaid"],
    }
    assert "state at version 4 of 4" in " ".join(result.stdout.split())


def test_state_at_a_version_shows_the_fields_as_they_were_then(timeline_db):
    result = eskit_cli("state", timeline_db, "order-7", "--version", "2")
    assert result.returncode == 0, result.stderr
    assert _cells(result) == {
        "customer": ['"zoë"', "1", "OrderPlaced"],
        "total": ["12.50", "2", "LineAdded"],
        "status": ['"new"', "1", "OrderPlaced"],
        "sku": ['"pen"', "2", "LineAdded"],
    }


@pytest.mark.parametrize(
    ("moment", "version"),
    [
        ("2025-03-01T09:02:00Z", 3),
        ("2025-03-01T09:01:59", 2),  # no offset: UTC, like every time the CLI shows
        ("2025-03-01T10:01:30+01:00", 2),
        ("2025-03-02", 4),
    ],
)
def test_state_as_of_a_time_is_the_state_after_the_last_event_recorded_by_then(
    timeline_db, moment, version
):
    result = eskit_cli("state", timeline_db, "order-7", "--as-of", moment)
    assert result.returncode == 0, result.stderr
    assert f"state at version {version} of 4 as of" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "5"], "has 4 events: version 5 does not exist"),
        (["--version", "0"], "Invalid value for '--version'"),
        (["--as-of", "2025-03-01T08:59:59Z"], "no events recorded at or before"),
        (["--as-of", "last tuesday"], "is not an ISO 8601 time"),
        (["--version", "2", "--as-of", "2025-03-02"], "not both"),
    ],
)
def test_state_with_a_bad_version_or_time_exits_2(timeline_db, args, message):
    result = eskit_cli("state", timeline_db, "order-7", *args)
    assert result.returncode == 2
    assert message in result.stderr
    if not message.startswith("Invalid value"):  # typer's own usage errors draw a box
        assert len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)


def test_diff_lists_the_fields_that_changed_between_two_versions(timeline_db):
    result = eskit_cli("diff", timeline_db, "order-7", "1", "3")
    assert result.returncode == 0, result.stderr
    changed = {r[0]: r[1:] for r in rows(result.stdout) if r[0] not in ("field", "")}
    assert changed == {
        "total": ["changed", "10.00", "12.50", "2"],
        "status": ["changed", '"new"', '"paid"', "3"],
        "sku": ["added", "", '"pen"', "2"],
        "paid_by": ["added", "", '"card"', "3"],
    }
    assert "version 1 → 3 (2 events apart)" in " ".join(result.stdout.split())
    backwards = eskit_cli("diff", timeline_db, "order-7", "3", "1")
    assert {r[0]: r[1] for r in rows(backwards.stdout) if r[0] == "sku"} == {"sku": "removed"}


def test_diff_from_version_0_shows_every_field_as_added(timeline_db):
    result = eskit_cli("diff", timeline_db, "order-7", "0", "1")
    assert result.returncode == 0, result.stderr
    assert {r[0]: r[1] for r in rows(result.stdout) if r[0] not in ("field", "")} == {
        "customer": "added", "total": "added", "status": "added",
    }


def test_diff_of_equal_states_says_nothing_changed(timeline_db):
    result = eskit_cli("diff", timeline_db, "order-7", "4", "4")
    assert result.returncode == 0, result.stderr
    assert "no field changed between version 4 and version 4" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["order-7", "1", "9"], "version 9 does not exist"),
        (["order-7", "-1", "2"], ""),
        (["order-8", "1", "2"], "no stream 'order-8'"),
    ],
)
def test_diff_with_a_bad_version_or_stream_exits_2(timeline_db, args, message):
    result = eskit_cli("diff", timeline_db, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("command", [["state", "s"], ["diff", "s", "1", "2"]])
def test_state_and_diff_on_a_missing_file_exit_2_and_create_nothing(tmp_path, command):
    result = eskit_cli(command[0], tmp_path / "missing.db", *command[1:], cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_state_and_diff_read_a_postgres_store(postgres_dsn):
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    from eskit.stores.postgres import PostgresEventStore

    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("acc-1", [eskit.NewEvent("Opened", {"owner": "zoë", "limit": 5}),
                               eskit.NewEvent("Raised", {"limit": 9})], 0)
    state = eskit_cli("state", postgres_dsn, "acc-1", "--version", "1", "--schema", schema)
    assert state.returncode == 0, state.stderr
    assert _cells(state)["limit"] == ["5", "1", "Opened"]
    diff = eskit_cli("diff", postgres_dsn, "acc-1", "1", "2", "--schema", schema)
    assert diff.returncode == 0, diff.stderr
    assert [r[:4] for r in rows(diff.stdout) if r[0] == "limit"] == [["limit", "changed", "5", "9"]]


# --------------------------------------------------------------------------- --app: the real state


def test_state_with_app_shows_the_aggregates_own_state_not_the_last_values(timeline_db):
    result = eskit_cli("state", timeline_db, "order-7", "--app", "tests.cli.apps:Order")
    assert result.returncode == 0, result.stderr
    assert {r[0]: r[1] for r in rows(result.stdout) if r[0] not in ("field", "")} == {
        "customer": '"zoë"', "lines": '["pen", "ink"]', "status": '"paid"', "total": "15.00",
    }
    assert "the state of Order" in result.stdout
    at_2 = eskit_cli("state", timeline_db, "order-7", "--app", "tests.cli.apps:Order",
                     "--as-of", "2025-03-01T09:01:30Z")
    assert "state at version 2 of 4" in " ".join(at_2.stdout.split())
    assert {r[0]: r[1] for r in rows(at_2.stdout)}["lines"] == '["pen"]'


def test_diff_with_app_compares_the_aggregates_states(timeline_db):
    result = eskit_cli("diff", timeline_db, "order-7", "0", "2", "--app", "tests.cli.apps:Order")
    assert result.returncode == 0, result.stderr
    assert {r[0]: r[1:] for r in rows(result.stdout) if r[0] not in ("field", "")} == {
        "customer": ["changed", "None", '"zoë"'],
        "lines": ["changed", "[]", '["pen"]'],
        "status": ["changed", "None", '"new"'],
        "total": ["changed", "0", "12.50"],
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [("tests.cli.apps:NotAnAggregate", "does not name an Aggregate class"),
     ("tests.cli.apps", "does not name an Aggregate class"),
     ("no.such.module:Order", "cannot import 'no.such.module'")],
)
def test_state_with_an_app_that_is_not_an_aggregate_class_exits_2(timeline_db, spec, message):
    result = eskit_cli("state", timeline_db, "order-7", "--app", spec)
    assert result.returncode == 2
    assert message in result.stderr
    assert_no_traceback(result)
