"""The "notifications" service: a message to the account holder for each bank event.

It reads the bank's events from RabbitMQ (consumer group ``notifications``) and
keeps its own read model in its own SQLite file: one row per message it would
send. :func:`handle` runs inside the consumer's transaction, so the row and the
inbox record of the event id commit together: a redelivered event adds no
second row. (Sending a real e-mail from the handler would happen at least once:
write it to a table like this one and send from there.)
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from decimal import Decimal
from typing import Any

from eskit import Event
from eskit.projections.targets import SQLiteTarget

__all__ = ["GROUP", "handle", "messages", "setup"]

GROUP = "notifications"
"""The consumer group, and the name of its inbox."""


def account_number(stream_id: object) -> str:
    """``account-ACC-001`` → ``ACC-001``: the bank names its streams after the account."""
    return str(stream_id).removeprefix("account-")


def setup(target: SQLiteTarget) -> None:
    """Create the service's table (idempotent)."""
    with target.transaction() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS notifications ("
            " event_id TEXT PRIMARY KEY, position INTEGER NOT NULL,"
            " account TEXT NOT NULL, text TEXT NOT NULL)"
        )


def _text(event: Event) -> str | None:
    data: dict[str, Any] = event.event_data
    amount: Decimal | None = data.get("amount")
    match event.event_type:
        case "AccountOpened":
            return (f"Welcome {data['owner']}: account {data['account_number']} is open "
                    f"with {data['initial_deposit']:,.2f}")
        case "MoneyDeposited":
            return f"{amount:,.2f} deposited"
        case "MoneyWithdrawn":
            return f"{amount:,.2f} withdrawn"
        case "MoneyTransferredOut":
            return f"{amount:,.2f} sent to {account_number(data['to_account'])}"
        case "MoneyTransferredIn":
            return f"{amount:,.2f} received from {account_number(data['from_account'])}"
        case "AccountClosed":
            return "your account is closed"
    return None  # an event type this service does not write about


def handle(event: Event, conn: sqlite3.Connection) -> None:
    """Record the message ``event`` calls for, in the consumer's open transaction."""
    text = _text(event)
    if text is not None:
        conn.execute("INSERT INTO notifications VALUES (?, ?, ?, ?)",
                     (str(event.event_id), event.position, account_number(event.stream_id), text))


def messages(path: str) -> list[tuple[str, str]]:
    """The read model: (account, text) in the bank's order of events."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT account, text FROM notifications ORDER BY position")
        return [(account, text) for account, text in rows]
