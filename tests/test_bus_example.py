"""The bus example (examples/bus_services): the bank feeds two services through two brokers.

Against the real RabbitMQ and NATS servers, under fresh exchange and stream names
that each test deletes again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import aio_pika
import nats
import pytest
from nats.js.errors import NotFoundError

from examples.bus_services.run import Names, cleanup, run
from tests.bus.conftest import nats_url, rabbitmq_url  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent

NOTIFICATIONS = [
    ("ACC-001", "Welcome Ada: account ACC-001 is open with 1,500.00"),
    ("ACC-002", "Welcome Bob: account ACC-002 is open with 50.00"),
    ("ACC-003", "Welcome Carol: account ACC-003 is open with 0.00"),
    ("ACC-001", "250.00 deposited"),
    ("ACC-001", "40.25 withdrawn"),
    ("ACC-001", "1,200.00 sent to ACC-003"),
    ("ACC-003", "1,200.00 received from ACC-001"),
    ("ACC-002", "10.00 withdrawn"),
    ("ACC-002", "10.00 withdrawn"),
    ("ACC-002", "10.00 withdrawn"),
    ("ACC-002", "20.00 sent to ACC-003"),
    ("ACC-003", "20.00 received from ACC-002"),
    ("ACC-002", "your account is closed"),
]
ALERTS = [
    ("ACC-001", "large outflow: 1,200.00"),
    ("ACC-002", "3 outflows within an hour"),
    ("ACC-002", "4 outflows within an hour"),
]


async def _left_on_brokers(names: Names, rabbitmq: str, server: str) -> list[str]:
    left = []
    connection = await aio_pika.connect(rabbitmq)
    async with connection:
        for queue in (f"{names.exchange}.notifications", f"{names.exchange}.notifications.dead"):
            channel = await connection.channel()
            try:
                await channel.declare_queue(queue, passive=True)
                left.append(queue)
            except aio_pika.exceptions.ChannelClosed:
                pass  # a passive declare of a missing queue closes the channel
    client = await nats.connect(server)
    try:
        for stream in (names.stream, f"{names.stream}_DLQ"):
            try:
                await client.jetstream().stream_info(stream)
                left.append(stream)
            except NotFoundError:
                pass
    finally:
        await client.close()
    return left


def test_each_service_builds_its_read_model_once(
    tmp_path: Path, rabbitmq_url: str, nats_url: str  # noqa: F811
) -> None:
    names = Names.fresh()
    try:
        outcome = run(tmp_path, rabbitmq=rabbitmq_url, nats=nats_url, names=names)
    finally:
        asyncio.run(cleanup(names, rabbitmq=rabbitmq_url, nats=nats_url))
    assert asyncio.run(_left_on_brokers(names, rabbitmq_url, nats_url)) == []

    assert outcome.appended == 13
    # Every event went out twice on each broker (the second time through new relays)...
    assert outcome.published == {"bank-to-rabbitmq": 13, "bank-to-nats": 9,
                                 "rabbitmq-again": 13, "nats-again": 9}
    # ...yet each was applied once: RabbitMQ delivered the copies and the inbox dropped
    # them; JetStream dropped them itself (same Nats-Msg-Id within its window).
    assert outcome.applied == {"notifications": 13, "fraud": 9}
    assert outcome.duplicates == {"notifications": 13, "fraud": 0}
    assert outcome.notifications == NOTIFICATIONS
    assert outcome.alerts == ALERTS
    assert outcome.watched == [("ACC-001", "Ada", Decimal("1240.25")),
                               ("ACC-002", "Bob", Decimal("50.00")),
                               ("ACC-003", "Carol", Decimal("0.00"))]
    # Each service's inbox lives in its own database, next to its read model.
    for group, count in (("notifications", 13), ("fraud", 9)):
        with closing(sqlite3.connect(tmp_path / f"{group}.db")) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM eskit_inbox WHERE consumer = ?",
                                   (group,)).fetchone()
        assert rows == count
    # The bank's file holds the four relays' checkpoints, all caught up.
    from eskit import SQLiteEventStore
    from eskit.bus.relay import relay_status

    with SQLiteEventStore(tmp_path / "bank.db") as bank:
        statuses = relay_status(bank)
    assert sorted((s.name, s.position, s.lag_events) for s in statuses) == [
        ("bank-to-nats", 13, 0), ("bank-to-rabbitmq", 13, 0),
        ("nats-again", 13, 0), ("rabbitmq-again", 13, 0)]


def test_the_script_runs_and_cleans_up(rabbitmq_url: str, nats_url: str) -> None:  # noqa: F811
    result = subprocess.run(
        [sys.executable, "-m", "examples.bus_services", "--rabbitmq", rabbitmq_url,
         "--nats", nats_url],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bank: 13 events appended" in out
    assert "consumer notifications: 13 applied, 13 duplicates dropped by its inbox" in out
    assert "consumer fraud: 9 applied, 0 duplicates dropped by its inbox" in out
    for account, text in NOTIFICATIONS:
        assert f"  {account}  {text}\n" in out
    for account, reason in ALERTS:
        assert f"ALERT {account}: {reason}" in out
    assert "kept:" not in out


@pytest.mark.parametrize("argv", [["--rabbitmq"], ["--bogus"]])
def test_the_script_refuses_bad_arguments(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "examples.bus_services", *argv],
                            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 2
    assert "usage: python -m examples.bus_services" in result.stderr
