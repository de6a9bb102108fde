"""AsyncProjectionRunner: the sync runner's guarantees, reading from an async store.

Mirrors test_runner.py, test_failures.py and test_partitions.py on SQLite and
PostgreSQL (the ``backend`` fixture): the store is the backend's, opened for
asyncio; the target and the projection are the very same.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from eskit import InvalidInputError, NewEvent
from eskit.aio import AsyncEventStore, AsyncInMemoryEventStore, AsyncProjectionRunner
from eskit.projections import InMemoryTarget, ProjectionFailed, RetryPolicy, retry_parked
from tests.projections.helpers import Counter, added
from tests.projections.test_failures import Cured
from tests.projections.test_partitions import InOrder, _fill, _rows
from tests.projections.test_runner import Totals

FAST = RetryPolicy(max_attempts=3, backoff=0.001)


async def _open(backend) -> AsyncEventStore:
    if backend.kind == "sqlite":
        from eskit.aio import AsyncSQLiteEventStore

        return AsyncSQLiteEventStore.from_sync(backend.store)
    from eskit.aio import AsyncPostgresEventStore

    return await AsyncPostgresEventStore.open(backend.dsn, schema=backend.schema)


def _run(backend, body: Callable[[AsyncEventStore], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        store = await _open(backend)
        try:
            return await body(store)
        finally:
            if backend.kind == "postgres":  # the SQLite one is the backend's own
                await store.close()

    return asyncio.run(run())


def test_async_projection_handles_every_event_once_and_stores_its_checkpoint(backend) -> None:
    backend.store.append("a", [added(1), added(2)])
    backend.store.append("b", [added(5), NewEvent("Ignored")])

    async def body(store: AsyncEventStore) -> int:
        runner = AsyncProjectionRunner(store, Counter(), backend.target, batch_size=2)
        return await runner.run_until_caught_up()

    assert _run(backend, body) == 3
    assert backend.read_counts() == {"a": (2, 3), "b": (1, 5)}
    (state,) = backend.target.states("counter")
    assert state.position == backend.store.head_position()  # moved past the ignored event
    assert state.events_handled == 3


def test_a_restarted_async_runner_continues_after_its_checkpoint_without_repeating(
    backend,
) -> None:
    backend.store.append("a", [added(1)])

    async def body(store: AsyncEventStore) -> int:
        await AsyncProjectionRunner(store, Counter(), backend.target).run_until_caught_up()
        await store.append("a", [added(10)])
        target = backend.new_target()
        try:
            return await AsyncProjectionRunner(store, Counter(), target).run_until_caught_up()
        finally:
            target.close()

    assert _run(backend, body) == 1
    assert backend.read_counts() == {"a": (2, 11)}


def test_two_async_runners_of_one_projection_never_handle_an_event_twice(backend) -> None:
    for i in range(40):
        backend.store.append(f"s{i % 5}", [added(1) for _ in range(5)])

    async def body(store: AsyncEventStore) -> list[int]:
        targets = [backend.new_target(), backend.new_target()]
        try:
            runners = [AsyncProjectionRunner(store, Counter(), t, batch_size=7) for t in targets]
            return await asyncio.gather(*(r.run_until_caught_up() for r in runners))
        finally:
            for t in targets:
                t.close()

    handled = _run(backend, body)
    assert sum(handled) == 200
    assert sum(n for n, _ in backend.read_counts().values()) == 200


def test_live_async_runner_misses_nothing_while_tasks_append_concurrently(backend) -> None:
    async def body(store: AsyncEventStore) -> None:
        runner = AsyncProjectionRunner(store, Counter(), backend.target, poll_interval=30,
                                       batch_size=50)
        follower = asyncio.create_task(runner.run())

        async def write(worker: int) -> int:
            position = 0
            for i in range(25):
                position = (await store.append(f"w{worker}", [added(i)])).position
            return position

        last = max(await asyncio.gather(*(write(w) for w in range(4))))
        # Woken by the appends (a 30 s poll would time this out).
        assert await runner.wait_for(last, timeout=20)
        runner.stop()
        await asyncio.wait_for(follower, 10)

    _run(backend, body)
    assert backend.read_counts() == {f"w{w}": (25, sum(range(25))) for w in range(4)}
    (state,) = backend.target.states("counter")
    assert state.position == backend.store.head_position()


def test_a_poison_event_stops_the_async_projection_after_its_retries(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])

    async def body(store: AsyncEventStore) -> None:
        runner = AsyncProjectionRunner(store, Counter(), backend.target, retry=FAST)
        with pytest.raises(ProjectionFailed) as failed:
            await runner.run_until_caught_up()
        assert failed.value.event.event_type == "Poison"

    _run(backend, body)
    assert backend.read_counts() == {"a": (1, 1)}
    (state,) = backend.target.states("counter")
    assert "attempt 3 of 3" in state.last_error


def test_a_poison_event_is_parked_by_the_async_runner_and_the_rest_proceeds(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    backend.store.append("b", [added(5)])

    async def body(store: AsyncEventStore) -> int:
        runner = AsyncProjectionRunner(store, Counter(), backend.target, retry=FAST,
                                       on_failure="park")
        return await runner.run_until_caught_up()

    assert _run(backend, body) == 3
    assert backend.read_counts() == {"a": (2, 3), "b": (1, 5)}
    (letter,) = backend.target.dead_letters("counter")
    assert (letter.stream_id, letter.event_type, letter.attempts) == ("a", "Poison", 3)
    (state,) = backend.target.states("counter")
    assert state.position == backend.store.head_position()
    assert state.last_error is None  # cleared once past the parked event


def test_with_parked_streams_wait_the_async_runner_keeps_a_stream_in_order(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison", {"amount": 7}), added(2)])
    backend.store.append("b", [added(5)])

    async def body(store: AsyncEventStore) -> None:
        await AsyncProjectionRunner(
            store, Counter(), backend.target, retry=FAST, on_failure="park",
            parked_streams="wait",
        ).run_until_caught_up()

    _run(backend, body)
    assert backend.read_counts() == {"a": (1, 1), "b": (1, 5)}
    letters = backend.target.dead_letters("counter")
    assert [d.event_type for d in letters] == ["Poison", "Added"]
    assert "waiting" in letters[1].error
    assert len(retry_parked(backend.store, Cured(), backend.target)) == 2
    assert backend.read_counts() == {"a": (3, 10), "b": (1, 5)}


def test_two_async_partitions_split_the_streams_and_keep_each_in_order(backend) -> None:
    _fill(backend.store)

    async def body(store: AsyncEventStore) -> list[int]:
        targets = [backend.new_target(), backend.new_target()]
        try:
            runners = [
                AsyncProjectionRunner(store, InOrder(), t, partition=p, partitions=2,
                                      batch_size=25)
                for p, t in enumerate(targets)
            ]
            return await asyncio.gather(*(r.run_until_caught_up() for r in runners))
        finally:
            for t in targets:
                t.close()

    handled = _run(backend, body)
    assert sum(handled) == 240
    assert all(n > 0 for n in handled)
    assert _rows(backend.target) == {f"p{s}": (20, 20) for s in range(12)}
    assert len(backend.target.states("in_order")) == 2


def test_async_runner_on_an_in_memory_target_keeps_python_read_models() -> None:
    async def run() -> tuple[int, list[int]]:
        store = AsyncInMemoryEventStore()
        await store.append("x", [added(3), added(4)])
        projection, target = Totals(), InMemoryTarget()
        runner = AsyncProjectionRunner(store, projection, target)
        await runner.run_until_caught_up()
        await store.append("x", [added(5)])
        await runner.run_until_caught_up()
        return projection.total, [s.position for s in target.states()]

    assert asyncio.run(run()) == (12, [3])


def test_async_runner_rejects_bad_arguments_before_any_io() -> None:
    store, target = AsyncInMemoryEventStore(), InMemoryTarget()
    for bad in ({"batch_size": 0}, {"partition": 2, "partitions": 2},
                {"on_failure": "ignore"}, {"parked_streams": "skip"}):
        with pytest.raises(InvalidInputError):
            AsyncProjectionRunner(store, Counter(), target, **bad)
    assert target.states() == []


def test_async_rebuild_swaps_in_a_complete_read_model_and_live_runners_continue(
    backend,
) -> None:
    from eskit.aio import rebuild
    from eskit.projections import Tx, skip_parked
    from tests.projections.helpers import counts

    for i in range(20):
        backend.store.append(f"s{i % 4}", [added(1) for _ in range(5)])
    backend.store.append("bad", [NewEvent("Poison")])

    async def body(store: AsyncEventStore) -> tuple[int, list[int]]:
        live = AsyncProjectionRunner(store, Counter(), backend.target, retry=FAST,
                                     on_failure="park")
        await live.run_until_caught_up()
        (letter,) = backend.target.dead_letters("counter")
        skip_parked(backend.target, "counter", letter.event_id)
        progress: list[int] = []
        handled = await rebuild(store, Counter(), backend.target, batch_size=15,
                                progress=lambda r: progress.append(r.read))
        await store.append("late", [added(1)])
        await live.run_until_caught_up()  # continues from the swapped-in checkpoint
        return handled, progress

    handled, progress = _run(backend, body)
    assert handled == 100  # the skipped poison event stays skipped
    assert sum(progress) >= 100
    assert sum(n for n, _ in backend.read_counts().values()) == 101
    (state,) = backend.target.states("counter")
    assert state.generation == 2
    assert [d.status for d in backend.target.dead_letters("counter", status="skipped")] == [
        "skipped"]
    with backend.target.transaction() as conn:
        tx = Tx(backend.target.dialect, conn)
        assert counts(tx, "counts_g2") == counts(tx, "counts")


def test_a_live_async_runner_resumes_exactly_after_its_postgres_connections_are_killed(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from eskit.aio import AsyncPostgresEventStore
    from eskit.projections import PostgresTarget
    from tests.conftest import new_schema_name
    from tests.projections.helpers import postgres_backend
    from tests.stores.test_postgres_connections import _named, _terminate

    dsn, app = _named(postgres_dsn)
    schema = new_schema_name()
    caplog.set_level(logging.INFO)

    async def eventually(check: Callable[[], bool]) -> None:
        deadline = asyncio.get_running_loop().time() + 20
        while not check():
            assert asyncio.get_running_loop().time() < deadline, "not reached in time"
            await asyncio.sleep(0.05)

    with postgres_backend(postgres_dsn, schema) as backend:
        target = PostgresTarget(dsn, schema=schema)  # named: its connection gets killed

        def total() -> int:
            return sum(n for n, _ in backend.read_counts().values())

        async def run() -> None:
            async with await AsyncPostgresEventStore.open(dsn, schema=schema) as store, \
                    await AsyncPostgresEventStore.open(postgres_dsn, schema=schema) as writer:
                runner = AsyncProjectionRunner(store, Counter(), target, poll_interval=30)
                await runner.setup()
                live = asyncio.create_task(runner.run())
                for i in range(3):
                    await writer.append("s", [added(i)])
                await eventually(lambda: total() == 3)
                killed = await asyncio.to_thread(_terminate, postgres_dsn, app)
                assert killed >= 3  # the store's pool, its LISTEN and the target's
                for i in range(3, 6):
                    await writer.append("s", [added(i)])
                await eventually(lambda: total() == 6)
                runner.stop()
                await asyncio.wait_for(live, 10)

        try:
            asyncio.run(run())
        finally:
            target.close()
        assert backend.read_counts() == {"s": (6, 15)}  # nothing lost, nothing twice
        (state,) = backend.target.states("counter")
        assert state.events_handled == 6


def test_async_projection_reads_only_its_types_and_checkpoints_past_the_rest(backend) -> None:
    backend.store.append("noise", [NewEvent("Ignored") for _ in range(300)])
    backend.store.append("a", [added(1)])
    last = backend.store.append("noise", [NewEvent("Ignored") for _ in range(200)])

    async def body(store: AsyncEventStore) -> list[int]:
        filtered = store._filtered_page
        sizes: list[int] = []

        async def spy(*args: Any) -> Any:
            result = await filtered(*args)
            sizes.append(len(result[0]))
            return result

        store._filtered_page = spy  # type: ignore[method-assign]
        runner = AsyncProjectionRunner(store, Counter(), backend.target, batch_size=50)
        assert await runner.run_until_caught_up() == 1
        return sizes

    # One read found the event, one proved nothing else is there (not eleven pages).
    assert _run(backend, body) == [1, 0]
    assert backend.read_counts() == {"a": (1, 1)}
    (state,) = backend.target.states("counter")
    assert state.position == last.position
