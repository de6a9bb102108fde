"""A small domain with rich state for the snapshot and time-travel tests.

``Ledger`` keeps a ``Decimal``, a set, a dict, a list of tuples and an optional
``datetime``: everything a snapshot must bring back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from eskit import Aggregate, codec, domain_event, handles


@domain_event("tests.snap.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@domain_event("tests.snap.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: Decimal


@domain_event("tests.snap.Tagged")
@dataclass(frozen=True)
class Tagged:
    tag: str


@domain_event("tests.snap.Untagged")
@dataclass(frozen=True)
class Untagged:
    tag: str


@domain_event("tests.snap.Noted")
@dataclass(frozen=True)
class Noted:
    key: str
    value: Any


class Ledger(Aggregate):
    def __init__(self, ledger_id: Any) -> None:
        super().__init__(ledger_id)
        self.owner: str | None = None
        self.balance = Decimal(0)
        self.tags: set[str] = set()
        self.notes: dict[str, Any] = {}
        self.moves: list[tuple[int, Decimal]] = []
        self.last_note_at: datetime | None = None

    @handles(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.moves.append((self.version + 1, event.amount))

    @handles(Tagged)
    def _tagged(self, event: Tagged) -> None:
        self.tags.add(event.tag)

    @handles(Untagged)
    def _untagged(self, event: Untagged) -> None:
        self.tags.discard(event.tag)

    @handles(Noted)
    def _noted(self, event: Noted) -> None:
        self.notes[event.key] = event.value


def state_of(aggregate: Aggregate) -> tuple[int, bytes]:
    """Version and state as canonical bytes: equal exactly when the states are equal.

    (Comparing encodings, not values: ``Decimal('NaN')`` is not equal to itself.)
    """
    return aggregate.version, codec.encode(aggregate.snapshot_state())


def make_ledger(ledger_id: Any, deposits: int, *, owner: str = "ann") -> Ledger:
    ledger = Ledger(ledger_id)
    ledger.raise_event(Opened(owner))
    for i in range(deposits):
        ledger.raise_event(Deposited(Decimal(i + 1) / 4))
        if i % 3 == 0:
            ledger.raise_event(Tagged(f"t{i % 5}"))
    return ledger
