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
