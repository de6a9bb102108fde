"""eskit.maintenance.stats counts deleted streams and the events hard deletes removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eskit import EventStore, InMemoryEventStore, NewEvent, SQLiteEventStore
from eskit.maintenance.stats import stats
from tests.conftest import new_schema_name


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "memory":
        made: EventStore = InMemoryEventStore()
    elif request.param == "sqlite":
        made = SQLiteEventStore(tmp_path / "events.db")
    else:
        from eskit.stores.postgres import PostgresEventStore

        made = PostgresEventStore(request.getfixturevalue("postgres_dsn"),
                                  schema=new_schema_name())
    with made:
        yield made


def test_stats_count_deleted_streams_and_removed_events(store: EventStore) -> None:
    store.append("soft-1", [NewEvent("E", {}), NewEvent("E", {})])
    store.append("hard-1", [NewEvent("E", {}) for _ in range(3)])
    store.append("kept-1", [NewEvent("E", {})])
    store.delete_stream("soft-1")
    store.delete_stream("hard-1", hard=True)
    store.delete_stream("never-1", hard=True)  # a tombstone without events
    found = stats(store)
    assert found.deleted_streams == 3
    assert found.deleted_events == 3  # only hard deletes remove events
    assert found.events == 3  # kept-1's one and soft-1's two, still stored


def test_stats_count_what_is_stored_after_truncation_and_deletion(store: EventStore) -> None:
    # Equal-sized payloads, so bytes follow from counts.
    store.append("cut-1", [NewEvent("E", {"n": "x" * 50}) for _ in range(10)])
    store.append("gone-1", [NewEvent("E", {"n": "x" * 50}) for _ in range(6)])
    store.append("kept-1", [NewEvent("E", {"n": "x" * 50}) for _ in range(2)])
    one = stats(store).payload_bytes // 18
    assert store.truncate_stream("cut-1", 8, force=True) == 7
    assert store.truncate_stream("gone-1", 5, force=True) == 4
    store.delete_stream("gone-1", hard=True)  # removes the 2 events truncation left
    found = stats(store, top=5)
    assert (found.events, found.streams) == (5, 2)  # cut-1: 3, kept-1: 2
    assert found.payload_bytes == found.decoded_bytes == 5 * one
    assert {s.stream_id: (s.events, s.bytes) for s in found.largest_streams} == {
        "cut-1": (3, 3 * one), "kept-1": (2, 2 * one)}
    assert {c.category: (c.streams, c.events) for c in found.largest_categories} == {
        "cut": (1, 3), "kept": (1, 2)}
    assert (found.truncated_streams, found.truncated_events) == (2, 11)
    # Each removed event counted once: gone-1's 4 under truncation, 2 under deletion.
    assert (found.deleted_streams, found.deleted_events) == (1, 2)
    assert found.to_dict()["truncated_events"] == 11


def test_stats_cli_prints_the_removed_figures(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from eskit.cli._app import make_app

    app = make_app()

    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("cut-1", [NewEvent("E", {}) for _ in range(4)])
        store.truncate_stream("cut-1", 4, force=True)
    result = CliRunner().invoke(app, ["stats", str(path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert (document["events"], document["truncated_streams"],
            document["truncated_events"]) == (1, 1, 3)
    table = CliRunner().invoke(app, ["stats", str(path)], env={"COLUMNS": "200"})
    assert "events truncations removed" in table.output, table.output
