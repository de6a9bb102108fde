"""append_many in the caller's transaction (SQLite, PostgreSQL sync and async), and
the PostgreSQL read horizon around a call that is still open.

The all-or-nothing cases of the store-owned call run for every store in the
contract (eskit.testing.multistream_contract).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eskit import (
    NO_STREAM,
    MultiStreamConcurrencyError,
    NewEvent,
    SQLiteEventStore,
    StreamAppend,
)
from eskit.stores.postgres import PostgresEventStore
from tests.conftest import new_schema_name


def _call(n: int, a: int | object = NO_STREAM, b: int | object = NO_STREAM) -> list[StreamAppend]:
    return [
        StreamAppend("acc-a", [NewEvent("Debited", {"n": n})], a),  # type: ignore[arg-type]
        StreamAppend("acc-b", [NewEvent("Credited", {"n": n})], b),  # type: ignore[arg-type]
    ]


# -- SQLite ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "app.db", adopt=True)
    yield store
    store.close()


def test_sqlite_append_many_commits_and_rolls_back_with_the_callers_rows(
    sqlite_store: SQLiteEventStore,
) -> None:
    conn = sqlite3.connect(sqlite_store.path, timeout=30)
    try:
        conn.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO transfers VALUES ('t-1')")
        tx = sqlite_store.in_transaction(conn)
        first = _call(1)
        results = tx.append_many(first)
        assert conn.in_transaction, "eskit must not commit the caller's connection"
        with pytest.raises(MultiStreamConcurrencyError) as caught:
            tx.append_many(_call(2, 1, 0))  # acc-b is at 1: refused, undone alone
        assert [c.stream_id for c in caught.value.conflicts] == ["acc-b"]
        assert conn.in_transaction
        assert all(r.duplicate for r in tx.append_many(first)), "a retry, in the transaction"
        conn.commit()
        assert [e.position for e in sqlite_store.read_all()] == [
            e.position for r in results for e in r.events
        ]
        conn.execute("INSERT INTO transfers VALUES ('t-2')")
        tx.append_many(_call(3, 1, 1))
        conn.rollback()
        assert [sqlite_store.head_version(s) for s in ("acc-a", "acc-b")] == [1, 1]
        assert conn.execute("SELECT id FROM transfers").fetchall() == [("t-1",)]
    finally:
        conn.close()


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_store(postgres_dsn: str) -> Iterator[PostgresEventStore]:
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{store.schema}".transfers (id text PRIMARY KEY)')
    yield store
    store.close()


def test_postgres_late_append_many_commits_with_the_callers_rows_and_a_refusal_is_undone(
    pg_store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        # The caller writes first: a late append, stamped by the trigger.
        conn.execute(f'INSERT INTO "{pg_store.schema}".transfers VALUES (%s)', ("t-1",))
        tx = pg_store.in_transaction(conn)
        results = tx.append_many(_call(1))
        with pytest.raises(MultiStreamConcurrencyError):
            tx.append_many(_call(2, 0, 1))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert pg_store.read_stream("acc-a") == [], "nothing visible before the commit"
        conn.commit()
    positions = [e.position for r in results for e in r.events]
    assert positions == sorted(positions)
    assert [e.position for e in pg_store.read_all()] == positions
    with psycopg.connect(postgres_dsn) as conn:
        pg_store.in_transaction(conn).append_many(_call(3, 1, 1))
        conn.rollback()
    assert [pg_store.head_version(s) for s in ("acc-a", "acc-b")] == [1, 1]


def test_postgres_readers_wait_for_an_open_append_many_and_then_see_it_in_its_order(
    pg_store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        # First write of its transaction: ordered by its own transaction id, which is
        # older than the single append that commits while it is still open.
        early = pg_store.in_transaction(conn).append_many(_call(1))
        later = pg_store.append("other", [NewEvent("Later")], 0)
        assert (later.position or 0) > (early[-1].position or 0)
        assert pg_store.wait_for(later.position or 0, timeout=0.1) is False, (
            "a reader must not pass the open call's events"
        )
        assert list(pg_store.read_all()) == []
        conn.commit()
    assert pg_store.wait_for(later.position or 0, timeout=5)
    assert [str(e.aggregate_id) for e in pg_store.read_all()] == ["acc-a", "acc-b", "other"]


def test_async_postgres_append_many_in_the_callers_transaction(postgres_dsn: str) -> None:
    from eskit.aio import AsyncPostgresEventStore

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        try:
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                tx = store.in_transaction(conn)
                results = await tx.append_many(_call(1))
                with pytest.raises(MultiStreamConcurrencyError) as caught:
                    await tx.append_many(_call(2, 0, 0))
                assert len(caught.value.conflicts) == 2
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
                assert await store.read_stream("acc-b") == []
                await conn.commit()
            assert [e.position async for e in store.read_all()] == [
                e.position for r in results for e in r.events
            ]
        finally:
            await store.close()

    asyncio.run(main())


def test_postgres_calls_in_opposite_orders_never_deadlock(
    pg_store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The streams' locks are taken in the order of their keys, whatever the call's
    # order: a deadlock (PostgreSQL breaks it after deadlock_timeout, and the store
    # retries the call) would show here as a retried attempt.
    import threading

    from eskit.stores import postgres

    retried: list[BaseException] = []

    def never(exc: BaseException) -> bool:
        retried.append(exc)
        return True

    monkeypatch.setattr(postgres, "retry_whole_call", never)

    def writer(first: str, second: str) -> None:
        for i in range(25):
            pg_store.append_many([
                StreamAppend(first, [NewEvent("E", {"i": i})]),
                StreamAppend(second, [NewEvent("E", {"i": i})]),
            ])

    threads = [threading.Thread(target=writer, args=pair)
               for pair in (("x", "y"), ("y", "x"), ("x", "y"), ("y", "x"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert retried == []
    assert [pg_store.head_version(s) for s in ("x", "y")] == [100, 100]
