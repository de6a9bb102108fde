"""SQLite specifics of DCB: tags go with hard deletes, tagged streams are not archived."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from eskit import InvalidInputError, NewEvent, Query, SQLiteEventStore
from eskit.archive import LocalDirectoryStorage, archive_streams


def _tags(path: Path) -> list[tuple[str, int]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT tag, position FROM eskit_event_tags ORDER BY tag").fetchall()


def test_hard_delete_removes_the_tags_of_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("gone", [NewEvent("E", tags=("person:ada", "x"))])
        kept = store.append("kept", [NewEvent("E", tags=("x",))])
        store.delete_stream("gone", hard=True)
        assert [e.aggregate_id for e in store.read_events(Query.of(tags=["x"])).events] == [
            "kept"
        ]
    assert _tags(path) == [("x", kept.position)]


def test_a_tagged_stream_is_refused_by_archive_and_left_in_place(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        store.append("plain", [NewEvent("E")])
        store.append("tagged", [NewEvent("E", tags=("x",))])
        storage = LocalDirectoryStorage(tmp_path / "archive")
        with pytest.raises(InvalidInputError, match="DCB tags"):
            archive_streams(store, storage, ["plain", "tagged"])
        assert store.head_version("plain") == 1  # refused up front: nothing archived
        assert store.read_events(Query.of(tags=["x"])).events[0].aggregate_id == "tagged"
        assert archive_streams(store, storage, ["plain"]) == 1
