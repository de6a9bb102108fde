"""``eskit stats`` and ``eskit snapshots prune``: tables, JSON, exit codes, real subprocesses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import eskit
from eskit import NewEvent, Snapshot, SQLiteEventStore, SQLiteSnapshotStore, codec
from eskit.cli._app import make_app
from tests.cli.helpers import assert_no_traceback, eskit_cli, rows
from tests.conftest import new_schema_name

KIND = "t.Order"


def _fill(store: eskit.EventStore, snapshots: eskit.SnapshotStore | None) -> None:
    for n in range(4):
        result = store.append(f"order-{n}", [NewEvent("Placed", {"n": i, "note": "ü" * n})
                                             for i in range(n + 1)])
        if snapshots is not None:
            for event in result.events:  # a snapshot after every event
                snapshots.save(Snapshot(f"order-{n}", KIND, event.version, event.event_id, 1,
                                        codec.encode({"v": event.version}), datetime.now(UTC)))
    store.append("user-1", [NewEvent("Joined", {"name": "ann"})])


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with SQLiteEventStore(path) as store:
        _fill(store, SQLiteSnapshotStore(store))
    return path


def test_stats_json_has_every_figure(shop: Path) -> None:
    result = CliRunner().invoke(make_app(), ["stats", str(shop), "--json", "--top", "2"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    with SQLiteEventStore(shop) as store:
        assert document == eskit.stats(store, top=2).to_dict()
    assert document["events"] == 1 + 2 + 3 + 4 + 1
    assert document["streams"] == 5
    assert document["snapshots"] == 10
    assert [s["stream_id"] for s in document["largest_streams"]] == ["order-3", "order-2"]
    assert document["largest_categories"][0]["category"] == "order"
    assert document["largest_categories"][0]["streams"] == 4
    assert document["compression_ratio"] == 1.0  # small events: none compressed


def test_stats_prints_tables(shop: Path) -> None:
    result = CliRunner().invoke(make_app(), ["stats", str(shop)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    table = {row[0]: row[1] for row in rows(result.output)}
    assert table["events"] == "11"
    assert table["streams"] == "5"
    assert table["snapshots"] == "10"
    assert table["compression ratio"] == "1.0"
    assert table["order-3"] == "4"  # the largest streams table: stream, events, bytes
    assert table["order"] == "4"  # the categories table: category, streams, ...


@pytest.mark.parametrize("args", [["--top", "-1"], ["--top", "x"], ["--bogus"]])
def test_bad_stats_options_exit_2(shop: Path, args: list[str]) -> None:
    result = CliRunner().invoke(make_app(), ["stats", str(shop), *args])
    assert result.exit_code == 2


def test_stats_of_a_missing_file_is_a_red_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(make_app(), ["stats", str(tmp_path / "nope.db")])
    assert result.exit_code == 2
    assert not (tmp_path / "nope.db").exists()  # inspecting never creates a store


def test_prune_keeps_the_newest_n_per_aggregate(shop: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(make_app(), ["snapshots", "prune", str(shop), "--keep", "2",
                                        "--batch-size", "1", "--json"])
    assert result.exit_code == 0, result.output
    # order-n has n + 1 snapshots: 0 + 0 + 1 + 2 deleted.
    assert json.loads(result.output) == {"deleted": 3, "keep": 2}
    with SQLiteEventStore(shop) as store:
        assert eskit.stats(store).snapshots == 7
        latest = SQLiteSnapshotStore(store).latest("order-3", KIND, 2)
        assert latest is None  # versions 3 and 4 kept, 1 and 2 gone
    again = runner.invoke(make_app(), ["snapshots", "prune", str(shop), "--keep", "2"])
    assert again.exit_code == 0, again.output
    assert "deleted 0 snapshots" in again.output


@pytest.mark.parametrize("args", [["--keep", "-1"], ["--batch-size", "0"]])
def test_bad_prune_options_exit_2_and_delete_nothing(shop: Path, args: list[str]) -> None:
    result = CliRunner().invoke(make_app(), ["snapshots", "prune", str(shop), *args])
    assert result.exit_code == 2
    with SQLiteEventStore(shop) as store:
        assert eskit.stats(store).snapshots == 10


def test_prune_of_a_memory_store_is_a_clear_error() -> None:
    result = CliRunner().invoke(make_app(), ["snapshots", "prune", "memory://"])
    assert result.exit_code == 2
    assert "keeps no snapshots of its own" in result.output


def test_stats_and_prune_in_real_subprocesses(shop: Path) -> None:
    table = eskit_cli("stats", shop, "--top", "1")
    assert table.returncode == 0, table.stdout + table.stderr
    assert_no_traceback(table)
    assert {row[0]: row[1] for row in rows(table.stdout)}["events"] == "11"
    pruned = eskit_cli("snapshots", "prune", shop, "--keep", "0", "--json")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert json.loads(pruned.stdout) == {"deleted": 10, "keep": 0}
    after = eskit_cli("stats", shop, "--json")
    assert json.loads(after.stdout)["snapshots"] == 0


def test_stats_and_prune_on_postgres_with_the_dsn_from_the_environment(
    postgres_dsn: str,
) -> None:
    schema = new_schema_name()
    store = eskit.PostgresEventStore(postgres_dsn, schema=schema)
    try:
        _fill(store, eskit.PostgresSnapshotStore(store))
    finally:
        store.close()
    env = {"ESKIT_DSN": postgres_dsn}
    result = eskit_cli("stats", "--schema", schema, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert (document["system"], document["events"], document["snapshots"]) == (
        "postgresql", 11, 10)
    assert document["storage_bytes"] > document["payload_bytes"]
    pruned = eskit_cli("snapshots", "prune", "--schema", schema, "--keep", "1", "--json",
                       env=env)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert json.loads(pruned.stdout)["deleted"] == 10 - 4  # the 4 order streams keep 1 each
