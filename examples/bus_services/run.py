"""The whole thing, briefly: the bank, two relays, two brokers, two services.

::

    bank (SQLite event store, the outbox)
      ├── relay "bank-to-rabbitmq" ──▶ RabbitMQ exchange ──▶ group "notifications"
      │                                                       └▶ notifications.db
      └── relay "bank-to-nats" ──────▶ JetStream stream ───▶ group "fraud"
          (3 event types only)                               └▶ fraud.db

:func:`run` appends some bank commands, runs each relay until it has caught up
(every event confirmed by its broker), runs both consumers until their group
is idle, then publishes everything a second time through two new relays, to
show that the services' read models do not change. Each service has its own
database and its own inbox; nothing is shared but the brokers.

``python -m examples.bus_services`` runs it against the local servers
(``--rabbitmq``, ``--nats``), under fresh exchange and stream names that it
deletes at the end (``--keep`` leaves them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import eskit
from eskit.bus import sink_for_url, source_for_url
from eskit.bus.consumer import Consumer
from eskit.bus.relay import Relay
from eskit.projections.targets import SQLiteTarget
from examples.bank import BankAccount, transfer
from examples.bus_services import fraud, notifications

__all__ = ["Names", "Outcome", "bank_commands", "cleanup", "main", "run"]

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class Names:
    """Where on the brokers this bus lives (a real bank keeps one set for good)."""

    exchange: str = "bank"
    stream: str = "BANK"
    prefix: str = "bank"

    @classmethod
    def fresh(cls) -> Names:
        tag = uuid.uuid4().hex[:8]
        return cls(exchange=f"bank-{tag}", stream=f"BANK{tag}", prefix=f"bank{tag}")

    def rabbitmq_url(self, server: str) -> str:
        # groups=...: the sink declares the group's queue before its first publish, so
        # nothing is dropped by the topic exchange before the consumer first runs.
        return f"{server}?exchange={self.exchange}&groups={notifications.GROUP}"

    def nats_url(self, server: str) -> str:
        return f"{server}/?stream={self.stream}&prefix={self.prefix}"


@dataclass
class Outcome:
    """What one run did, and the two read models it left."""

    appended: int
    published: dict[str, int]
    applied: dict[str, int]
    duplicates: dict[str, int]
    notifications: list[tuple[str, str]]
    alerts: list[tuple[str, str]]
    watched: list[tuple[str, str, Decimal]]


def bank_commands(store: eskit.EventStore) -> None:
    """A morning at the bank: three accounts, everyday banking, two suspicious patterns."""
    repo = eskit.Repository(store)
    for number, owner, initial in (("ACC-001", "Ada", "1500.00"), ("ACC-002", "Bob", "50.00"),
                                   ("ACC-003", "Carol", "0.00")):
        account = BankAccount(f"account-{number}")
        account.open(number, owner, Decimal(initial))
        repo.save(account)
    ada = repo.get("account-ACC-001", BankAccount)
    ada.deposit(Decimal("250.00"))
    ada.withdraw(Decimal("40.25"))
    repo.save(ada)
    transfer(repo, "account-ACC-001", "account-ACC-003", Decimal("1200.00"))  # large
    bob = repo.get("account-ACC-002", BankAccount)
    for _ in range(3):  # the third outflow within an hour is an alert
        bob.withdraw(Decimal("10.00"))
    repo.save(bob)
    transfer(repo, "account-ACC-002", "account-ACC-003", Decimal("20.00"))  # the fourth
    bob = repo.get("account-ACC-002", BankAccount)
    bob.close()
    repo.save(bob)


async def _relay_and_consume(
    bank: eskit.EventStore, names: Names, rabbitmq: str, nats: str,
    targets: dict[str, SQLiteTarget], relay_names: tuple[str, str], idle: float,
) -> tuple[dict[str, int], dict[str, Consumer]]:
    relays = [
        Relay(bank, sink_for_url(names.rabbitmq_url(rabbitmq)), name=relay_names[0]),
        Relay(bank, sink_for_url(names.nats_url(nats)), name=relay_names[1],
              event_types=fraud.EVENT_TYPES),
    ]
    for relay in relays:  # each returns once its broker confirmed every event
        await relay.run(until_caught_up=True)
    consumers = {
        notifications.GROUP: Consumer(
            source_for_url(names.rabbitmq_url(rabbitmq), group=notifications.GROUP),
            targets[notifications.GROUP], notifications.handle, name=notifications.GROUP),
        fraud.GROUP: Consumer(
            source_for_url(names.nats_url(nats), group=fraud.GROUP),
            targets[fraud.GROUP], fraud.handle, name=fraud.GROUP),
    }
    # Both services at once, each until its group has been idle for `idle` seconds.
    await asyncio.gather(*(c.run(idle_timeout=idle) for c in consumers.values()))
    return {relay.name: relay.published for relay in relays}, consumers


def run(workdir: Path, *, rabbitmq: str = RABBITMQ, nats: str = NATS,
        names: Names | None = None, idle: float = 1.5) -> Outcome:
    """Run the example in ``workdir`` (three SQLite files) against the given servers."""
    names = names or Names()
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        bank = files.enter_context(eskit.SQLiteEventStore(workdir / "bank.db"))
        bank_commands(bank)
        targets: dict[str, SQLiteTarget] = {}
        for service, group in ((notifications, notifications.GROUP), (fraud, fraud.GROUP)):
            target = SQLiteTarget(workdir / f"{group}.db")  # the service's own database
            files.callback(target.close)
            service.setup(target)
            targets[group] = target

        published, consumers = asyncio.run(_relay_and_consume(
            bank, names, rabbitmq, nats, targets, ("bank-to-rabbitmq", "bank-to-nats"), idle))
        # A mistake, or a relay restored from an old backup: everything goes out again.
        # RabbitMQ delivers the copies (the notifications inbox drops them); JetStream
        # drops them itself, within its duplicate window (Nats-Msg-Id = the event id).
        again, again_consumers = asyncio.run(_relay_and_consume(
            bank, names, rabbitmq, nats, targets, ("rabbitmq-again", "nats-again"), idle))
        published.update(again)
        return Outcome(
            appended=bank.head_position(),
            published=published,
            applied={g: c.applied + again_consumers[g].applied for g, c in consumers.items()},
            duplicates={g: c.duplicates + again_consumers[g].duplicates
                        for g, c in consumers.items()},
            notifications=notifications.messages(str(workdir / "notifications.db")),
            alerts=fraud.alerts(str(workdir / "fraud.db")),
            watched=fraud.watched(str(workdir / "fraud.db")),
        )


async def cleanup(names: Names, *, rabbitmq: str = RABBITMQ, nats: str = NATS) -> None:
    """Delete the exchange, queues and streams :func:`run` declared under ``names``."""
    import aio_pika
    import nats as nats_py
    from nats.js.errors import NotFoundError

    connection = await aio_pika.connect(rabbitmq)
    async with connection:
        channel = await connection.channel()
        queue = f"{names.exchange}.{notifications.GROUP}"
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        await channel.exchange_delete(names.exchange)
    client = await nats_py.connect(nats)
    try:
        for stream in (names.stream, f"{names.stream}_DLQ"):
            with contextlib.suppress(NotFoundError):
                await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m examples.bus_services",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rabbitmq", default=RABBITMQ, help="RabbitMQ URL (%(default)s)")
    parser.add_argument("--nats", default=NATS, help="NATS URL (%(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the exchange, queues and streams on the brokers")
    args = parser.parse_args(argv)
    names = Names.fresh()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            outcome = run(Path(tmp), rabbitmq=args.rabbitmq, nats=args.nats, names=names)
        finally:
            if not args.keep:
                asyncio.run(cleanup(names, rabbitmq=args.rabbitmq, nats=args.nats))
    print(f"bank: {outcome.appended} events appended")
    for relay, count in outcome.published.items():
        print(f"relay {relay}: {count} published and confirmed")
    for group in outcome.applied:
        print(f"consumer {group}: {outcome.applied[group]} applied, "
              f"{outcome.duplicates[group]} duplicates dropped by its inbox")
    print("\nnotifications.db")
    for account, text in outcome.notifications:
        print(f"  {account}  {text}")
    print("\nfraud.db")
    for account, owner, outflow in outcome.watched:
        print(f"  {account}  {owner:<6} outflow {outflow:>9,.2f}")
    for account, reason in outcome.alerts:
        print(f"  ALERT {account}: {reason}")
    if args.keep:
        print(f"\nkept: exchange {names.exchange}, streams {names.stream}, "
              f"{names.stream}_DLQ")
