"""Read models for the bank: account balances and a per-day transaction summary.

Two projections keep SQL tables up to date from the account events. Queries
(:func:`balances`, :func:`daily_summary`) read those tables only — never the
event store — so they are cheap and can be run by any SQL client.

Money is stored as integer cents: SQLite has no exact decimal type, and an
integer column sums exactly on both SQLite and PostgreSQL. The handlers' SQL is
the same on both (``?`` placeholders, ``INSERT ... ON CONFLICT``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import eskit
from eskit.projections import Projection, Tx

from .domain import (
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyRefunded,
    MoneyTransferredIn,
    MoneyTransferredOut,
    MoneyWithdrawn,
)

__all__ = [
    "AccountBalances",
    "AccountRow",
    "DailySummary",
    "SummaryRow",
    "balances",
    "daily_summary",
]


def cents(amount: Decimal) -> int:
    return int(amount * 100)


def money(cents_value: int) -> Decimal:
    return (Decimal(cents_value) / 100).quantize(Decimal("0.01"))


class AccountBalances(Projection):
    """One row per account: number, owner, status and balance."""

    name = "bank.account_balances"
    tables = ("bank_account_balances",)

    def setup(self, tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table('bank_account_balances')} ("
            " account_id TEXT PRIMARY KEY, account_number TEXT NOT NULL, owner TEXT NOT NULL,"
            " status TEXT NOT NULL, balance_cents BIGINT NOT NULL, version INTEGER NOT NULL)"
        )

    def _change(self, event: eskit.Event, tx: Tx, delta: int, status: str | None = None) -> None:
        p = tx.placeholder  # "?" on SQLite, "%s" on PostgreSQL: this model runs on both
        tx.execute(
            f"UPDATE {tx.table('bank_account_balances')} SET balance_cents = balance_cents + {p},"
            f" status = COALESCE({p}, status), version = {p} WHERE account_id = {p}",
            (delta, status, event.version, str(event.aggregate_id)),
        )

    @eskit.handles(AccountOpened)
    def _opened(self, event: eskit.Event, tx: Tx) -> None:
        opened: AccountOpened = event.to_domain()
        p = tx.placeholder
        tx.execute(
            f"INSERT INTO {tx.table('bank_account_balances')} (account_id, account_number,"
            f" owner, status, balance_cents, version) VALUES ({p}, {p}, {p}, 'open', {p}, {p})",
            (str(event.aggregate_id), opened.account_number, opened.owner,
             cents(opened.initial_deposit), event.version),
        )

    @eskit.handles(MoneyDeposited, MoneyTransferredIn, MoneyRefunded)
    def _credited(self, event: eskit.Event, tx: Tx) -> None:
        self._change(event, tx, cents(event.to_domain().amount))

    @eskit.handles(MoneyWithdrawn, MoneyTransferredOut)
    def _debited(self, event: eskit.Event, tx: Tx) -> None:
        self._change(event, tx, -cents(event.to_domain().amount))

    @eskit.handles(AccountClosed)
    def _closed(self, event: eskit.Event, tx: Tx) -> None:
        self._change(event, tx, 0, "closed")


_KINDS = {
    "AccountOpened": "opening deposit",
    "MoneyDeposited": "deposit",
    "MoneyWithdrawn": "withdrawal",
    "MoneyTransferredOut": "transfer",
}


class DailySummary(Projection):
    """Per UTC day and kind of transaction: how many, and how much money moved.

    A transfer is counted once, on its debit side (``MoneyTransferredOut``).
    """

    name = "bank.daily_summary"
    tables = ("bank_daily_summary",)

    def setup(self, tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table('bank_daily_summary')} ("
            " day TEXT NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL,"
            " total_cents BIGINT NOT NULL, PRIMARY KEY (day, kind))"
        )

    @eskit.handles(AccountOpened, MoneyDeposited, MoneyWithdrawn, MoneyTransferredOut)
    def _transaction(self, event: eskit.Event, tx: Tx) -> None:
        data = event.to_domain()
        amount = data.initial_deposit if isinstance(data, AccountOpened) else data.amount
        p = tx.placeholder
        tx.execute(
            f"INSERT INTO {tx.table('bank_daily_summary')} AS s (day, kind, count, total_cents)"
            f" VALUES ({p}, {p}, 1, {p}) ON CONFLICT (day, kind) DO UPDATE"
            " SET count = s.count + 1, total_cents = s.total_cents + excluded.total_cents",
            (event.timestamp.date().isoformat(), _KINDS[event.event_type], cents(amount)),
        )


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class AccountRow:
    account_number: str
    owner: str
    status: str
    balance: Decimal


@dataclass(frozen=True)
class SummaryRow:
    day: str
    kind: str
    count: int
    total: Decimal


def _rows(conn: Any, query: str) -> list[Any]:
    # A sqlite3 or psycopg connection, or a Tx: no placeholders needed here.
    result = conn.execute(query)
    return list(result if isinstance(result, list) else result.fetchall())


def balances(conn: Any) -> list[AccountRow]:
    """Every account, by account number — from the read model only."""
    rows = _rows(conn, "SELECT account_number, owner, status, balance_cents "
                       "FROM bank_account_balances ORDER BY account_number")
    return [AccountRow(r[0], r[1], r[2], money(int(r[3]))) for r in rows]


def daily_summary(conn: Any) -> list[SummaryRow]:
    """Transactions per day and kind — from the read model only."""
    rows = _rows(conn, "SELECT day, kind, count, total_cents FROM bank_daily_summary "
                       "ORDER BY day, kind")
    return [SummaryRow(r[0], r[1], int(r[2]), money(int(r[3]))) for r in rows]
