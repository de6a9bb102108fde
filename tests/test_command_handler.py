"""CommandHandler / AsyncCommandHandler: load, fold, decide, append, retry, on every store."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    CommandHandler,
    CommandRetriesExhausted,
    EventStore,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    Retry,
    SQLiteEventStore,
    decider,
)
from eskit.aio import (
    AsyncCommandHandler,
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncSQLiteEventStore,
)
from tests.command_model import (
    Balance,
    Deposit,
    Deposited,
    Interfered,
    OverLimit,
    account,
    handle_in_process,
    stream_of,
)
from tests.conftest import new_schema_name

FAST = Retry(max_attempts=50, first_delay=0.0005, max_delay=0.01)


# -- stores: a sync store, or an async one with a sync writer beside it -----------------


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_sync(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> EventStore:
    if kind == "memory":
        return InMemoryEventStore()
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db")
    from eskit.stores.postgres import PostgresEventStore

    return PostgresEventStore(request.getfixturevalue("postgres_dsn"), schema=new_schema_name())


@pytest.fixture
def store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EventStore]:
    s = open_sync(kind, tmp_path, request)
    yield s
    s.close()


@dataclass
class AsyncBackend:
    """An async store and a sync store over the same events (the 'other writer')."""

    open: Callable[[], Awaitable[AsyncEventStore]]
    other_writer: EventStore


@pytest.fixture
def backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AsyncBackend]:
    if kind == "memory":
        sync = InMemoryEventStore()

        async def open_memory() -> AsyncEventStore:
            return AsyncInMemoryEventStore.from_sync(sync)

        yield AsyncBackend(open_memory, sync)
        return
    if kind == "sqlite":
        path = tmp_path / "events.db"
        sync_sqlite = SQLiteEventStore(path)
        yield AsyncBackend(lambda: AsyncSQLiteEventStore.open(path), sync_sqlite)
        sync_sqlite.close()
        return
    from eskit.aio import AsyncPostgresEventStore
    from eskit.stores.postgres import PostgresEventStore

    dsn, schema = request.getfixturevalue("postgres_dsn"), new_schema_name()
    sync_pg = PostgresEventStore(dsn, schema=schema)

    async def open_postgres() -> AsyncEventStore:
        return await AsyncPostgresEventStore.open(dsn, schema=schema)

    yield AsyncBackend(open_postgres, sync_pg)
    sync_pg.close()


def interfering(writer: EventStore, times: int | None = None) -> Any:
    """The account decider, but another writer appends to the stream during each decide."""
    calls = {"n": 0}

    def decide(command: Deposit, state: Balance) -> list[object]:
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            writer.append(command.account_id, [Interfered()])
        return account.decide(command, state)

    return decider(decide, account.evolve, account.initial_state), calls


# -- sync ------------------------------------------------------------------------------


def test_handle_appends_the_decided_events_and_returns_the_new_state(store: EventStore) -> None:
    handler = CommandHandler(store, account, stream_id_of=stream_of)
    first = handler.handle(Deposit("acc-1", 10))
    second = handler.handle(Deposit("acc-1", 5))
    assert (first.state, first.version, first.attempts) == (Balance(10, 1), 1, 1)
    assert (second.state, second.version) == (Balance(15, 2), 2)
    assert second.appended is not None
    assert [e.to_domain() for e in second.events] == [Deposited(5)]
    assert [e.version for e in store.read_stream("acc-1")] == [1, 2]
    assert handler.state("acc-1") == Balance(15, 2)
    assert handler.state("acc-unknown") == Balance()


def test_an_empty_decision_appends_nothing(store: EventStore) -> None:
    handler = CommandHandler(store, account, stream_id_of=stream_of)
    handler.handle(Deposit("acc-1", 10))
    position = store.head_position()
    nothing = handler.handle(Deposit("acc-1", 0))
    assert nothing.appended is None
    assert nothing.events == ()
    assert (nothing.state, nothing.version) == (Balance(10, 1), 1)
    assert store.head_position() == position


def test_a_refused_command_raises_its_own_error_once_and_writes_nothing(store: EventStore) -> None:
    calls = []

    def decide(command: Deposit, state: Balance) -> list[object]:
        calls.append(command)
        return account.decide(command, state)

    handler = CommandHandler(store, decider(decide, account.evolve, Balance()),
                             stream_id_of=stream_of, retry=FAST)
    with pytest.raises(OverLimit):
        handler.handle(Deposit("acc-1", 5000))
    assert len(calls) == 1
    assert store.read_stream("acc-1") == []


def test_a_conflict_reruns_the_command_on_the_fresh_stream(store: EventStore) -> None:
    racing, calls = interfering(store, times=2)
    handler = CommandHandler(store, racing, stream_id_of=stream_of, retry=FAST)
    handled = handler.handle(Deposit("acc-1", 7))
    assert handled.attempts == 3
    assert calls["n"] == 3
    types = [e.event_type for e in store.read_stream("acc-1")]
    assert types == ["cmd-test.Interfered", "cmd-test.Interfered", "cmd-test.Deposited"]
    assert (handled.state, handled.version) == (Balance(7, 1), 3)


def test_endless_conflicts_end_in_command_retries_exhausted_with_nothing_of_the_command_written(
    store: EventStore,
) -> None:
    racing, calls = interfering(store)
    handler = CommandHandler(store, racing, stream_id_of=stream_of,
                             retry=Retry(max_attempts=3, first_delay=0))
    with pytest.raises(CommandRetriesExhausted) as raised:
        handler.handle(Deposit("acc-1", 7))
    assert raised.value.attempts == 3
    assert calls["n"] == 3
    assert raised.value.last_conflict.stream_id == "acc-1"
    assert {e.event_type for e in store.read_stream("acc-1")} == {"cmd-test.Interfered"}


def test_metadata_lands_on_every_event_and_an_events_own_keys_win(store: EventStore) -> None:
    untyped = decider(
        lambda c, s: [NewEvent("Noted", {"n": 1}, metadata={"user": "own"}), NewEvent("Noted")],
        lambda s, e: s + 1, 0,
    )
    handler = CommandHandler(store, untyped, stream_id_of=lambda c: "notes")
    handler.handle("note", metadata={"user": "ann", "correlation_id": "c-1"})
    typed = CommandHandler(store, account, stream_id_of=stream_of)
    typed.handle(Deposit("acc-1", 1), metadata={"user": "bob"})
    assert [e.metadata for e in store.read_stream("notes")] == [
        {"user": "own", "correlation_id": "c-1"}, {"user": "ann", "correlation_id": "c-1"},
    ]
    [deposited] = store.read_stream("acc-1")
    assert deposited.metadata == {"user": "bob"}
    assert deposited.to_domain() == Deposited(1)


def test_an_untyped_decider_evolves_over_the_stored_events(store: EventStore) -> None:
    texts = decider(
        lambda c, s: [NewEvent("Noted", {"text": c})],
        lambda s, e: (*s, e.event_data["text"]), (),
    )
    handler = CommandHandler(store, texts, stream_id_of=lambda c: "notes")
    handler.handle("a")
    assert handler.handle("b").state == ("a", "b")


def test_a_decision_that_is_not_a_list_of_events_is_refused_before_any_write(
    store: EventStore,
) -> None:
    for bad in (None, "Deposited", {"amount": 1}, [object()]):
        broken = decider(lambda c, s, bad=bad: bad, account.evolve, Balance())
        with pytest.raises(InvalidInputError):
            CommandHandler(store, broken, stream_id_of=stream_of).handle(Deposit("acc-1", 1))
    assert store.head_position() == 0


def test_handler_arguments_are_checked_when_it_is_made(store: EventStore) -> None:
    with pytest.raises(InvalidInputError, match="EventStore"):
        CommandHandler("store", account, stream_id_of=stream_of)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="stream_id_of"):
        CommandHandler(store, account, stream_id_of="acc-1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Retry"):
        CommandHandler(store, account, stream_id_of=stream_of, retry=5)  # type: ignore[arg-type]


def test_racing_threads_on_one_stream_each_apply_exactly_once_thanks_to_retries(
    store: EventStore,
) -> None:
    threads_count = 8
    # Every thread's first decision waits for all the others: they all decide on the
    # same version, so all but one must conflict and retry.
    barrier = threading.Barrier(threads_count, timeout=20)
    first_try = threading.local()

    def decide(command: Deposit, state: Balance) -> list[object]:
        if not getattr(first_try, "done", False):
            first_try.done = True
            barrier.wait()
        return account.decide(command, state)

    handler = CommandHandler(store, decider(decide, account.evolve, Balance()),
                             stream_id_of=stream_of, retry=FAST)
    attempts: list[int] = []
    errors: list[BaseException] = []

    def run(amount: int) -> None:
        try:
            attempts.append(handler.handle(Deposit("shared", amount)).attempts)
        except BaseException as exc:  # reported below, never lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(1, threads_count + 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    events = store.read_stream("shared")
    assert sorted(e.to_domain().amount for e in events) == list(range(1, threads_count + 1))
    assert [e.version for e in events] == list(range(1, threads_count + 1))
    assert handler.state("shared") == Balance(sum(range(1, threads_count + 1)), threads_count)
    assert sum(attempts) >= 2 * threads_count - 1  # the race really happened


@pytest.mark.parametrize("durable", ["sqlite", "postgres"])
def test_racing_processes_on_one_stream_each_apply_exactly_once(
    durable: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from eskit.stores.postgres import PostgresEventStore

    processes, commands = 3, 5
    schema = new_schema_name()
    if durable == "sqlite":
        where = str(tmp_path / "events.db")
        SQLiteEventStore(where).close()  # the schema exists before the workers race
    else:
        where = request.getfixturevalue("postgres_dsn")
        PostgresEventStore(where, schema=schema).close()
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    workers = [
        spawn.Process(target=handle_in_process,
                      args=(durable, where, schema, n, commands, results))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [error for _, _, error in reports] == [None] * processes
    assert all(len(attempts) == commands for _, attempts, _ in reports)
    with SQLiteEventStore(where) if durable == "sqlite" else PostgresEventStore(
        where, schema=schema
    ) as store:
        events = store.read_stream("shared")
    done = sorted(e.metadata["command"] for e in events)
    assert done == sorted(f"{w}-{i}" for w in range(processes) for i in range(commands))
    assert [e.version for e in events] == list(range(1, processes * commands + 1))


# -- async -----------------------------------------------------------------------------


async def _opened(backend: AsyncBackend) -> AsyncIterator[AsyncEventStore]:
    store = await backend.open()
    try:
        yield store
    finally:
        await store.close()


def test_async_handle_appends_decides_and_skips_empty_decisions(backend: AsyncBackend) -> None:
    async def main() -> None:
        async for store in _opened(backend):
            handler = AsyncCommandHandler(store, account, stream_id_of=stream_of)
            first = await handler.handle(Deposit("acc-1", 10))
            nothing = await handler.handle(Deposit("acc-1", 0))
            second = await handler.handle(Deposit("acc-1", 5), metadata={"user": "ann"})
            assert (first.state, first.version) == (Balance(10, 1), 1)
            assert nothing.appended is None
            assert nothing.version == 1
            assert (second.state, second.version) == (Balance(15, 2), 2)
            stored = await store.read_stream("acc-1")
            assert [e.metadata for e in stored] == [{}, {"user": "ann"}]
            assert await handler.state("acc-1") == Balance(15, 2)
            with pytest.raises(OverLimit):
                await handler.handle(Deposit("acc-1", 5000))
            assert len(await store.read_stream("acc-1")) == 2

    asyncio.run(main())


def test_async_conflicts_are_retried_then_exhausted(backend: AsyncBackend) -> None:
    async def main() -> None:
        async for store in _opened(backend):
            racing, calls = interfering(backend.other_writer, times=2)
            handler = AsyncCommandHandler(store, racing, stream_id_of=stream_of, retry=FAST)
            handled = await handler.handle(Deposit("acc-1", 7))
            assert handled.attempts == 3
            assert (handled.state, handled.version) == (Balance(7, 1), 3)

            endless, calls = interfering(backend.other_writer)
            handler = AsyncCommandHandler(
                store, endless, stream_id_of=stream_of, retry=Retry(max_attempts=2, first_delay=0)
            )
            with pytest.raises(CommandRetriesExhausted) as raised:
                await handler.handle(Deposit("acc-2", 7))
            assert raised.value.attempts == 2
            assert calls["n"] == 2
            types = {e.event_type for e in await store.read_stream("acc-2")}
            assert types == {"cmd-test.Interfered"}

    asyncio.run(main())


def test_async_racing_tasks_on_one_stream_each_apply_exactly_once(backend: AsyncBackend) -> None:
    tasks = 10

    async def main() -> None:
        async for store in _opened(backend):
            handler = AsyncCommandHandler(store, account, stream_id_of=stream_of, retry=FAST)
            results = await asyncio.gather(
                *(handler.handle(Deposit("shared", n)) for n in range(1, tasks + 1))
            )
            events = await store.read_stream("shared")
            assert sorted(e.to_domain().amount for e in events) == list(range(1, tasks + 1))
            assert [e.version for e in events] == list(range(1, tasks + 1))
            assert sorted(r.version for r in results) == list(range(1, tasks + 1))

    asyncio.run(main())


def test_async_handler_refuses_a_sync_store() -> None:
    with pytest.raises(InvalidInputError, match="AsyncEventStore"):
        AsyncCommandHandler(InMemoryEventStore(), account,  # type: ignore[arg-type]
                            stream_id_of=stream_of)
