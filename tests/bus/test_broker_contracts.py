"""The bus contract suites (:mod:`eskit.testing.bus_contract`) against the three real brokers.

:class:`~eskit.testing.bus_contract.RelayConsumerContract` includes every
:class:`~eskit.testing.bus_contract.BusContract` test, so one class per broker runs
both suites. Each test gets a destination of its own (exchange / stream and
subject prefix / key) with the URL options that make redelivery quick, and
everything it declared on the shared server is deleted after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aio_pika
import nats
import pytest
import redis

from eskit import NewEvent, PostgresEventStore
from eskit.bus.cloudevents import from_cloudevent, to_cloudevent
from eskit.bus.consumer import Consumer
from eskit.bus.relay import Relay
from eskit.bus.sink import OutgoingMessage
from eskit.bus.urls import sink_for_url, source_for_url
from eskit.testing.bus_contract import RelayConsumerContract, _event, _group
from tests.bus import bus_fault_workers as workers
from tests.bus.conftest import unique_name
from tests.bus.test_rabbitmq_helpers import _ctl
from tests.conftest import new_schema_name


async def _delete_rabbitmq(url: str, exchange: str) -> None:
    """The exchange and every queue named after it (groups, dead-letter and retry queues)."""
    listing = await _ctl("list_queues", "--no-table-headers", "name")
    queues = [q for q in listing.split() if q.startswith(f"{exchange}.")]
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def _delete_jetstream(url: str, *streams: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


def _delete_redis(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        doomed = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if doomed:
            client.delete(*doomed)
    finally:
        client.close()


class _OddNames(RelayConsumerContract):
    """Beyond the contract: names a broker must escape or cut, not choke on."""

    def test_long_and_odd_stream_ids_and_types_arrive_intact_and_in_order(self) -> None:
        long_a = "acct-" + "é" * 1020 + "a"  # 2,048 bytes of UTF-8, differing only at the end
        long_b = long_a[:-1] + "b"
        own_category = "ü" * 1024  # 2,048 bytes, no '-': its own (long) category
        streams = [long_a, long_b, own_category, "a.b*c>d #%~", "no-category-\u2028", "-", "x"]
        events = []
        for version in (1, 2, 3):
            for n, stream in enumerate(streams):
                position = len(events) + 1
                events.append(dataclasses.replace(
                    _event(stream, version, position), event_type=f"Money.Moved*#>{n}"))

        async def scenario() -> None:
            sink, [source] = await self._open(self.make_url(), _group())
            try:
                await sink.publish([OutgoingMessage(e, to_cloudevent(e)) for e in events])
                got = []
                async for delivery in source.deliveries():
                    got.append(from_cloudevent(delivery.message.body))
                    await delivery.ack()
                    if len(got) == len(events):
                        break
                assert sorted(got, key=lambda e: e.position) == events
                for stream in streams:
                    assert [e.version for e in got if e.stream_id == stream] == [1, 2, 3]
            finally:
                await self._close(sink, [source])

        self.run(scenario())


class TestRabbitMQContract(_OddNames):
    @pytest.fixture(autouse=True)
    def _destination(self, rabbitmq_url: str) -> Iterator[None]:
        self.base, self.exchange = rabbitmq_url, unique_name("contract")
        yield
        asyncio.run(_delete_rabbitmq(rabbitmq_url, self.exchange))

    def make_url(self) -> str:
        # A quorum queue returns a message to its group at once when its holder closes,
        # and a retry waits only its own TTL: nothing to shorten.
        return f"{self.base}?exchange={self.exchange}"


class TestJetStreamContract(_OddNames):
    @pytest.fixture(autouse=True)
    def _destination(self, nats_url: str) -> Iterator[None]:
        self.base, self.stream = nats_url, unique_name("contract")
        self.prefix = unique_name("p")
        yield
        asyncio.run(_delete_jetstream(nats_url, self.stream, f"{self.stream}_DLQ"))

    def make_url(self) -> str:
        # ack_wait: a message held by a member that went away comes back after 1 s.
        return f"{self.base}/?stream={self.stream}&prefix={self.prefix}&ack_wait=1"


class TestRedisStreamsContract(_OddNames):
    @pytest.fixture(autouse=True)
    def _destination(self, redis_url: str) -> Iterator[None]:
        self.base, self.key = redis_url, unique_name("eskit-contract:")
        yield
        _delete_redis(redis_url, self.key)

    def make_url(self) -> str:
        # claim_idle: a pending entry of a member that went away is claimed after 0.5 s.
        return f"{self.base}?key={self.key}&claim_idle=0.5&block=0.1"


@pytest.fixture(params=["rabbitmq", "jetstream", "redis"])
def any_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh destination on each broker (as the contract classes make), deleted after."""
    if request.param == "rabbitmq":
        base, exchange = request.getfixturevalue("rabbitmq_url"), unique_name("contract")
        yield f"{base}?exchange={exchange}"
        asyncio.run(_delete_rabbitmq(base, exchange))
    elif request.param == "jetstream":
        base, stream = request.getfixturevalue("nats_url"), unique_name("contract")
        yield f"{base}/?stream={stream}&prefix={unique_name('p')}&ack_wait=1"
        asyncio.run(_delete_jetstream(base, stream, f"{stream}_DLQ"))
    else:
        base, key = request.getfixturevalue("redis_url"), unique_name("eskit-contract:")
        yield f"{base}?key={key}&claim_idle=0.5&block=0.1"
        _delete_redis(base, key)


def test_a_postgres_store_relays_to_every_broker(
    any_broker_url: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """PostgreSQL positions are ``tx_id << 64 | seq``, wider than 64 bits: every one of
    them must reach the broker and the consumer (RabbitMQ's headers refused them)."""
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    try:
        for n in range(30):
            store.append(f"account-{n % 3}", [NewEvent("Deposited", {"amount": Decimal(n)})])
        events = list(store.read_all())
        assert events[0].position >= 2**64  # the case under test
        target = workers.target(tmp_path / "model.db")

        async def scenario() -> None:
            source = source_for_url(any_broker_url, group="model")
            await source.open()  # the group exists before the relay publishes
            await source.close()
            await Relay(store, sink_for_url(any_broker_url), name="r").run(until_caught_up=True)
            consumer = Consumer(source, target, workers.apply, name="balances")
            task = asyncio.create_task(consumer.run())
            try:
                while sum(n for _, n in workers.read_model(target).values()) < len(events):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
            finally:
                consumer.stop()
                await task

        asyncio.run(asyncio.wait_for(scenario(), 60))
        assert workers.read_model(target) == workers.clean_run(events)
    finally:
        store.close()
