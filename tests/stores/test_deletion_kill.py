"""SIGKILL in the middle of a hard delete (tombstone written, rows deleted, not committed):
the stream is then whole and appendable, and a rerun deletes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eskit import EventStore, NewEvent, SQLiteEventStore, StreamDeletedError
from tests.conftest import new_schema_name

ROOT = Path(__file__).resolve().parents[2]

# The deletes log (INFO) after the DELETE and before COMMIT: stop there, say so, wait.
_CHILD = textwrap.dedent("""
    import sys, time
    import eskit.stores.sqlite_deletion as sd
    from eskit import open_store
    def stop(message, *args, **kwargs):
        if "deleted stream" in message:
            print("in-delete", flush=True)
            time.sleep(60)
    sd._log.info = stop
    if sys.argv[2] != "-":
        import eskit.stores.postgres as pg
        pg._log.info = stop
    store = open_store(sys.argv[1], schema=sys.argv[2] if sys.argv[2] != "-" else "eskit")
    store.delete_stream("big", hard=True)
    print("finished", flush=True)
""")


def _kill_mid_delete(db: str, schema: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db, schema], stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "in-delete"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:  # pragma: no cover - only if an assert failed above
            child.kill()
            child.wait()


def _check(store: EventStore, db: str, schema: str) -> None:
    for _ in range(5):
        store.append("big", [NewEvent("E", {"n": n}) for n in range(400)])
    store.append("small", [NewEvent("E", {})])
    before = [(e.event_id, e.position) for e in store.read_all()]
    _kill_mid_delete(db, schema)
    assert [(e.event_id, e.position) for e in store.read_all()] == before  # rolled back
    assert store.append("big", [NewEvent("E", {})], 2000).version == 2001  # no tombstone
    store.delete_stream("big", 2001, hard=True)  # the rerun
    assert [e.aggregate_id for e in store.read_all()] == ["small"]
    with pytest.raises(StreamDeletedError):
        store.append("big", [NewEvent("E", {})])


def test_sqlite_hard_delete_killed_before_commit(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    with SQLiteEventStore(db) as store:
        _check(store, db, "-")


def test_postgres_hard_delete_killed_before_commit(postgres_dsn: str) -> None:
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        _check(store, postgres_dsn, schema)
