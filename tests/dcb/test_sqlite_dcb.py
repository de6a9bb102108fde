"""SQLite specifics of DCB: tags go with hard deletes (archive keeps them: tests/archive)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from eskit import NewEvent, Query, SQLiteEventStore


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
