"""The brokers' own clients publishing with confirms: the baseline of ``benchmarks.bus``.

Each function publishes the given message bodies to a fresh destination the way
a careful application would with that client alone (confirms awaited, a window
of messages in flight, in order) and returns the seconds from the first publish
to the last confirm. The destination is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

WINDOW = 256
"""Messages in flight at once (RabbitMQ and JetStream); Redis sends pipelines of this size."""


async def rabbitmq(url: str, bodies: Sequence[bytes]) -> float:
    import aio_pika

    exchange_name = f"bench-raw-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(f"{exchange_name}-q", durable=True)
        await queue.bind(exchange, "#")
        started = time.perf_counter()
        for start in range(0, len(bodies), WINDOW):
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(
                        body, message_id=str(uuid.uuid4()),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/cloudevents+json",
                    ),
                    routing_key="bench.Event",
                )
                for body in bodies[start:start + WINDOW]
            ))
        seconds = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        return seconds
    finally:
        await connection.close()


async def jetstream(url: str, bodies: Sequence[bytes]) -> float:
    import nats

    stream = f"BENCHRAW{uuid.uuid4().hex[:8].upper()}"
    subject = f"benchraw{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{subject}.>"])
        started = time.perf_counter()
        for start in range(0, len(bodies), WINDOW):
            await asyncio.gather(*(
                js.publish(
                    f"{subject}.bench.s", body,
                    headers={"Nats-Msg-Id": str(uuid.uuid4())},
                )
                for body in bodies[start:start + WINDOW]
            ))
        seconds = time.perf_counter() - started
        await js.delete_stream(stream)
        return seconds
    finally:
        await nc.close()


async def redis_streams(url: str, bodies: Sequence[bytes]) -> float:
    import redis.asyncio as redis

    key = f"bench-raw:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    try:
        started = time.perf_counter()
        for start in range(0, len(bodies), WINDOW):
            pipe = client.pipeline(transaction=False)
            for body in bodies[start:start + WINDOW]:
                pipe.xadd(key, {"body": body, "id": str(uuid.uuid4())})
            await pipe.execute()
        seconds = time.perf_counter() - started
        await client.delete(key)
        return seconds
    finally:
        await client.aclose()


RAW = {"amqp": rabbitmq, "nats": jetstream, "redis": redis_streams}
