"""SIGKILL in the middle of a compaction batch, then a rerun: every event identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eskit import EventStore, NewEvent, SQLiteEventStore, compact
from eskit.testing.compression_contract import large_payload
from tests.conftest import new_schema_name

ROOT = Path(__file__).resolve().parents[2]

# Runs compact in batches of 2; in the third batch, after its first row has been
# rewritten (the UPDATE is in, the transaction open), says so and waits to be killed.
_CHILD = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    import eskit.stores.compact as c
    from eskit import open_store
    real, calls = c._frame, [0]
    def frame(raw):
        calls[0] += 1
        if calls[0] == 6:
            print("in-batch", flush=True)
            time.sleep(60)
        return real(raw)
    c._frame = frame
    store = open_store(sys.argv[1], schema=sys.argv[2])
    c.compact(store, older_than=timedelta(0), batch_size=2)
    print("finished", flush=True)
""")


def _shapes(store: EventStore) -> list[tuple[Any, ...]]:
    return [(e.event_id, e.aggregate_id, e.version, e.position, e.event_type, e.event_data,
             e.metadata) for e in store.read_all()]


def _kill_mid_batch(db: str, schema: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db, schema], stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "in-batch"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:  # pragma: no cover - only if an assert failed above
            child.kill()
            child.wait()


def _fill(store: EventStore) -> None:
    for n in range(10):
        store.append(f"order-{n % 3}", [NewEvent("Placed", large_payload(n), {"n": n})])


def _check_kill_and_rerun(store: EventStore, db: str, schema: str) -> None:
    _fill(store)
    before = _shapes(store)
    _kill_mid_batch(db, schema)
    assert _shapes(store) == before  # the two batches committed, the third rolled back
    rerun = compact(store, older_than=timedelta(0))
    assert rerun.compressed == 6  # 4 were done before the kill
    assert _shapes(store) == before
    assert compact(store, older_than=timedelta(0)).compressed == 0


def test_sqlite_compact_killed_mid_batch_then_rerun(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path, compress_threshold=None) as store:
        _check_kill_and_rerun(store, str(path), "eskit")


@pytest.mark.usefixtures("postgres_dsn")
def test_postgres_compact_killed_mid_batch_then_rerun(postgres_dsn: str) -> None:
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema, compress_threshold=None) as store:
        _check_kill_and_rerun(store, postgres_dsn, schema)


def test_the_postgres_compaction_pages_by_the_xid8_column_not_its_text(
    postgres_dsn: str,
) -> None:
    """An output column named tx_id (its text) made ORDER BY sort the text: pages out
    of order once transaction ids gain a digit (rows passed over) and a whole-table
    sort per page. The plan must order by the column itself."""
    import psycopg

    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_compression import CompactStatements
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()
    statement = CompactStatements(schema).candidates
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            psycopg.sql.SQL("EXPLAIN {}").format(statement),
            ("0", 0, "2030-01-01T00:00:00+00:00", 1, 10)).fetchall())
    sort_keys = [line for line in plan.splitlines() if "Sort Key" in line]
    assert all("::text" not in line for line in sort_keys), plan
