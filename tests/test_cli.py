"""End to end: the ``eskit`` command line, run in a subprocess as a user would."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

import eskit
from examples.bank.demo import account_id

ALICE, BOB, CAROL = (account_id(n) for n in ("ACC-001", "ACC-002", "ACC-003"))


def eskit_cli(*args, cwd=None, prelude=""):
    """Run ``eskit ARGS`` (or, with a prelude, Python code that then runs it)."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1"}
    if prelude:
        code = f"{prelude}\nimport sys\nsys.argv = ['eskit', *sys.argv[1:]]\n" \
               "from eskit.cli import main\nmain()"
        command = [sys.executable, "-c", code, *map(str, args)]
    else:
        command = [sys.executable, "-m", "eskit.cli", *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", env=env, cwd=cwd,
        timeout=120, check=False,
    )


def rows(output):
    """The cells of each table row in rich output."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.count("│") >= 3
    ]


def assert_no_traceback(result):
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    result = eskit_cli("demo", cwd=cwd)
    return result, cwd / "eskit-demo.db"


# --------------------------------------------------------------------------- eskit demo


def test_demo_exits_0_and_prints_the_rebuilt_balances(demo):
    result, _ = demo
    assert result.returncode == 0, result.stderr
    accounts = {r[0]: r for r in rows(result.stdout) if r[0].startswith("ACC-")}
    assert accounts["ACC-001"][1:] == ["Alice", "open", "6", "224.25"]
    assert accounts["ACC-002"][1:] == ["Bob", "closed", "4", "0.00"]
    assert accounts["ACC-003"][1:] == ["Carol", "open", "2", "145.50"]


def test_demo_shows_the_concurrent_change_being_detected_and_retried(demo):
    result, _ = demo
    out = result.stdout
    assert "ConcurrencyError: concurrent modification of stream" in out
    assert "expected version 4, actual version 5" in " ".join(out.split())
    assert "saved, version 6, balance 224.25" in out
    assert_no_traceback(result)


def test_demo_writes_eskit_demo_db_in_the_current_directory_and_prints_the_history(demo):
    result, path = demo
    assert path.is_file()
    history = re.findall(r"^ +(\d+) +(ACC-\d+) +(\d+) +(\w+)", result.stdout, re.MULTILINE)
    assert [int(position) for position, *_ in history] == list(range(1, 13))
    assert history[0][1:] == ("ACC-001", "1", "AccountOpened")
    assert history[-1][1:] == ("ACC-001", "6", "MoneyWithdrawn")


def test_demo_run_again_replaces_its_earlier_file(tmp_path):
    path = tmp_path / "again.db"
    for _ in range(2):
        result = eskit_cli("demo", "--db", path)
        assert result.returncode == 0, result.stderr
    with eskit.SQLiteEventStore(path, create=False) as store:
        assert store.head_position() == 12


def test_demo_refuses_to_overwrite_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    result = eskit_cli("demo", "--db", path)
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr
    assert path.read_text() == "my notes\n"
    assert_no_traceback(result)


def test_demo_outside_a_source_checkout_says_so_and_exits_1():
    result = eskit_cli("demo", prelude="import sys; sys.modules['examples'] = None")
    assert result.returncode == 1
    assert "source checkout" in result.stderr
    assert_no_traceback(result)


# --------------------------------------------------------------------------- eskit streams


def test_streams_lists_each_demo_account_with_its_version(demo):
    _, path = demo
    result = eskit_cli("streams", path)
    assert result.returncode == 0, result.stderr
    listed = {r[0]: r[1:3] for r in rows(result.stdout)}
    assert listed == {str(ALICE): ["6", "12"], str(BOB): ["4", "10"], str(CAROL): ["2", "9"]}


def test_streams_of_an_empty_store_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.db"
    eskit.SQLiteEventStore(path).close()
    result = eskit_cli("streams", path)
    assert result.returncode == 0
    assert "the store is empty" in result.stdout


def test_streams_shows_text_stream_ids_exactly(tmp_path):
    path = tmp_path / "shop.db"
    with eskit.SQLiteEventStore(path) as store:
        store.append("order-1", [eskit.NewEvent("OrderPlaced")])
        store.append("evil\x1b[31mred", [eskit.NewEvent("Bad[bold]type")])
    result = eskit_cli("streams", path)
    assert result.returncode == 0
    assert [r[0] for r in rows(result.stdout)] == ["order-1", "evil\\x1b[31mred"]
    assert "\x1b" not in result.stdout  # stored text cannot drive the terminal


# --------------------------------------------------------------------------- eskit events


def test_events_lists_a_stream_in_version_order_with_types_data_and_metadata(demo):
    _, path = demo
    result = eskit_cli("events", path, ALICE)
    assert result.returncode == 0, result.stderr
    table = [r for r in rows(result.stdout) if r[0].isdigit()]
    assert [int(r[0]) for r in table] == [1, 2, 3, 4, 5, 6]
    assert [int(r[1]) for r in table] == [1, 4, 5, 6, 11, 12]
    assert [r[2] for r in table] == [
        "AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "MoneyTransferredOut",
        "MoneyDeposited", "MoneyWithdrawn",
    ]
    assert table[0][3] == 'account_number="ACC-001"'
    assert table[1][3:5] == ["amount=250.00", 'app="eskit demo"']
    assert "6 of 6 events" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    "spelling",
    [str(ALICE), str(ALICE).upper(), ALICE.hex, "{" + str(ALICE) + "}", ALICE.urn],
)
def test_events_finds_a_uuid_stream_by_any_spelling_of_its_uuid(demo, spelling):
    _, path = demo
    result = eskit_cli("events", path, spelling)
    assert result.returncode == 0, result.stderr
    assert f"stream {ALICE} " in result.stdout
    assert "6 of 6 events" in " ".join(result.stdout.split())


def test_events_from_version_is_exclusive_and_limit_and_backwards_combine(demo):
    _, path = demo
    after_4 = eskit_cli("events", path, ALICE, "--from-version", "4")
    assert [r[0] for r in rows(after_4.stdout) if r[0].isdigit()] == ["5", "6"]
    newest = eskit_cli("events", path, ALICE, "--backwards", "--limit", "2")
    assert [r[0] for r in rows(newest.stdout) if r[0].isdigit()] == ["6", "5"]
    assert "2 of 6 events, newest first" in " ".join(newest.stdout.split())


def test_events_of_an_unknown_stream_exit_2_with_a_hint(demo):
    _, path = demo
    result = eskit_cli("events", path, "no-such-stream")
    assert result.returncode == 2
    assert "no stream 'no-such-stream'" in result.stderr
    assert "eskit streams" in result.stderr
    assert_no_traceback(result)


def test_events_reads_text_streams_too(tmp_path):
    path = tmp_path / "shop.db"
    with eskit.SQLiteEventStore(path) as store:
        store.append("order-1", [eskit.NewEvent("OrderPlaced", {"lines": [1, 2], "note": "hi"})])
    result = eskit_cli("events", path, "order-1")
    assert result.returncode == 0, result.stderr
    first, second = rows(result.stdout)
    assert first[2:4] == ["OrderPlaced", "lines=[1, 2]"]
    assert second[3] == 'note="hi"'


def test_a_negative_limit_is_a_usage_error():
    result = eskit_cli("events", "x.db", "s", "--limit", "-1")
    assert result.returncode == 2
    assert_no_traceback(result)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("command", [["streams"], ["events", "some-stream"]])
def test_inspecting_a_missing_file_exits_2_and_creates_nothing(tmp_path, command):
    missing = tmp_path / "missing.db"
    args = [command[0], missing, *command[1:]]
    result = eskit_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no eskit store at")
    assert "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["streams"], ["events", "some-stream"]])
def test_inspecting_a_text_file_exits_2_and_leaves_it_alone(tmp_path, command):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    result = eskit_cli(command[0], path, *command[1:])
    assert result.returncode == 2
    assert "is not an eskit store" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)
    assert path.read_text() == "not a database\n" * 100
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_inspecting_a_sqlite_database_of_another_program_exits_2(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    result = eskit_cli("streams", path)
    assert result.returncode == 2
    assert "not an eskit store" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("kind", ["another program's SQLite database", "an empty file"])
def test_inspecting_a_file_that_is_not_an_eskit_store_leaves_it_unchanged(tmp_path, kind):
    path = tmp_path / "other.db"
    if kind == "an empty file":
        path.write_bytes(b"")
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()
    before = path.read_bytes()
    result = eskit_cli("streams", path)
    assert result.returncode == 2
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["other.db"]


def test_without_the_cli_extra_the_command_says_how_to_install_it_and_exits_1():
    result = eskit_cli("streams", "x.db", prelude="import sys; sys.modules['typer'] = None")
    assert result.returncode == 1
    assert result.stderr.strip() == "the eskit CLI needs the cli extra: pip install 'eskit[cli]'"


def test_help_lists_the_three_commands():
    result = eskit_cli("--help")
    assert result.returncode == 0
    for command in ("demo", "streams", "events"):
        assert command in result.stdout


def test_the_eskit_script_is_installed_next_to_python():
    script = os.path.join(os.path.dirname(sys.executable), "eskit")
    assert os.path.exists(script), "pip install must put the eskit console script beside python"
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "streams" in result.stdout


# --------------------------------------------------------------------------- PostgreSQL


def test_migrate_creates_the_schema_once_and_is_idempotent(postgres_dsn):
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    first = eskit_cli("migrate", postgres_dsn, "--schema", schema)
    assert first.returncode == 0, first.stderr
    from eskit.stores.postgres_schema import SCHEMA_VERSION

    assert f"version {SCHEMA_VERSION} (migrated from 0)" in first.stdout
    again = eskit_cli("migrate", postgres_dsn, "--schema", schema)
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout

    from eskit.stores.postgres import PostgresEventStore

    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as store:
        store.append("acc-1", [eskit.NewEvent("Opened", {"owner": "zoë"})], 0)
    listed = eskit_cli("streams", postgres_dsn, "--schema", schema)
    assert listed.returncode == 0, listed.stderr
    assert [r[:2] for r in rows(listed.stdout) if r[0] == "acc-1"] == [["acc-1", "1"]]
    shown = eskit_cli("events", postgres_dsn, "acc-1", "--schema", schema)
    assert shown.returncode == 0, shown.stderr
    assert "zoë" in shown.stdout


def test_inspecting_a_schema_without_a_store_exits_2_and_creates_nothing(postgres_dsn):
    import psycopg

    from tests.conftest import new_schema_name

    schema = new_schema_name()
    result = eskit_cli("streams", postgres_dsn, "--schema", schema)
    assert result.returncode == 2
    assert "eskit migrate" in result.stderr
    assert_no_traceback(result)
    with psycopg.connect(postgres_dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


def test_migrate_on_an_unreachable_server_exits_2_with_one_clear_line():
    result = eskit_cli("migrate", "postgresql://postgres@127.0.0.1:1/nothing")
    assert result.returncode == 2
    assert "cannot connect to PostgreSQL" in result.stderr
    assert_no_traceback(result)


# --------------------------------------------------------------------------- upcast-check


@pytest.fixture
def v1_copy(tmp_path):
    import shutil

    from tests.test_upcasting import FIXTURE

    path = tmp_path / "v1.db"
    shutil.copy(FIXTURE, path)
    return path


def test_upcast_check_reads_every_event_through_todays_code(v1_copy):
    before = v1_copy.read_bytes()
    result = eskit_cli(
        "upcast-check", v1_copy, "--module", "tests.test_upcasting",
        "--registry", "tests.test_upcasting:V3",
    )
    assert result.returncode == 0, result.stderr
    assert "5 events read" in result.stdout
    assert "3 upcast, 6 built as domain events, 0 failed" in result.stdout
    assert "deprecated type 'legacy.NewsletterSubscribed': 1 event(s)" in result.stdout
    assert v1_copy.read_bytes() == before, "the check must not change the store"


def test_upcast_check_reports_each_failing_event_and_exits_3(v1_copy):
    result = eskit_cli(
        "upcast-check", v1_copy, "--registry", "tests.fixtures.broken_registry:BROKEN"
    )
    assert result.returncode == 3
    assert "1 failed" in result.stdout
    assert "KeyError" in result.stdout
    assert_no_traceback(result)


def test_upcast_check_carries_on_after_an_event_that_cannot_be_decoded(v1_copy):
    with sqlite3.connect(v1_copy) as conn:
        conn.execute(
            "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version,"
            " recorded_at, data, metadata) VALUES (randomblob(16), 'broken', 1, 'X', 1, 0,"
            " '{not json', '{}')"
        )
        conn.execute(
            "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version,"
            " recorded_at, data, metadata) VALUES (randomblob(16), 'broken', 2, 'Y', 1, 0,"
            " '{}', '{}')"
        )
    conn.close()
    result = eskit_cli("upcast-check", v1_copy)
    assert result.returncode == 3
    assert "7 events read" in result.stdout
    assert "1 failed" in result.stdout
    assert "not valid JSON" in result.stdout


def test_upcast_check_with_a_module_that_cannot_be_imported_exits_2(v1_copy):
    result = eskit_cli("upcast-check", v1_copy, "--module", "no.such.module")
    assert result.returncode == 2
    assert "cannot import 'no.such.module'" in result.stderr
    assert_no_traceback(result)


# --------------------------------------------------------------------------- eskit state / diff


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
