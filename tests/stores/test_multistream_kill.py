"""SIGKILL between the streams of an append_many (the first stream's events inserted,
the transaction open): none of the call is stored, and the streams take appends again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from eskit import EventStore, NewEvent, SQLiteEventStore, StreamAppend
from tests.conftest import new_schema_name

ROOT = Path(__file__).resolve().parents[2]

# The second stream's insert (SQLite: the store's _insert; PostgreSQL: its parameters
# are built just before it) says so and waits to be killed.
_CHILD = textwrap.dedent("""
    import sys, time
    from eskit import NewEvent, StreamAppend, open_store
    calls = []
    def stop_at_second(original):
        def wrapped(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                print("between", flush=True)
                time.sleep(60)
            return original(*args, **kwargs)
        return wrapped
    if sys.argv[2] == "-":
        from eskit.stores.sqlite import SQLiteEventStore
        SQLiteEventStore._insert = stop_at_second(SQLiteEventStore._insert)
        store = open_store(sys.argv[1])
    else:
        import eskit.stores.postgres_multi as pm
        pm.append_params = stop_at_second(pm.append_params)
        store = open_store(sys.argv[1], schema=sys.argv[2])
    store.append_many([
        StreamAppend("from", [NewEvent("Debited", {"n": 1})], 1),
        StreamAppend("to", [NewEvent("Credited", {"n": 1})], 1),
    ])
    print("finished", flush=True)
""")


def _check(store: EventStore, db: str, schema: str) -> None:
    store.append("from", [NewEvent("Opened")])
    store.append("to", [NewEvent("Opened")])
    before = [(e.event_id, e.position) for e in store.read_all()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db, schema], stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "between"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:  # pragma: no cover - only if an assert failed above
            child.kill()
            child.wait()
    assert [(e.event_id, e.position) for e in store.read_all()] == before
    results = store.append_many([  # the locks went with the killed connection
        StreamAppend("from", [NewEvent("Debited", {"n": 2})], 1),
        StreamAppend("to", [NewEvent("Credited", {"n": 2})], 1),
    ])
    assert [r.version for r in results] == [2, 2]
    assert [e.event_type for e in store.read_all()] == ["Opened", "Opened", "Debited",
                                                         "Credited"]


def test_sqlite_append_many_killed_between_its_streams(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    with SQLiteEventStore(db) as store:
        _check(store, db, "-")


def test_postgres_append_many_killed_between_its_streams(postgres_dsn: str) -> None:
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        _check(store, postgres_dsn, schema)
