"""``eskit partitions``: enable, list, ensure and drop-empty on a PostgreSQL store."""

from __future__ import annotations

from eskit import NewEvent, PostgresEventStore, SQLiteEventStore
from tests.cli.helpers import assert_no_traceback, eskit_cli
from tests.conftest import new_schema_name


def test_the_partition_commands_run_on_a_store_with_events(postgres_dsn: str) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        for n in range(9):
            store.append("gone-1" if n < 6 else "kept-1", [NewEvent("E", {"n": n})])
    plain = eskit_cli("partitions", "list", postgres_dsn, "--schema", schema)
    assert plain.returncode == 0
    assert "not partitioned" in plain.stdout
    enabled = eskit_cli("partitions", "enable", postgres_dsn, "--schema", schema,
                        "--size", "3", "--ahead", "1")
    assert enabled.returncode == 0, enabled.stderr
    assert "9 events moved" in enabled.stdout
    again = eskit_cli("partitions", "enable", postgres_dsn, "--schema", schema)
    assert again.returncode != 0
    assert "partitioned already" in again.stderr
    assert_no_traceback(again)
    listed = eskit_cli("partitions", "list", postgres_dsn, "--schema", schema)
    assert listed.returncode == 0
    for name in ("eskit_events_p0", "eskit_events_p3", "eskit_events_p4",
                 "eskit_events_default"):
        assert name in listed.stdout
    made = eskit_cli("partitions", "ensure", postgres_dsn, "--schema", schema, "--ahead", "3")
    assert made.returncode == 0
    assert "eskit_events_p5" in made.stdout
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.delete_stream("gone-1", hard=True)  # seq 1..6: p0 and p1 empty
        assert [e.event_data["n"] for e in store.read_stream("kept-1")] == [6, 7, 8]
    dropped = eskit_cli("partitions", "drop-empty", postgres_dsn, "--schema", schema)
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped 2 empty partitions: eskit_events_p0, eskit_events_p1" in dropped.stdout


def test_partitioning_a_sqlite_file_is_refused_clearly(tmp_path) -> None:
    db = tmp_path / "events.db"
    SQLiteEventStore(db).close()
    before = db.read_bytes()
    result = eskit_cli("partitions", "enable", str(db))
    assert result.returncode != 0
    assert "PostgreSQL" in result.stderr
    assert_no_traceback(result)
    assert db.read_bytes() == before
