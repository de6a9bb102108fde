"""AsyncSubscription on every async store: catch-up then live, exact checkpoints, wake-ups.

Live tests use a 30 s poll interval, so a delivery within the test's timeout proves
that the store woke the subscription (an append through the store, a SQLite commit
by another process, a PostgreSQL NOTIFY), not a poll.
"""

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from eskit import InvalidInputError, NewEvent, SQLiteEventStore
from eskit.aio import AsyncEventStore, AsyncSQLiteEventStore, AsyncSubscription
from eskit.aio.subscription import SQLITE_CHECK_INTERVAL
from tests.aio.conftest import OpenStore
from tests.conftest import new_schema_name

LIVE = 30.0  # a poll interval no live test may rely on


def _e(n: int, event_type: str = "E") -> NewEvent:
    return NewEvent(event_type, {"n": n})


async def _take(subscription: AsyncSubscription, count: int, timeout: float = 10.0) -> list[Any]:
    async def take() -> list[Any]:
        seen: list[Any] = []
        async for event in subscription:
            seen.append(event)
            if len(seen) == count:
                subscription.stop()
        return seen

    return await asyncio.wait_for(take(), timeout)


def test_async_subscription_yields_history_then_live_events_in_order(
    open_store: OpenStore,
) -> None:
    async def run() -> None:
        async with await open_store() as store:
            await store.append("history", [_e(n) for n in range(3)], 0)
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 5))
            await asyncio.sleep(0.2)  # caught up and waiting
            await store.append("live", [_e(3)], 0)
            await asyncio.sleep(0.05)
            await store.append("live", [_e(4)], 1)
            received = await follower
            assert [e.event_data["n"] for e in received] == [0, 1, 2, 3, 4]
            assert subscription.position == received[-1].position
            assert await subscription.caught_up()

    asyncio.run(run())


def test_async_subscription_resumes_exactly_after_its_checkpoint(open_store: OpenStore) -> None:
    async def run() -> None:
        async with await open_store() as store:
            await store.append("s", [_e(n) for n in range(5)], 0)
            first = store.subscribe(page_size=2, poll_interval=LIVE)
            got = await _take(first, 2)
            resumed = await _take(store.subscribe(first.position, poll_interval=LIVE), 3)
            assert [e.event_data["n"] for e in [*got, *resumed]] == [0, 1, 2, 3, 4]

    asyncio.run(run())


def test_filtered_async_subscription_moves_its_checkpoint_past_skipped_events(
    open_store: OpenStore,
) -> None:
    async def run() -> None:
        async with await open_store() as store:
            await store.append("account-1", [_e(1, "Opened"), _e(2, "Deposited")], 0)
            await store.append("order-1", [_e(3, "Deposited")], 0)
            await store.append("account-2", [_e(4, "Opened")], 0)
            subscription = store.subscribe(
                event_types=["Deposited"], stream_prefixes=["account-"], poll_interval=LIVE
            )
            follower = asyncio.create_task(_take(subscription, 2))
            await asyncio.sleep(0.2)
            await store.append("account-1", [_e(5, "Deposited")], 2)
            got = await follower
            assert [e.event_data["n"] for e in got] == [2, 5]
            assert subscription.position == await store.head_position()

    asyncio.run(run())


def test_async_subscription_stop_ends_a_waiting_iteration_promptly(open_store: OpenStore) -> None:
    async def run() -> None:
        async with await open_store() as store:
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 1))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            subscription.stop()
            assert await asyncio.wait_for(follower, 5) == []
            assert time.monotonic() - started < 1

    asyncio.run(run())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"from_position": -1}, "position"),
        ({"page_size": 0}, "page_size"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"event_types": "Deposited"}, "event_types"),
        ({"on_undecodable": "skip"}, "on_undecodable"),
    ],
)
def test_async_subscribe_rejects_bad_arguments_before_any_io(
    arguments: dict[str, Any], message: str
) -> None:
    class Untouchable(AsyncEventStore):  # every primitive would fail the test
        def __getattribute__(self, name: str) -> Any:
            if name.startswith("_") and not name.startswith("__"):
                raise AssertionError(f"I/O before the arguments were checked: {name}")
            return super().__getattribute__(name)

    Untouchable.__abstractmethods__ = frozenset()
    with pytest.raises(InvalidInputError, match=message):
        Untouchable().subscribe(**arguments)


def test_a_sync_append_from_another_thread_wakes_an_async_subscription(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with await AsyncSQLiteEventStore.open(":memory:") as store:
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 1, timeout=5))
            await asyncio.sleep(0.2)
            writer = threading.Thread(target=store.sync_store.append, args=("s", [_e(1)], 0))
            writer.start()
            got = await follower
            writer.join()
            assert [e.event_data["n"] for e in got] == [1]

    asyncio.run(run())


_CHILD = """
import sys, time
from eskit import NewEvent, SQLiteEventStore
store = SQLiteEventStore(sys.argv[1])
for n in range(int(sys.argv[2])):
    sys.stdin.readline()
    store.append("child", [NewEvent("E", {"n": n})])
    print(time.time(), flush=True)
store.close()
"""


def test_async_sqlite_subscription_wakes_within_100_ms_of_a_commit_by_another_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).close()
    rounds = 5

    async def run() -> list[float]:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(path), str(rounds),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        delays: list[float] = []
        async with await AsyncSQLiteEventStore.open(path) as store:
            subscription = store.subscribe(poll_interval=LIVE)
            events = aiter(subscription)
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.3)  # listening, caught up
            for n in range(rounds):
                child.stdin.write(b"go\n")
                await child.stdin.drain()
                event = await asyncio.wait_for(first if n == 0 else anext(events), 5)
                received = time.time()
                committed = float(await child.stdout.readline())
                assert event.event_data["n"] == n
                delays.append(received - committed)
                await asyncio.sleep(0.13)  # land the next commit anywhere in a check interval
            subscription.stop()
            await events.aclose()  # type: ignore[attr-defined]
        assert await child.wait() == 0
        return delays

    delays = asyncio.run(run())
    print(f"cross-process wake-up delays (ms): {[round(d * 1000, 1) for d in delays]}")
    assert max(delays) < 0.1
    assert SQLITE_CHECK_INTERVAL < 0.1


# ----------------------------------------------------------------- PostgreSQL


def test_async_postgres_subscription_does_not_skip_an_event_whose_transaction_commits_late(
    postgres_dsn: str,
) -> None:
    import psycopg

    from eskit.aio import AsyncPostgresEventStore
    from eskit.stores.postgres import PostgresEventStore
    from tests.stores.test_postgres import _naive_read, _open_append

    schema = new_schema_name()
    sync = PostgresEventStore(postgres_dsn, schema=schema)

    async def run() -> None:
        async with await AsyncPostgresEventStore.open(postgres_dsn, schema=schema) as store:
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 2))
            await asyncio.sleep(0.2)
            with psycopg.connect(postgres_dsn) as slow, psycopg.connect(
                postgres_dsn, autocommit=True
            ) as naive:
                _open_append(sync, slow, "slow")  # takes its transaction id first
                await store.append("fast", [NewEvent("Fast")], 0)  # commits first
                await asyncio.sleep(0.3)  # NOTIFY for "fast" delivered, subscriber read
                naive_seen = _naive_read(naive, schema, 0)
                assert len(naive_seen) == 1, "the naive reader sees the fast event"
                assert not follower.done()
                assert subscription.position == 0
                slow.commit()
                # The slow commit sends no NOTIFY: the next append's wakes the subscriber.
                assert _naive_read(naive, schema, naive_seen[-1]) == []
            await store.append("fast", [NewEvent("Fast")], 1)
            received = await follower
            assert [e.aggregate_id for e in received] == ["slow", "fast"]
            everything = [e.event_id async for e in store.read_all()]
            assert [e.event_id for e in received] == everything[:2]

    try:
        asyncio.run(run())
    finally:
        sync.close()


def test_async_postgres_subscription_listens_again_after_its_connections_are_killed(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from eskit.aio import AsyncPostgresEventStore
    from tests.stores.test_postgres_connections import _named, _terminate

    dsn, app = _named(postgres_dsn)
    schema = new_schema_name()
    caplog.set_level(logging.INFO, logger="eskit.subscription")

    async def eventually(check: Any) -> None:
        deadline = time.monotonic() + 15
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)

    async def run() -> list[int]:
        async with await AsyncPostgresEventStore.open(dsn, schema=schema) as store, \
                await AsyncPostgresEventStore.open(postgres_dsn, schema=schema) as writer:
            subscription = store.subscribe(poll_interval=LIVE)
            received: list[int] = []

            async def follow() -> None:
                async for event in subscription:
                    received.append(event.event_data["n"])
                    if len(received) == 6:
                        subscription.stop()

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.2)
            for n in range(3):
                await writer.append("s", [_e(n)], n)
            await eventually(lambda: len(received) == 3)
            killed = await asyncio.to_thread(_terminate, postgres_dsn, app)
            assert killed >= 2  # the pool's and the LISTEN connection
            await eventually(lambda: any(
                r.levelno == logging.INFO and "LISTEN" in r.getMessage() for r in caplog.records
            ))
            for n in range(3, 6):
                await writer.append("s", [_e(n)], n)
            await asyncio.wait_for(follower, 15)
            return received

    assert asyncio.run(run()) == [0, 1, 2, 3, 4, 5]  # nothing lost, nothing twice
    ours = [r for r in caplog.records if r.name == "eskit.subscription"]
    assert any(r.levelno == logging.WARNING for r in ours)
    assert len(ours) < 6  # reconnects are logged, events are not
