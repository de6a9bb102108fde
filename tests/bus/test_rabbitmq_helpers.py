"""Helpers (no tests) for the RabbitMQ bus tests: events, clean-up, dropping one connection."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aio_pika

from eskit import InMemoryEventStore, NewEvent
from eskit.bus import Delivery, OutgoingMessage
from eskit.bus.rabbitmq import RabbitMQSource

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 90) -> T:
    """Run ``coro`` with a hard bound, so a hung broker fails the test instead of the session."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def messages(streams: Iterable[str], per_stream: int, body_size: int = 0) -> list[OutgoingMessage]:
    """Recorded events, round-robin over ``streams`` (interleaved), as OutgoingMessages.

    The body is ``<stream>|<version>`` padded, so a consumer can check order.
    """
    store = InMemoryEventStore()
    names = list(streams)
    for version in range(per_stream):
        for stream in names:
            store.append(stream, [NewEvent("Happened", {"n": version})])
    out = []
    for event in store.read_all():
        body = f"{event.stream_id}|{event.version}|".encode()
        out.append(OutgoingMessage(event, body + b"x" * max(0, body_size - len(body))))
    return out


def key(body: bytes) -> tuple[str, int]:
    stream, version, _ = body.decode().rsplit("|", 2)
    return stream, int(version)


async def take(source: RabbitMQSource, count: int, *, ack: bool = True) -> list[Delivery]:
    """The next ``count`` deliveries of ``source`` (acked unless ``ack=False``)."""
    got: list[Delivery] = []
    if count == 0:
        return got
    async for delivery in source.deliveries():
        if ack:
            await delivery.ack()
        got.append(delivery)
        if len(got) == count:
            break
    return got


async def nothing_within(source: RabbitMQSource, seconds: float) -> bool:
    """True if ``source`` delivers nothing for ``seconds``."""
    iterator = source.deliveries().__aiter__()
    try:
        await asyncio.wait_for(iterator.__anext__(), seconds)
    except TimeoutError:
        return True
    return False


async def cleanup(url: str, exchange: str, queues: Iterable[str]) -> None:
    connection = await aio_pika.connect(url)
    try:
        for name in queues:
            channel = await connection.channel()
            await channel.queue_delete(name)
            await channel.close()
        channel = await connection.channel()
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@asynccontextmanager
async def topology(url: str, exchange: str, groups: Iterable[str],
                   retry_ms: Iterable[int] = ()) -> AsyncIterator[None]:
    """Deletes, afterwards, the exchange and every queue the groups declared."""
    try:
        yield
    finally:
        queues = []
        for group in groups:
            queues += [f"{exchange}.{group}", f"{exchange}.{group}.dead"]
            queues += [f"{exchange}.{group}.retry.{ms}" for ms in retry_ms]
        await cleanup(url, exchange, queues)


async def _ctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def drop_connection(name: str) -> int:
    """Close, from the server side, the connections named ``name`` (only those); how many."""
    listing = await _ctl("list_connections", "--no-table-headers", "pid", "client_properties")
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if re.search(r'\{"connection_name","' + re.escape(name) + r'"\}', line)
    ]
    for pid in pids:
        await _ctl("close_connection", pid, "eskit fault test")
    return len(pids)
