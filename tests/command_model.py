"""A small decider the command-handler and repository tests share: an account with a limit."""

from __future__ import annotations

from dataclasses import dataclass

from eskit import decider, domain_event


@domain_event("cmd-test.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


@dataclass(frozen=True)
class Deposit:
    account_id: str
    amount: int


@dataclass(frozen=True)
class Balance:
    total: int = 0
    deposits: int = 0


LIMIT = 1000


class OverLimit(Exception):
    pass


def decide(command: Deposit, state: Balance) -> list[object]:
    if state.total + command.amount > LIMIT:
        raise OverLimit(f"{state.total} + {command.amount} is over {LIMIT}")
    return [Deposited(command.amount)] if command.amount else []


def evolve(state: Balance, event: object) -> Balance:
    if isinstance(event, Deposited):
        return Balance(state.total + event.amount, state.deposits + 1)
    return state


account = decider(decide, evolve, Balance())


def stream_of(command: Deposit) -> str:
    return command.account_id


def handle_in_process(kind: str, where: str, schema: str, worker: int, count: int,
                      results: object) -> None:
    """A worker process: handle ``count`` deposits on the stream "shared" and report back.

    Reports ``(worker, attempts per command, error text or None)``.
    """
    from eskit import CommandHandler, Retry
    from eskit.stores.base import EventStore

    attempts: list[int] = []
    error = None
    try:
        store: EventStore
        if kind == "sqlite":
            from eskit import SQLiteEventStore

            store = SQLiteEventStore(where)
        else:
            from eskit.stores.postgres import PostgresEventStore

            store = PostgresEventStore(where, schema=schema)
        with store:
            handler = CommandHandler(store, account, stream_id_of=stream_of,
                                     retry=Retry(max_attempts=200, first_delay=0.001,
                                                 max_delay=0.02))
            for i in range(count):
                handled = handler.handle(Deposit("shared", 1),
                                         metadata={"command": f"{worker}-{i}"})
                attempts.append(handled.attempts)
    except BaseException as exc:  # reported to the parent, never lost in the child
        error = f"{type(exc).__name__}: {exc}"
    results.put((worker, attempts, error))  # type: ignore[attr-defined]
