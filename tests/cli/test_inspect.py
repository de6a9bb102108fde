"""``eskit streams`` and ``eskit events``, and what they do with bad input."""

from __future__ import annotations

import sqlite3

import pytest

import eskit
from examples.bank.demo import account_id
from tests.cli.helpers import assert_no_traceback, eskit_cli, rows

ALICE, BOB, CAROL = (account_id(n) for n in ("ACC-001", "ACC-002", "ACC-003"))

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


def test_events_lists_a_stream_in_version_order_with_types_schema_data_and_metadata(demo):
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
    assert [r[3] for r in table] == ["1"] * 6  # the schema version of each event
    assert table[0][4] == 'account_number="ACC-001"'
    assert table[1][4:6] == ["amount=250.00", 'app="eskit demo"']
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
    assert first[2:5] == ["OrderPlaced", "1", "lines=[1, 2]"]
    assert second[4] == 'note="hi"'


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


# --------------------------------------------------------------------------- paging, JSON


@pytest.fixture
def five_streams(tmp_path):
    path = tmp_path / "shop.db"
    with eskit.SQLiteEventStore(path) as store:
        for i in range(1, 6):
            store.append(f"order-{i}", [eskit.NewEvent("OrderPlaced", {"n": i})] * 1)
    return path


def test_streams_pages_with_limit_and_after_in_first_event_order(five_streams):
    first = eskit_cli("streams", five_streams, "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert [r[0] for r in rows(first.stdout)] == ["order-1", "order-2"]
    assert "2 of 5 streams" in first.stdout
    assert "more: --after order-2" in first.stdout
    rest = eskit_cli("streams", five_streams, "--after", "order-2", "--limit", "10")
    assert [r[0] for r in rows(rest.stdout)] == ["order-3", "order-4", "order-5"]
    assert "more:" not in rest.stdout


def test_streams_after_an_unknown_stream_exits_2(five_streams):
    result = eskit_cli("streams", five_streams, "--after", "order-9")
    assert result.returncode == 2
    assert "--after 'order-9'" in result.stderr
    assert_no_traceback(result)


def test_streams_json_is_a_list_of_streams_scripts_can_page_through(five_streams):
    import json

    result = eskit_cli("streams", five_streams, "--json", "--after", "order-3")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [s["stream_id"] for s in listed] == ["order-4", "order-5"]
    assert {s["version"] for s in listed} == {1}
    assert set(listed[0]) == {"stream_id", "version", "last_position", "last_timestamp"}


def test_events_json_keeps_exact_values_and_the_schema_version(tmp_path):
    import json
    from decimal import Decimal
    from uuid import UUID

    path = tmp_path / "shop.db"
    ids = UUID(int=7)
    with eskit.SQLiteEventStore(path) as store:
        store.append("order-1", [
            eskit.NewEvent("OrderPlaced", {"total": Decimal("0.10"), "ref": ids, "lines": [1]},
                           metadata={"by": "zoë"}, schema_version=3),
        ])
    result = eskit_cli("events", path, "order-1", "--json")
    assert result.returncode == 0, result.stderr
    (event,) = json.loads(result.stdout)
    assert event["schema_version"] == 3
    assert event["data"] == {"total": "0.10", "ref": str(ids), "lines": [1]}
    assert event["metadata"] == {"by": "zoë"}
    assert (event["stream_id"], event["version"], event["event_type"]) == (
        "order-1", 1, "OrderPlaced")
    shown = eskit_cli("events", path, "order-1")
    assert [r[3] for r in rows(shown.stdout) if r[0].isdigit()] == ["3"]  # the schema column


def test_json_of_a_postgres_store_writes_positions_as_exact_strings(postgres_dsn):
    import json

    from eskit.stores.postgres import PostgresEventStore
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        result = store.append("acc-1", [eskit.NewEvent("Opened", {"n": 2**70})], 0)
    assert result.position > 2**64  # (tx_id << 64) | seq: orjson alone refuses it
    for command in (["events", postgres_dsn, "acc-1"], ["streams", postgres_dsn]):
        shown = eskit_cli(*command, "--schema", schema, "--json")
        assert shown.returncode == 0, shown.stderr
        (row,) = json.loads(shown.stdout)
        position = row.get("position", row.get("last_position"))
        assert position == str(result.position)
    (event,) = json.loads(eskit_cli("events", postgres_dsn, "acc-1", "--schema", schema,
                                    "--json").stdout)
    assert event["version"] == 1  # small integers stay numbers
    assert event["data"] == {"n": str(2**70)}
