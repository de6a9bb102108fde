"""Native asyncio tests of the async stores: tasks, async iteration, PostgreSQL specifics.

The contract itself runs in test_async_contract.py; these tests check what only
shows up when many tasks share one loop, and the async API's own surface.
"""

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import eskit.aio
from eskit import (
    ANY,
    ConcurrencyError,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    StoreError,
)
from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncSQLiteEventStore
from tests.aio.conftest import OpenStore
from tests.conftest import new_schema_name


def _new(**data: Any) -> NewEvent:
    return NewEvent("Happened", data)


def test_public_async_api_is_exactly_the_pinned_list() -> None:
    assert eskit.aio.__all__ == [
        "AsyncCommandHandler", "AsyncEventStore", "AsyncInMemoryEventStore",
        "AsyncInMemorySnapshotStore",
        "AsyncPostgresEventStore", "AsyncPostgresSnapshotStore", "AsyncProcessManager",
        "AsyncProjectionRunner",
        "AsyncRepository",
        "AsyncSQLiteEventStore", "AsyncSQLiteSnapshotStore", "AsyncSnapshotStore",
        "AsyncSubscription", "open_store", "rebuild", "retry",
    ]
    for name in eskit.aio.__all__:
        assert getattr(eskit.aio, name).__name__ == name


def test_importing_eskit_aio_needs_no_database_driver() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"  # any import of psycopg now fails
        "sys.modules['psycopg_pool'] = None\n"
        "import eskit.aio\n"
        "assert eskit.aio.AsyncSQLiteEventStore and eskit.aio.AsyncRepository\n"
        "try:\n"
        "    eskit.aio.AsyncPostgresEventStore\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lazy"


# -- same checks, same errors -------------------------------------------------------------

BAD_CALLS = [
    ("append", (42, [_new()], ANY), {}),
    ("append", ("", [_new()], ANY), {}),
    ("append", ("s", [], ANY), {}),
    ("append", ("s", "not events", ANY), {}),
    ("append", ("s", [_new(x=object())], 0), {}),
    ("append", ("s", [_new()], -1), {}),
    ("append", ("s", [_new()], True), {}),
    ("append", ("s", [NewEvent("", {})], 0), {}),
    ("read_stream", ("s", -1), {}),
    ("read_stream", ("s",), {"backwards": "yes"}),
    ("read_stream", ("s",), {"limit": 1.5}),
    ("head_version", (None,), {}),
]


@pytest.mark.parametrize(
    ("method", "args", "kwargs"), BAD_CALLS, ids=[f"{m}-{i}" for i, (m, _, _) in
                                               enumerate(BAD_CALLS)],
)
def test_bad_input_raises_the_same_error_as_the_sync_store(
    open_store: OpenStore, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as sync_error:
        getattr(InMemoryEventStore(), method)(*args, **kwargs)

    async def main() -> None:
        store = await open_store()
        try:
            with pytest.raises(InvalidInputError) as async_error:
                await getattr(store, method)(*args, **kwargs)
            assert type(async_error.value) is type(sync_error.value)
            assert str(async_error.value) == str(sync_error.value)
            assert await store.head_position() == 0
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("kwargs", [{"from_position": -1}, {"from_position": None},
                                    {"limit": -2}])
def test_read_all_rejects_bad_arguments_at_the_call_not_at_iteration(
    kwargs: dict[str, Any]
) -> None:
    store = AsyncInMemoryEventStore()
    with pytest.raises(InvalidInputError):
        store.read_all(**kwargs)


# -- async iteration ----------------------------------------------------------------------


def test_read_all_iterates_in_global_order_across_pages(open_store: OpenStore) -> None:
    async def main() -> None:
        store = await open_store()
        try:
            appended: list[Any] = []
            for i in range(12):  # 1200 events: more than one page of 1000
                result = await store.append(f"s-{i % 3}", [_new(i=i, n=n) for n in range(100)])
                appended += result.events
            read = [e async for e in store.read_all()]
            assert [e.event_id for e in read] == [e.event_id for e in appended]
            positions = [e.position or 0 for e in read]
            assert positions == sorted(set(positions))
            assert await store.head_position() == positions[-1]

            checkpoint = positions[1049]
            after = [e.event_id async for e in store.read_all(checkpoint, limit=100)]
            assert after == [e.event_id for e in appended[1050:1150]]
        finally:
            await store.close()

    asyncio.run(main())


def test_read_all_fetches_pages_only_as_the_loop_advances() -> None:
    async def main() -> None:
        store = AsyncInMemoryEventStore()
        await store.append("s", [_new(n=n) for n in range(1500)])
        calls: list[int] = []
        original = store._read_all_page

        async def counting(after: int, limit: int) -> list[Any]:
            calls.append(after)
            return await original(after, limit)

        store._read_all_page = counting  # type: ignore[method-assign]
        events = store.read_all()
        assert calls == [], "nothing is read before the first iteration"
        first = await anext(events)
        assert first.version == 1
        assert calls == [0]
        rest = [e async for e in events]
        assert len(rest) == 1499
        assert calls == [0, 1000]

    asyncio.run(main())


# -- many tasks, one stream ---------------------------------------------------------------


def test_tasks_racing_on_one_stream_get_exactly_one_winner_per_version(
    open_durable_store: OpenStore,
) -> None:
    tasks, rounds = 8, 12

    async def main() -> None:
        store = await open_durable_store()
        read_heads = asyncio.Barrier(tasks)
        appended = asyncio.Barrier(tasks)
        wins: list[int] = []
        losses: list[ConcurrencyError] = []  # any other error fails gather() below

        async def writer() -> None:
            for _ in range(rounds):
                head = await store.head_version("race")
                await read_heads.wait()  # every task now expects the same version
                try:
                    await store.append("race", [_new(head=head)], head)
                except ConcurrencyError as exc:
                    losses.append(exc)
                else:
                    wins.append(head + 1)
                await appended.wait()

        try:
            await asyncio.gather(*(writer() for _ in range(tasks)))
            versions = [e.version for e in await store.read_stream("race")]
        finally:
            await store.close()
        assert sorted(wins) == versions == list(range(1, rounds + 1))
        assert len(losses) == rounds * (tasks - 1)
        assert sorted(e.actual_version for e in losses) == sorted(
            v for v in versions for _ in range(tasks - 1)
        ), "each loser lost to the winner of its own round"

    asyncio.run(main())


def test_tasks_appending_with_any_all_land_at_distinct_versions(
    open_durable_store: OpenStore,
) -> None:
    async def main() -> None:
        store = await open_durable_store()

        async def writer(n: int) -> list[int]:
            return [
                (await store.append("busy", [_new(n=n, i=i)], ANY)).version for i in range(10)
            ]

        try:
            results = await asyncio.gather(*(writer(n) for n in range(8)))
            stored = await store.read_stream("busy")
        finally:
            await store.close()
        assert sorted(v for r in results for v in r) == list(range(1, 81))
        assert [e.version for e in stored] == list(range(1, 81))
        for n in range(8):
            mine = [e.event_data["i"] for e in stored if e.event_data["n"] == n]
            assert mine == list(range(10)), "each task's appends keep their order"

    asyncio.run(main())


# -- the wrapped sync stores ---------------------------------------------------------------


def test_sync_and_async_faces_of_one_sqlite_store_see_the_same_events(tmp_path: Path) -> None:
    sync_store = SQLiteEventStore(tmp_path / "events.db")
    store = AsyncSQLiteEventStore.from_sync(sync_store)

    async def main() -> None:
        await store.append("s", [_new(n=1)], 0)
        sync_store.append("s", [_new(n=2)], 1)
        assert [e.event_data["n"] for e in await store.read_stream("s")] == [1, 2]
        await store.close()

    asyncio.run(main())
    assert store.path == sync_store.path
    with pytest.raises(StoreError):
        sync_store.read_stream("s")


def test_async_sqlite_store_opens_an_existing_file_without_creating(tmp_path: Path) -> None:
    path = tmp_path / "events.db"

    async def main() -> None:
        with pytest.raises(eskit.NotAnEskitStoreError):
            await AsyncSQLiteEventStore.open(path, create=False)
        async with AsyncSQLiteEventStore(path) as store:
            await store.append("s", [_new()], 0)
        async with await AsyncSQLiteEventStore.open(path, create=False) as store:
            assert await store.head_version("s") == 1

    asyncio.run(main())


# -- PostgreSQL ---------------------------------------------------------------------------


def test_postgres_store_rejects_bad_construction_arguments() -> None:
    from psycopg_pool import ConnectionPool

    from eskit.aio import AsyncPostgresEventStore

    with pytest.raises(InvalidInputError, match="exactly one"):
        AsyncPostgresEventStore()
    with pytest.raises(InvalidInputError, match="AsyncConnectionPool"):
        AsyncPostgresEventStore(pool=ConnectionPool("", open=False))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="schema"):
        AsyncPostgresEventStore("postgresql://", schema="bad-name")


def test_sync_and_async_postgres_stores_share_one_schema(postgres_dsn: str) -> None:
    from eskit.aio import AsyncPostgresEventStore
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()

    async def main() -> None:
        async with AsyncPostgresEventStore(postgres_dsn, schema=schema) as store:
            await store.setup()  # idempotent: connect() already ran it
            await store.append("s", [_new(n=1)], 0)
            with PostgresEventStore(postgres_dsn, schema=schema) as sync_store:
                sync_store.append("s", [_new(n=2)], 1)
                assert sync_store.read_stream("s") == await store.read_stream("s")
                assert [e async for e in store.read_all()] == list(sync_store.read_all())
            assert await store.head_version("s") == 2

    asyncio.run(main())


def test_postgres_store_leaves_a_borrowed_pool_open(postgres_dsn: str) -> None:
    from psycopg_pool import AsyncConnectionPool

    from eskit.aio import AsyncPostgresEventStore

    async def main() -> None:
        async with AsyncConnectionPool(
            postgres_dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
        ) as pool:
            store = await AsyncPostgresEventStore.open(pool=pool, schema=new_schema_name())
            await store.append("s", [_new()], 0)
            await store.close()
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")

    asyncio.run(main())


def test_postgres_errors_are_translated_to_store_errors(postgres_dsn: str) -> None:
    from eskit.aio import AsyncPostgresEventStore

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        await store.close()
        with pytest.raises(StoreError):
            await store.append("s", [_new()], 0)

    asyncio.run(main())


def test_read_all_does_not_skip_an_event_committed_late(postgres_dsn: str) -> None:
    """A slow transaction that began first holds readers back instead of being skipped."""
    import psycopg

    from eskit.aio import AsyncPostgresEventStore
    from eskit.stores.arguments import prepare_batch
    from eskit.stores.postgres_schema import append_params

    schema = new_schema_name()

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=schema)
        slow = await psycopg.AsyncConnection.connect(postgres_dsn)  # not autocommit
        try:
            # The slow writer inserts first (lower transaction id) but commits last.
            batch = prepare_batch("slow", [_new(who="slow")], registry=store.registry,
                                  max_event_bytes=store.max_event_bytes)
            await slow.execute(store.sql.append, append_params("slow", 0, batch))
            fast = await store.append("fast", [_new(who="fast")], 0)
            assert await store.oldest_transaction_age() >= 0
            assert [e async for e in store.read_all()] == [], "fast waits behind slow"
            assert await store.head_position() == 0
            assert await store.wait_for(fast.position, timeout=0.02) is False
            await slow.commit()
            assert await store.wait_for(fast.position, timeout=5) is True
            read = [e.event_data["who"] async for e in store.read_all()]
            assert read == ["slow", "fast"]
        finally:
            await slow.close()
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("expected", ["ANY", "STREAM_EXISTS"])
def test_unconditional_appends_never_conflict_with_24_tasks_on_one_stream(
    postgres_dsn: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the sync store: a retry holds the stream's lock, so one retry is enough."""
    import eskit
    import eskit.aio.postgres as module
    from eskit.aio import AsyncPostgresEventStore

    monkeypatch.setattr(module, "MAX_APPEND_ATTEMPTS", 2)
    expectation = getattr(eskit, expected)

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(
            postgres_dsn, schema=new_schema_name(), pool_size=24
        )
        try:
            await store.append("race", [_new()], 0)
            wrong: list[ConcurrencyError] = []

            async def unconditional() -> None:
                for _ in range(25):
                    await store.append("race", [_new(), _new()], expectation)

            async def exact_version() -> int:
                won = 0
                for _ in range(25):
                    head = await store.head_version("race")
                    try:
                        await store.append("race", [_new()], head)
                        won += 1
                    except ConcurrencyError as exc:
                        wrong.extend([exc] if exc.expected_version != head else [])
                return won

            results = await asyncio.wait_for(
                asyncio.gather(
                    *(unconditional() for _ in range(20)), *(exact_version() for _ in range(4))
                ),
                timeout=120,
            )
            won = sum(r for r in results if r is not None)
            assert wrong == []
            versions = [e.version for e in await store.read_stream("race")]
            assert versions == list(range(1, 2 + 20 * 25 * 2 + won))
        finally:
            await store.close()

    asyncio.run(main())


def test_an_idle_transaction_holding_an_id_does_not_delay_async_readers(
    postgres_dsn: str,
) -> None:
    """Only transactions that append hold the horizon back (schema version 3)."""
    import psycopg

    from eskit.aio import AsyncPostgresEventStore

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        elsewhere = psycopg.conninfo.make_conninfo(postgres_dsn, dbname="postgres")
        idle = [
            await psycopg.AsyncConnection.connect(postgres_dsn),
            await psycopg.AsyncConnection.connect(elsewhere),
        ]
        try:
            for conn in idle:
                await conn.execute("SELECT pg_current_xact_id()")  # held, idle
            result = await store.append("after", [_new()], 0)
            assert await store.head_position() == result.position
            assert [e.aggregate_id async for e in store.read_all()] == ["after"]
            assert await store.wait_for(result.position, timeout=0) is True
            assert await store.oldest_transaction_age() == 0
        finally:
            for conn in idle:
                await conn.close()
            await store.close()

    asyncio.run(main())


def test_async_event_store_is_abstract() -> None:
    with pytest.raises(TypeError):
        AsyncEventStore()  # type: ignore[abstract]


def test_uuid_stream_ids_come_back_as_uuids_and_seed_names_work(open_store: OpenStore) -> None:
    sid = uuid.uuid4()

    async def main() -> None:
        store = await open_store()
        try:
            await store.append(sid, [_new()], 0)
            assert (await store.read_stream(str(sid)))[0].version == 1, "a UUID's text too"
            assert [e.aggregate_id async for e in store.read_all()] == [sid]
            assert [s.stream_id for s in await store.list_streams()] == [sid]
            assert (await store.get_events(sid))[0].version == 1
            await store.save_events(sid, [_new()], 1)
            with pytest.raises(ValueError, match="concurrent"):
                await store.save_events(sid, [_new()], 1)
        finally:
            await store.close()

    asyncio.run(main())
