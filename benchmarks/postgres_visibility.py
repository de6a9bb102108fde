"""The PostgreSQL read horizon: visibility latency and statement costs (docs/postgres.md).

Run: ``python -m benchmarks.postgres_visibility [DSN]``. It works in a schema of its
own (dropped at the end) and compares the schema 3 horizon with the schema 2 one
(the snapshot xmin) using the same store, so one run gives both columns:

* visibility latency: a transaction holding an id stays open for ``HOLD`` seconds
  (in another database, after writing another table, or as a PostgresTarget
  batch); an event is appended; how long until ``head_position`` reaches it;
* server execution time (``EXPLAIN (ANALYZE, TIMING OFF)``) of ``head_position``
  and ``read_all`` pages, with and without an idle transaction holding an id;
* server execution time of a one-event append with and without the schema 3
  trigger and the shared stream lock.

It needs a database called ``postgres`` beside the DSN's for the other-database case.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from eskit import NewEvent, PostgresEventStore, PostgresTarget
from eskit.stores.arguments import prepare_batch
from eskit.stores.postgres_schema import Statements, append_params, unpack_position

DSN = "postgresql://postgres@127.0.0.1:5432/test"
HOLD = 1.0


def _hold(kind: str, dsn: str, schema: str, started: threading.Event) -> None:
    """Keep a transaction holding an id open for HOLD seconds."""
    if kind == "another database":
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres")) as c:
            c.execute("SELECT pg_current_xact_id()")
            started.set()
            time.sleep(HOLD)
    elif kind == "another table":
        with psycopg.connect(dsn) as c:
            c.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".side (n int)')
            c.commit()
            c.execute(f'INSERT INTO "{schema}".side VALUES (1)')
            started.set()
            time.sleep(HOLD)
    elif kind == "a PostgresTarget batch":
        target = PostgresTarget(dsn, schema=schema)
        try:
            with target.transaction() as c:
                c.execute("CREATE TABLE IF NOT EXISTS read_model (n int)")
                c.execute("INSERT INTO read_model VALUES (1)")
                started.set()
                time.sleep(HOLD)
        finally:
            target.close()
    else:
        started.set()


def _latency(store: PostgresEventStore, head: Callable[[], int], kind: str, dsn: str) -> float:
    started = threading.Event()
    holder = threading.Thread(target=_hold, args=(kind, dsn, store.schema, started))
    holder.start()
    started.wait()
    time.sleep(0.05)
    position = store.append(f"s-{uuid.uuid4()}", [NewEvent("E")]).position
    begun = time.perf_counter()
    while head() < position:
        time.sleep(0.001)
    took = time.perf_counter() - begun
    holder.join()
    return took


def _server_us(conn: psycopg.Connection[Any], statement: Any, params: Any, n: int) -> float:
    times = []
    explain = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ")
    for _ in range(n):
        with conn.transaction():
            ((plan,),) = conn.execute(explain + statement, params).fetchall()
        times.append(plan[0]["Execution Time"] * 1000)
    return statistics.median(times)


def main(dsn: str) -> None:
    schema = "eskit_bench_visibility_" + uuid.uuid4().hex[:8]
    store = PostgresEventStore(dsn, schema=schema)
    old = Statements(schema)
    old.use_schema_version(2)
    conn = psycopg.connect(dsn, autocommit=True)
    try:

        def old_head() -> int:
            row = conn.execute(old.head_position).fetchone()
            return (int(row[0]) << 64 | row[1]) if row else 0

        print(f"visibility latency, a transaction holding an id open for {HOLD} s:")
        for kind in ("nothing", "another database", "another table", "a PostgresTarget batch"):
            before = _latency(store, old_head, kind, dsn)
            after = _latency(store, store.head_position, kind, dsn)
            print(f"  {kind:24} schema 2: {before * 1000:7.1f} ms"
                  f"   schema 3: {after * 1000:6.1f} ms")

        for i in range(10):
            store.append(f"bulk-{i}", [NewEvent("E", {"i": n}) for n in range(1000)])
        tail = unpack_position(list(store.read_all())[-5].position or 0)
        print("server execution time of the reads (median):")
        for cond in ("no transaction in progress", "an idle transaction with an id elsewhere"):
            other = None
            if cond != "no transaction in progress":
                other = psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname="postgres"))
                other.execute("SELECT pg_current_xact_id()")
                store.append("after", [NewEvent("E")])  # a later id ends: the idle one is in xip
            for name, st in (("schema 2", old), ("schema 3", store.sql)):
                head = _server_us(conn, st.head_position, (), 200)
                page = _server_us(conn, st.read_all_page, (*tail, 1000), 200)
                first = _server_us(conn, st.read_all_page, ("0", 0, 1000), 30)
                print(f"  [{cond}] {name}: head_position {head:.0f} us, tail page {page:.0f} us,"
                      f" first page of 1000 {first:.0f} us")
            if other is not None:
                other.close()

        raw = store.sql.append.as_string(conn)
        lock = raw[raw.index("SELECT pg_advisory_xact_lock_shared"):raw.index("), head AS")]
        without_lock = sql.SQL(raw.replace(lock, "SELECT 1"))
        events = f'"{schema}".eskit_events'
        results: dict[str, list[float]] = {}

        def appends(name: str, statement: Any) -> None:
            times = []
            for _ in range(150):
                stream = uuid.uuid4().hex
                batch = prepare_batch(stream, [NewEvent("E")], registry=store.registry,
                                      max_event_bytes=store.max_event_bytes)
                times.append(_server_us(conn, statement, append_params(stream, 0, batch), 1))
            results.setdefault(name, []).append(statistics.median(times))

        for _ in range(6):
            conn.execute(f"ALTER TABLE {events} ENABLE TRIGGER eskit_events_append_first")
            appends("trigger and shared stream lock (schema 3)", store.sql.append)
            appends("trigger only", without_lock)
            conn.execute(f"ALTER TABLE {events} DISABLE TRIGGER eskit_events_append_first")
            appends("shared stream lock only", store.sql.append)
            appends("neither (as schema 2)", without_lock)
        print("server execution time of a one-event append (median of 6 rounds of 150):")
        for name, rounds in results.items():
            print(f"  {name}: {statistics.median(rounds):.0f} us")
    finally:
        store.close()
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DSN)
