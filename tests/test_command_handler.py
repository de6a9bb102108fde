"""CommandHandler / AsyncCommandHandler beyond the shared contract (eskit.testing.command_contract).

Here: metadata, untyped deciders, malformed decisions and arguments, and processes racing.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from eskit import (
    CommandHandler,
    EventStore,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    SQLiteEventStore,
    decider,
)
from eskit.aio import AsyncCommandHandler
from tests.command_model import (
    Balance,
    Deposit,
    Deposited,
    account,
    handle_in_process,
    stream_of,
)
from tests.conftest import new_schema_name

# -- stores ---------------------------------------------------------------------------


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


# -- sync ------------------------------------------------------------------------------












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


def test_async_handler_refuses_a_sync_store() -> None:
    with pytest.raises(InvalidInputError, match="AsyncEventStore"):
        AsyncCommandHandler(InMemoryEventStore(), account,  # type: ignore[arg-type]
                            stream_id_of=stream_of)
