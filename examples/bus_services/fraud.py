"""The "fraud" service: watches money leaving accounts and raises alerts.

It reads from NATS JetStream (consumer group ``fraud``) only what its relay
lets through (``AccountOpened``, ``MoneyWithdrawn``, ``MoneyTransferredOut``)
and keeps its own read model in its own SQLite file: every outflow, and an alert
for an outflow of at least :data:`LARGE` or for the :data:`BURST`-th outflow of
an account within an hour. Amounts are integer cents (exact in SQLite).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from decimal import Decimal

from eskit import Event
from eskit.projections.targets import SQLiteTarget

__all__ = ["BURST", "EVENT_TYPES", "GROUP", "LARGE", "alerts", "handle", "setup", "watched"]

GROUP = "fraud"
EVENT_TYPES = ("AccountOpened", "MoneyWithdrawn", "MoneyTransferredOut")
"""What the fraud relay publishes (the relay's ``event_types`` filter)."""
LARGE = Decimal("1000.00")
BURST = 3
_HOUR_US = 3600 * 1_000_000


def setup(target: SQLiteTarget) -> None:
    """Create the service's tables (idempotent)."""
    with target.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fraud_accounts ("
                     " account TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS fraud_outflows ("
                     " event_id TEXT PRIMARY KEY, account TEXT NOT NULL,"
                     " at_us INTEGER NOT NULL, cents INTEGER NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS fraud_alerts ("
                     " event_id TEXT PRIMARY KEY, position INTEGER NOT NULL,"
                     " account TEXT NOT NULL, reason TEXT NOT NULL)")


def handle(event: Event, conn: sqlite3.Connection) -> None:
    """Apply one event in the consumer's open transaction."""
    account = str(event.stream_id).removeprefix("account-")
    if event.event_type == "AccountOpened":
        conn.execute("INSERT INTO fraud_accounts VALUES (?, ?) ON CONFLICT DO NOTHING",
                     (account, event.event_data["owner"]))
        return
    if event.event_type not in EVENT_TYPES:
        return
    amount: Decimal = event.event_data["amount"]
    at_us = int(event.timestamp.timestamp() * 1_000_000)
    conn.execute("INSERT INTO fraud_outflows VALUES (?, ?, ?, ?)",
                 (str(event.event_id), account, at_us, int(amount * 100)))
    (recent,) = conn.execute(
        "SELECT count(*) FROM fraud_outflows WHERE account = ? AND at_us > ? AND at_us <= ?",
        (account, at_us - _HOUR_US, at_us)).fetchone()
    reason = None
    if amount >= LARGE:
        reason = f"large outflow: {amount:,.2f}"
    elif recent >= BURST:
        reason = f"{recent} outflows within an hour"
    if reason is not None:
        conn.execute("INSERT INTO fraud_alerts VALUES (?, ?, ?, ?)",
                     (str(event.event_id), event.position, account, reason))


def alerts(path: str) -> list[tuple[str, str]]:
    """The read model's alerts: (account, reason), in the bank's order."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT account, reason FROM fraud_alerts ORDER BY position")
        return [(account, reason) for account, reason in rows]


def watched(path: str) -> list[tuple[str, str, Decimal]]:
    """Every account the service knows: (account, owner, total outflow)."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT a.account, a.owner, coalesce(sum(o.cents), 0) FROM fraud_accounts a"
            " LEFT JOIN fraud_outflows o ON o.account = a.account"
            " GROUP BY a.account ORDER BY a.account")
        cent = Decimal("0.01")
        return [(account, owner, (Decimal(cents) * cent).quantize(cent))
                for account, owner, cents in rows]
