"""The tiny domain the benchmarks use: deposits with ``Decimal`` amounts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from eskit import Aggregate, domain_event, handles

__all__ = ["EVENT_TYPE", "Account", "Deposited", "amounts", "fold_rows"]

EVENT_TYPE = "BenchDeposited"


@domain_event(EVENT_TYPE)
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


def amounts(n: int) -> list[Decimal]:
    """``n`` deterministic, varied two-decimal amounts (built outside any timer)."""
    return [Decimal(f"{i % 997 + 1}.{i % 100:02d}") for i in range(n)]


def fold_rows(rows: Iterable[Sequence[Any]], version: int, data: int) -> tuple[int, Decimal]:
    """What :class:`Account` does, for the raw side: (last version, balance) of decoded rows
    whose ``version`` and ``data`` (a decoded JSON dict) columns are at those indexes."""
    last, balance = 0, Decimal(0)
    for row in rows:
        balance += Decimal(row[data]["amount"])
        last = row[version]
    return last, balance
