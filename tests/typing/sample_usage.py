"""Code written the way the docs write it; mypy --strict must accept it (see test_typing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, assert_type

from eskit import (
    Aggregate,
    Event,
    InMemoryEventStore,
    NewEvent,
    Projection,
    domain_event,
    handles,
)
from eskit.projections import Tx


@domain_event("typing.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: Decimal


class Account(Aggregate):
    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance = Decimal(0)

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    @handles("typing.Withdrawn")
    def _withdrawn(self, event: Any) -> None:
        self.balance -= event.amount


class Balances(Projection):
    name = "typing-balances"

    @handles(Deposited)
    def _deposited(self, event: Event, tx: Tx) -> None:
        deposited = event.to_domain(expect=Deposited)
        assert_type(deposited, Deposited)
        assert_type(deposited.amount, Decimal)

    @handles("typing.Opened")
    def _opened(self, event: Event, tx: Tx) -> None:
        assert_type(event.to_domain(), Any)


def positions() -> int:
    store = InMemoryEventStore()
    result = store.append("a-1", [NewEvent("typing.Opened"), Deposited(Decimal(1))])
    stored = result.events[-1]
    assert_type(stored.position, int)
    after: int = stored.position + 1  # no Optional to narrow first
    for event in store.read_all(stored.position):
        after = max(after, event.position)
    return after


@dataclass(frozen=True)
class Deposit:
    account_id: str
    amount: Decimal


def decide_deposit(command: Deposit, balance: Decimal) -> list[Deposited]:
    return [Deposited(command.amount)]


def evolve_balance(balance: Decimal, event: Deposited) -> Decimal:
    return balance + event.amount


def deciders() -> Decimal:
    from eskit import CommandHandler, Repository, Retry, decider, fold, retry
    from eskit.testing import given, given_decider

    account = decider(decide_deposit, evolve_balance, Decimal(0))
    assert_type(fold(account, [Deposited(Decimal(1))]), Decimal)
    handler = CommandHandler(InMemoryEventStore(), account, stream_id_of=lambda c: c.account_id,
                             retry=Retry(max_attempts=3))
    handled = handler.handle(Deposit("a-1", Decimal(2)))
    assert_type(handled.state, Decimal)
    given_decider(account, [Deposited(Decimal(1))]).when(Deposit("a-1", Decimal(1))) \
        .then([Deposited(Decimal(1))]).then_state(lambda balance: balance == 2)
    given(Account).when(lambda a: a.raise_event(Deposited(Decimal(1)))).then_state(
        lambda a: a.balance == 1
    )
    repo = Repository(InMemoryEventStore())
    saved = retry(lambda: repo.execute("a-1", Account, lambda a: None))
    assert_type(saved, Account)
    return handled.state
