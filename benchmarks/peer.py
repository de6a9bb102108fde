"""The peer: the same bank-account domain written with the ``eventsourcing`` library (9.5).

Used only through its public API, the way its documentation recommends: an
``Application`` subclass whose command methods get an aggregate from the
application's repository, call an ``@event``-decorated command method on it and
``save`` it; infrastructure chosen by environment variables
(``PERSISTENCE_MODULE`` and the module's own settings); snapshots through the
documented ``IS_SNAPSHOTTING_ENABLED`` option and ``take_snapshot``; the whole
log read in order through the application's notification log, a page at a time,
each notification turned back into a domain event by the application's mapper
(what a polling subscription does; the SQLite recorder has no push
subscriptions, so one reader serves every backend).

Aggregate IDs are version-5 UUIDs derived from the account name (the documented
``create_id`` pattern), so both libraries address the same accounts by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

__all__ = ["Bank", "PeerAccount", "account_id", "peer_env"]


def account_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/bench/accounts/{name}")


class PeerAccount(Aggregate):
    """Opened with its first deposit, so its version counts deposits as eskit's does."""

    @staticmethod
    def create_id(name: str, amount: Decimal) -> UUID:
        return account_id(name)

    @event("Opened")
    def __init__(self, name: str, amount: Decimal) -> None:
        self.name = name
        self.balance = amount

    @event("Deposited")
    def deposit(self, amount: Decimal) -> None:
        self.balance += amount


class Bank(Application[UUID]):
    log_section_size = 500
    """Notifications per page when reading the whole log."""

    def open_account(self, name: str, amounts: Sequence[Decimal]) -> PeerAccount:
        """One new account with one event per amount, saved in one transaction."""
        account = PeerAccount(name, amounts[0])
        for amount in amounts[1:]:
            account.deposit(amount)
        self.save(account)
        return account

    def deposit(self, name: str, amount: Decimal) -> None:
        """A command: load the account (no cache), deposit, save one event."""
        account: PeerAccount = self.repository.get(account_id(name))
        account.deposit(amount)
        self.save(account)

    def balance(self, name: str) -> tuple[int, Decimal]:
        account: PeerAccount = self.repository.get(account_id(name))
        return account.version, account.balance

    def read_all(self) -> tuple[int, Decimal]:
        """Every event in recorded order, as domain events: (count, sum of amounts)."""
        log, to_event = self.notification_log, self.mapper.to_domain_event
        limit = self.log_section_size
        count, total, start = 0, Decimal(0), 1
        while True:
            notifications = log.select(start, limit)
            for notification in notifications:
                domain_event: Any = to_event(notification)
                total += domain_event.amount
                count += 1
            if len(notifications) < limit:
                return count, total
            start = notifications[-1].id + 1


def peer_env(
    kind: str, location: str, dsn: str | None, *, snapshots: bool = False
) -> dict[str, str]:
    """The environment that selects the peer's infrastructure for one backend."""
    env: dict[str, str] = {}
    if kind == "sqlite":
        env.update(PERSISTENCE_MODULE="eventsourcing.sqlite", SQLITE_DBNAME=location)
    elif kind == "memory":
        env.update(PERSISTENCE_MODULE="eventsourcing.popo")
    else:
        from psycopg.conninfo import conninfo_to_dict

        assert dsn is not None
        params = conninfo_to_dict(dsn)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            POSTGRES_DBNAME=str(params.get("dbname", "postgres")),
            POSTGRES_HOST=str(params.get("host", "127.0.0.1")),
            POSTGRES_PORT=str(params.get("port", "5432")),
            POSTGRES_USER=str(params.get("user", "postgres")),
            POSTGRES_PASSWORD=str(params.get("password", "")),
            POSTGRES_SCHEMA=location,
        )
    if snapshots:
        env["IS_SNAPSHOTTING_ENABLED"] = "y"
    return env
