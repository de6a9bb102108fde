"""The async PostgreSQL store appending inside the caller's transaction (psycopg, SQLAlchemy).

Each test runs its coroutine with ``asyncio.run`` (see tests/aio/conftest.py).
"""

import asyncio
import random

import psycopg
import pytest

from eskit import AppendNotFirstWriteError, ConcurrencyError, InvalidInputError, NewEvent
from eskit.aio.postgres import AsyncPostgresEventStore
from tests.conftest import new_schema_name


async def _store(dsn: str) -> AsyncPostgresEventStore:
    store = await AsyncPostgresEventStore.open(dsn, schema=new_schema_name())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE TABLE "{store.schema}".orders (id text PRIMARY KEY)')
    return store


async def _orders(dsn: str, schema: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(f'SELECT id FROM "{schema}".orders ORDER BY id')
        return [r[0] for r in await cur.fetchall()]


def test_own_write_then_append_commit_or_roll_back_together(postgres_dsn: str) -> None:
    async def run() -> None:
        store = await _store(postgres_dsn)
        try:
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                await conn.execute(f"INSERT INTO \"{store.schema}\".orders VALUES ('o-1')")
                async with store.in_transaction(conn) as tx:
                    result = await tx.append("order-1", [NewEvent("OrderPlaced")], 0)
                assert await store.read_stream("order-1") == []
                await conn.commit()
                await conn.execute(f"INSERT INTO \"{store.schema}\".orders VALUES ('o-2')")
                await store.in_transaction(conn).append("order-2", [NewEvent("X")], 0)
                await conn.rollback()
            assert [e.position for e in await store.read_stream("order-1")] == [result.position]
            assert await store.read_stream("order-2") == []
            assert await store.wait_for(result.position, timeout=5)
            assert await _orders(postgres_dsn, store.schema) == ["o-1"]
        finally:
            await store.close()

    asyncio.run(run())


def test_a_conflict_or_a_refusal_leaves_the_transaction_usable(postgres_dsn: str) -> None:
    async def run() -> None:
        store = await _store(postgres_dsn)
        try:
            await store.append("order-3", [NewEvent("OrderPlaced")], 0)
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                await conn.execute(f"INSERT INTO \"{store.schema}\".orders VALUES ('o-3')")
                tx = store.in_transaction(conn)
                with pytest.raises(ConcurrencyError):
                    await tx.append("order-3", [NewEvent("Stale")], 0)
                assert (await tx.append("order-3", [NewEvent("Shipped")], 1)).version == 2
                await conn.commit()
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await conn.execute(f"INSERT INTO \"{store.schema}\".orders VALUES ('o-4')")
                with pytest.raises(AppendNotFirstWriteError, match="repeatable read"):
                    await store.in_transaction(conn).append("rr", [NewEvent("No")], 0)
                await conn.commit()
            async with await psycopg.AsyncConnection.connect(
                postgres_dsn, autocommit=True
            ) as conn:
                with pytest.raises(InvalidInputError, match="no open transaction"):
                    await store.in_transaction(conn).append("s", [NewEvent("E")], 0)
            types = [e.event_type for e in await store.read_stream("order-3")]
            assert types == ["OrderPlaced", "Shipped"]
            assert await _orders(postgres_dsn, store.schema) == ["o-3", "o-4"]
        finally:
            await store.close()

    asyncio.run(run())


def test_late_appenders_committing_out_of_order_lose_nothing(postgres_dsn: str) -> None:
    async def run() -> None:
        store = await _store(postgres_dsn)
        done = asyncio.Event()
        committed: list[str] = []
        delivered: list[int] = []

        async def writer(n: int) -> None:
            rng = random.Random(n)
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                tx = store.in_transaction(conn)
                for i in range(25):
                    stream = f"w{n}-{i}"
                    await conn.execute(
                        f'INSERT INTO "{store.schema}".orders VALUES (%s)', (stream,)
                    )
                    await asyncio.sleep(rng.random() * 0.004)
                    await tx.append(stream, [NewEvent("E"), NewEvent("F")], 0)
                    await asyncio.sleep(rng.random() * 0.01)
                    if rng.random() < 0.1:
                        await conn.rollback()
                        continue
                    await conn.commit()
                    committed.append(stream)

        async def reader() -> None:
            checkpoint = 0
            while True:
                finished = done.is_set()
                async for event in store.read_all(checkpoint):
                    assert event.position is not None
                    delivered.append(event.position)
                    checkpoint = event.position
                if finished:
                    return
                await asyncio.sleep(0.002)

        try:
            reading = asyncio.create_task(reader())
            await asyncio.gather(*(writer(n) for n in range(4)))
            done.set()
            await reading
            final = [e async for e in store.read_all()]
            assert delivered == [e.position for e in final], "nothing skipped or twice"
            assert sorted({str(e.aggregate_id) for e in final}) == sorted(committed)
            assert len(final) == 2 * len(committed)
        finally:
            await store.close()

    asyncio.run(run())


def test_a_sqlalchemy_async_session_and_an_append_commit_together(postgres_dsn: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def run() -> None:
        store = await _store(postgres_dsn)
        engine = create_async_engine(
            postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        )
        try:
            async with AsyncSession(engine) as session:
                await session.execute(
                    text(f"INSERT INTO \"{store.schema}\".orders VALUES ('o-9')")
                )
                tx = store.in_transaction(await session.connection())
                await tx.append("order-9", [NewEvent("OrderPlaced")], 0)
                assert await store.read_stream("order-9") == []
                await session.commit()
            async with engine.connect() as conn:  # the append as the first statement
                await store.in_transaction(conn).append("order-10", [NewEvent("X")], 0)
                await conn.commit()
            assert [e.aggregate_id for e in await store.read_stream("order-9")] == ["order-9"]
            assert len(await store.read_stream("order-10")) == 1
            assert await _orders(postgres_dsn, store.schema) == ["o-9"]
        finally:
            await engine.dispose()
            await store.close()

    asyncio.run(run())


def test_an_async_store_on_the_callers_connection_joins_its_transaction(
    postgres_dsn: str,
) -> None:
    async def run() -> None:
        schema = new_schema_name()
        async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
            store = await AsyncPostgresEventStore.open(connection=conn, schema=schema)
            await conn.commit()  # setup joined the transaction
            await conn.execute(f'CREATE TABLE "{schema}".orders (id text)')
            await store.append("order-1", [NewEvent("OrderPlaced")], 0)
            async with AsyncPostgresEventStore(postgres_dsn, schema=schema) as outside:
                assert await outside.read_stream("order-1") == []
                await conn.commit()
                assert len(await outside.read_stream("order-1")) == 1
            await store.append("order-2", [NewEvent("OrderPlaced")], 0)
            await conn.rollback()
            assert [e.aggregate_id async for e in store.read_all()] == ["order-1"]
            await store.close()
            assert not conn.closed, "eskit never closes the caller's connection"

    asyncio.run(run())


def test_an_async_store_on_a_sqlalchemy_engine_or_connection(postgres_dsn: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        schema = new_schema_name()
        engine = create_async_engine(
            postgres_dsn.replace("postgresql://", "postgresql+psycopg://", 1), pool_size=2
        )
        try:
            store = await AsyncPostgresEventStore.from_sqlalchemy(engine, schema=schema)
            for n in range(3):
                await store.append(f"s-{n}", [NewEvent("E")], 0)  # each its own transaction
            assert len([e async for e in store.read_all()]) == 3
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                assert raw.driver_connection.autocommit is False, "handed back as it was"
            async with engine.connect() as conn:
                on_conn = await AsyncPostgresEventStore.from_sqlalchemy(conn, schema=schema)
                await conn.execute(text(f'CREATE TABLE "{schema}".orders (id text)'))
                await on_conn.append("joined", [NewEvent("E")], 0)
                assert await store.read_stream("joined") == []
                await conn.commit()
                await on_conn.close()
            assert len(await store.read_stream("joined")) == 1
            await store.close()
        finally:
            await engine.dispose()

    asyncio.run(run())
