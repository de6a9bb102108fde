"""RabbitMQ fault tests: this test's own connection is closed from the server side.

Only the connection named by the test is closed (``rabbitmqctl close_connection``
on its pid, found by its ``connection_name``), never anyone else's.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

import pytest

from eskit import BrokerUnavailableError
from eskit.bus.rabbitmq import RabbitMQSink, RabbitMQSource
from tests.bus.conftest import unique_name
from tests.bus.test_rabbitmq_helpers import (
    drop_connection,
    key,
    messages,
    nothing_within,
    run,
    take,
    topology,
)


def _first_delivery_order_holds(bodies: list[bytes], per_stream: int) -> None:
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[bytes] = set()
    for body in bodies:
        if body not in seen:
            seen.add(body)
            stream, version = key(body)
            firsts[stream].append(version)
    assert all(v == list(range(1, per_stream + 1)) for v in firsts.values()), "order broken"


def test_connection_dropped_while_publishing_loses_and_reorders_nothing(rabbitmq_url: str) -> None:
    exchange, group, name = unique_name("ex"), unique_name("g"), unique_name("eskit-fault-pub-")
    url = f"{rabbitmq_url}?exchange={exchange}"
    per_stream = 800
    batch = messages([f"acct-{i}" for i in range(5)], per_stream)  # 4,000 messages

    async def scenario() -> None:
        failures = 0
        first_batch_done = asyncio.Event()

        async def publisher() -> None:
            nonlocal failures
            sink = RabbitMQSink.from_url(f"{url}&name={name}")
            await sink.open()
            for start in range(0, len(batch), 100):
                chunk = batch[start:start + 100]
                while True:  # what a relay does: reopen, publish the whole batch again
                    try:
                        await sink.publish(chunk)
                        break
                    except BrokerUnavailableError:
                        failures += 1
                        await asyncio.sleep(0.05)
                        try:
                            await sink.open()
                        except BrokerUnavailableError:
                            continue
                first_batch_done.set()
                await asyncio.sleep(0.05)  # spread publishing over a few seconds
            await sink.close()

        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSource.from_url(url, group=group) as source:
            task = asyncio.create_task(publisher())
            await first_batch_done.wait()
            assert await drop_connection(name) == 1
            await task
            assert failures >= 1  # the drop hit the publisher, which recovered
            wanted = {m.body for m in batch}
            bodies: list[bytes] = []
            async for delivery in source.deliveries():
                bodies.append(delivery.message.body)
                await delivery.ack()
                wanted.discard(delivery.message.body)
                if not wanted:
                    break
            assert not wanted  # every message at least once
            _first_delivery_order_holds(bodies, per_stream)

    run(scenario(), timeout=120)


def test_connection_dropped_while_consuming_reconnects_and_redelivers(rabbitmq_url: str) -> None:
    exchange, group, name = unique_name("ex"), unique_name("g"), unique_name("eskit-fault-sub-")
    url = f"{rabbitmq_url}?exchange={exchange}"
    per_stream = 400
    batch = messages([f"card-{i}" for i in range(5)], per_stream)  # 2,000 messages

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]):
            source = RabbitMQSource.from_url(f"{url}&name={name}&prefetch=50", group=group)
            await source.open()
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            wanted = {m.body for m in batch}
            bodies: list[bytes] = []
            counts: list[int] = []
            lost_acks = 0
            killer: asyncio.Task[int] | None = None
            async for delivery in source.deliveries():
                bodies.append(delivery.message.body)
                counts.append(delivery.message.delivery_count)
                if len(bodies) == 300:
                    killer = asyncio.create_task(drop_connection(name))
                if killer is not None and not killer.done():
                    await asyncio.sleep(0.005)  # go slowly until the drop lands
                try:
                    await delivery.ack()
                except BrokerUnavailableError:
                    lost_acks += 1  # its connection is gone: the broker redelivers it
                    continue
                wanted.discard(delivery.message.body)
                if not wanted:
                    break
            assert killer is not None
            assert await killer == 1
            assert not wanted  # everything, acked, after the reconnect
            assert max(counts) >= 2  # the unacked ones came back, counted as redeliveries
            _first_delivery_order_holds(bodies, per_stream)
            await source.close()

    run(scenario(), timeout=120)


class _FreezingProxy:
    """A TCP proxy to RabbitMQ that can stop passing the broker's replies (a hung broker)."""

    def __init__(self) -> None:
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            while data := await src.read(65536):
                if down and self.frozen.is_set():
                    continue  # swallowed: the client never hears back
                dst.write(data)
                await dst.drain()
            dst.close()

        self.tasks += [asyncio.create_task(pipe(reader, up_writer, False)),
                       asyncio.create_task(pipe(up_reader, writer, True))]

    async def stop(self) -> None:
        """Sever every connection and stop listening (the broker is gone, for the client)."""
        if self.server is not None:
            self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.transport.abort()


def test_a_broker_that_stops_confirming_raises_within_the_confirm_timeout(
    rabbitmq_url: str,
) -> None:
    exchange = unique_name("ex")
    batch = messages(["slow-1"], 50)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        proxy = _FreezingProxy()
        port = await proxy.start()
        url = f"amqp://guest:guest@127.0.0.1:{port}/?exchange={exchange}&confirm_timeout=0.5"
        async with topology(rabbitmq_url, exchange, []):
            sink = RabbitMQSink.from_url(url)
            try:
                await sink.open()
                await sink.publish(batch[:10])  # confirmed while the proxy passes replies
                proxy.frozen.set()
                started = loop.time()
                with pytest.raises(BrokerUnavailableError, match="confirm"):
                    await sink.publish(batch[10:])
                assert loop.time() - started < 5
                with pytest.raises(BrokerUnavailableError):
                    await sink.publish(batch[10:])  # the broken connection was dropped
            finally:
                proxy.frozen.clear()
                await sink.close()
                await proxy.stop()

    run(scenario(), timeout=60)


def test_deliveries_give_up_after_the_reconnect_timeout(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        proxy = _FreezingProxy()
        port = await proxy.start()
        url = f"amqp://guest:guest@127.0.0.1:{port}/?exchange={exchange}&reconnect_timeout=1"
        async with topology(rabbitmq_url, exchange, [group]):
            source = RabbitMQSource.from_url(url, group=group)
            await source.open()
            listening = asyncio.create_task(take(source, 1))
            await asyncio.sleep(0.3)
            await proxy.stop()  # the broker vanishes and stays away
            started = loop.time()
            with pytest.raises(BrokerUnavailableError):
                await asyncio.wait_for(listening, 10)
            assert 0.5 < loop.time() - started < 5
            await source.close()

    run(scenario(), timeout=60)


def test_settling_a_delivery_of_a_lost_connection_makes_no_copy(rabbitmq_url: str) -> None:
    exchange, group, name = unique_name("ex"), unique_name("g"), unique_name("eskit-fault-settle-")
    url = f"{rabbitmq_url}?exchange={exchange}"
    batch = messages(["gone-1"], 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group], retry_ms=[100]):
            source = RabbitMQSource.from_url(f"{url}&name={name}", group=group)
            await source.open()
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            (held,) = await take(source, 1, ack=False)
            assert await drop_connection(name) == 1
            await asyncio.sleep(0.2)
            with pytest.raises(BrokerUnavailableError):
                await held.retry(0.1)
            (again,) = await take(source, 1)  # the source reconnected; the broker redelivered
            assert again.message.delivery_count == 2
            assert await nothing_within(source, 0.8)  # and no retry copy came after it
            await source.close()

    run(scenario(), timeout=60)


_HOLDER = """
import asyncio, sys
from eskit.bus.rabbitmq import RabbitMQSource

async def main():
    source = RabbitMQSource.from_url(sys.argv[1], group=sys.argv[2])
    async for delivery in source.deliveries():
        print("holding", delivery.message.broker_id, flush=True)
        await asyncio.sleep(3600)  # mid-handler, forever: SIGKILLed here

asyncio.run(main())
"""


def test_a_member_sigkilled_mid_handler_has_its_message_redelivered(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = f"{rabbitmq_url}?exchange={exchange}&prefetch=1"
    batch = messages(["kill-1"], 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]):
            async with RabbitMQSource.from_url(url, group=group):
                pass  # declares the group
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            holder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _HOLDER, url, group, stdout=asyncio.subprocess.PIPE)
            try:
                assert holder.stdout is not None
                line = await asyncio.wait_for(holder.stdout.readline(), 30)
                assert line.decode().split() == ["holding", batch[0].message_id]
            finally:
                holder.kill()  # SIGKILL: no close, no goodbye to the broker
                await holder.wait()
            async with RabbitMQSource.from_url(url, group=group) as survivor:
                (again,) = await take(survivor, 1)
                assert again.message.broker_id == batch[0].message_id
                assert again.message.delivery_count == 2

    run(scenario(), timeout=60)
