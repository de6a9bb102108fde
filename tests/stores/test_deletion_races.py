"""A hard delete racing appends of the same stream: after it, nothing of the stream is
stored and every later append is refused; appends of other streams are untouched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eskit import EventStore, NewEvent, SQLiteEventStore, StreamDeletedError
from tests.conftest import new_schema_name


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        made: EventStore = SQLiteEventStore(tmp_path / "events.db")
    else:
        from eskit.stores.postgres import PostgresEventStore

        made = PostgresEventStore(request.getfixturevalue("postgres_dsn"),
                                  schema=new_schema_name())
    with made:
        yield made


def test_appends_racing_a_hard_delete_leave_nothing_of_the_stream(store: EventStore) -> None:
    store.append("race", [NewEvent("E", {"n": -1})])
    outcomes: list[str] = []
    start = threading.Barrier(5)

    def writer(w: int) -> None:
        start.wait()
        for n in range(20):
            try:
                store.append("race", [NewEvent("E", {"w": w, "n": n})])
                outcomes.append("stored")
            except StreamDeletedError:
                outcomes.append("refused")
            store.append(f"other-{w}", [NewEvent("E", {"n": n})])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    store.delete_stream("race", hard=True)
    for thread in threads:
        thread.join()
    assert len(outcomes) == 80
    assert "refused" in outcomes or outcomes.count("stored") == 80
    assert store.read_stream("race") == []
    assert all(e.aggregate_id != "race" for e in store.read_all())
    with pytest.raises(StreamDeletedError):
        store.append("race", [NewEvent("E", {})])
    for w in range(4):
        assert store.head_version(f"other-{w}") == 20
    # Nothing of it is stored either, hidden or not (the raw table).
    if isinstance(store, SQLiteEventStore):
        with store._reading() as conn:
            count = conn.execute(
                "SELECT count(*) FROM eskit_events WHERE stream_id = 'race'"
            ).fetchone()[0]
    else:
        count = store._run(lambda conn: conn.execute(  # type: ignore[attr-defined]
            f'SELECT count(*) FROM "{store.schema}".eskit_events'  # type: ignore[attr-defined]
            " WHERE stream_id = 'race'").fetchone()[0])
    assert count == 0
