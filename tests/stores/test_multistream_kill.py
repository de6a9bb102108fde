"""SIGKILL inside an append_many, every stream's events inserted and the transaction
not yet committed: none of the call is stored, and the streams take appends again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from eskit import EventStore, NewEvent, SQLiteEventStore, StreamAppend
from tests.conftest import new_schema_name

ROOT = Path(__file__).resolve().parents[2]

# Once every stream's insert has run (SQLite: _insert_all returned; PostgreSQL: the
# inserts' rows are back, _results decodes them), say so and wait to be killed.
_CHILD = textwrap.dedent("""
    import sys, time
    from eskit import NewEvent, StreamAppend, open_store
    def stop_after(original):
        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            print("inserted", flush=True)
            time.sleep(60)
            return result
        return wrapped
    if sys.argv[2] == "-":
        import eskit.stores.sqlite_multi as sm
        sm._insert_all = stop_after(sm._insert_all)
        store = open_store(sys.argv[1])
    else:
        import eskit.stores.postgres_multi as pm
        pm._results = stop_after(pm._results)
        store = open_store(sys.argv[1], schema=sys.argv[2])
    store.append_many([
        StreamAppend("from", [NewEvent("Debited", {"n": 1})], 1),
        StreamAppend("to", [NewEvent("Credited", {"n": 1})], 1),
    ])
    print("finished", flush=True)
""")


def _check(store: EventStore, db: str, schema: str, holding: Callable[[], bool]) -> None:
    store.append("from", [NewEvent("Opened")])
    store.append("to", [NewEvent("Opened")])
    before = [(e.event_id, e.position) for e in store.read_all()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db, schema], stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "inserted"
        assert holding(), "the child must be inside its open transaction"
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


def test_sqlite_append_many_killed_before_its_commit(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    def write_locked() -> bool:
        with closing(sqlite3.connect(db, timeout=0)) as other:
            try:
                other.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                return "locked" in str(exc)
            other.execute("ROLLBACK")
            return False

    with SQLiteEventStore(db) as store:
        _check(store, db, "-", write_locked)


def test_postgres_append_many_killed_before_its_commit(postgres_dsn: str) -> None:
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        # An appending transaction is open (it holds the events table's lock and an id).
        _check(store, postgres_dsn, schema, lambda: store.oldest_transaction_age() > 0)
