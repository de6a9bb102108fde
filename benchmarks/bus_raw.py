"""The brokers' own clients publishing with confirms: the baseline of ``benchmarks.bus``.

Each function publishes the given messages to a fresh destination the way a
careful application would with that client alone, and returns the seconds from
the first publish to the last confirm (connecting and declaring are not timed).
It checks every confirm, and deletes its destination afterwards, also on failure.
The destinations match what the relay publishes to, so that the broker does the
same work on both sides:

* RabbitMQ (aio-pika, publishing through its aiormq channel): a durable topic
  exchange and one bound durable quorum queue (what the relay's ``groups=``
  declares); persistent messages with ``message_id`` and the content type; a
  sliding window of :data:`WINDOW` unconfirmed publishes (the relay's default
  ``in_flight``). aio-pika's ``Exchange.publish`` measured about a quarter slower here.
* JetStream (nats-py): ``js.publish_async`` (nats-py's own pipelined publish)
  with ``Nats-Msg-Id``, one subject per event stream, at most :data:`WINDOW`
  acks pending; then every ack is checked.
* Redis (redis-py): non-transactional pipelines of :data:`WINDOW` ``XADD`` with
  the relay's fields, one after the other.

Before issue 12's numbers, this module waited for each whole chunk of 256
publishes before sending the next (stop-and-wait, no sliding window), and
JetStream used one request per message: ``benchmarks.bus`` measures the fairer
versions above.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

WINDOW = 1000
"""Publishes in flight at once (RabbitMQ, JetStream); XADDs per pipeline (Redis)."""

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """What the raw client publishes: the relay's CloudEvent body and its routing facts."""

    message_id: str
    stream_id: str
    event_type: str
    body: bytes


def _category(stream_id: str) -> str:
    return stream_id.partition("-")[0]


async def rabbitmq(url: str, messages: Sequence[RawMessage]) -> float:
    import aio_pika
    import aiormq
    from pamqp.commands import Basic

    name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(url, client_properties={"connection_name": name})
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(
            f"{name}.bench", durable=True, arguments={"x-queue-type": "quorum"})
        try:
            await queue.bind(exchange, "#")
            # aio-pika's Exchange.publish costs more per message than the wire does
            # (a Message object, copies): aiormq's basic_publish under it is the
            # client's fast path, and the one the relay's sink takes.
            underlay = await channel.get_underlay_channel()
            assert isinstance(underlay, aiormq.Channel)
            window = asyncio.Semaphore(WINDOW)
            tasks: list[asyncio.Task[object]] = []
            started = time.perf_counter()
            for m in messages:
                await window.acquire()
                task = asyncio.ensure_future(underlay.basic_publish(
                    m.body, exchange=name,
                    routing_key=f"{_category(m.stream_id)}.{m.event_type}",
                    properties=Basic.Properties(
                        message_id=m.message_id, content_type=CONTENT_TYPE, delivery_mode=2),
                    wait=False,
                ))
                task.add_done_callback(lambda _: window.release())
                tasks.append(task)
            confirms = await asyncio.gather(*tasks)  # raises on a lost connection
            seconds = time.perf_counter() - started
            if not all(isinstance(c, Basic.Ack) for c in confirms):
                raise RuntimeError("RabbitMQ did not ack every raw message")
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
        return seconds
    finally:
        await connection.close()


async def jetstream(url: str, messages: Sequence[RawMessage]) -> float:
    import nats

    stream = f"BENCHRAW{uuid.uuid4().hex[:8].upper()}"
    prefix = f"benchraw{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(url, name=stream.lower())
    try:
        js = nc.jetstream(publish_async_max_pending=WINDOW)
        await js.add_stream(name=stream, subjects=[f"{prefix}.>"])
        try:
            futures = []
            started = time.perf_counter()
            for m in messages:
                # nats tokens: the benchmark's stream ids are plain "account-N"
                subject = f"{prefix}.{_category(m.stream_id)}.{m.stream_id}"
                futures.append(await js.publish_async(
                    subject, m.body, headers={"Nats-Msg-Id": m.message_id,
                                              "Content-Type": CONTENT_TYPE}))
            acks = await asyncio.gather(*futures)
            seconds = time.perf_counter() - started
            if any(ack.stream != stream or ack.duplicate for ack in acks):
                raise RuntimeError("JetStream stored a raw message elsewhere or twice")
        finally:
            await js.delete_stream(stream)
        return seconds
    finally:
        await nc.close()


async def redis_streams(url: str, messages: Sequence[RawMessage]) -> float:
    import redis.asyncio as redis

    key = f"bench-raw:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    try:
        started = time.perf_counter()
        for start in range(0, len(messages), WINDOW):
            pipe = client.pipeline(transaction=False)
            for m in messages[start:start + WINDOW]:
                pipe.xadd(key, {"id": m.message_id, "stream": m.stream_id, "type": m.event_type,
                                "content_type": CONTENT_TYPE, "body": m.body})
            await pipe.execute()  # raises on the first refused XADD
        seconds = time.perf_counter() - started
        return seconds
    finally:
        await client.delete(key)
        await client.aclose()


RAW = {"amqp": rabbitmq, "nats": jetstream, "redis": redis_streams}
