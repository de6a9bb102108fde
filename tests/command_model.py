"""A small decider the command-handler and repository tests share: an account with a limit."""

from __future__ import annotations

from dataclasses import dataclass

from eskit import decider, domain_event


@domain_event("cmd-test.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


@domain_event("cmd-test.Interfered")
@dataclass(frozen=True)
class Interfered:
    """Written by another writer between a handler's read and its append."""


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
