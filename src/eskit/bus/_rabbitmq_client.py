"""The aio-pika edge shared by the RabbitMQ sink and source: connect, declare, map errors."""

from __future__ import annotations

import asyncio
import logging

from eskit.bus._rabbitmq_options import RabbitOptions
from eskit.errors import BrokerUnavailableError, BusError, MissingExtraError

try:
    import aio_pika
    import aiormq
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
    from pamqp.commands import Basic
except ImportError as exc:  # pragma: no cover - only without the extra
    raise MissingExtraError("rabbitmq", "the RabbitMQ event bus", name=exc.name) from exc

# The third-party names are handed on from here, so that every RabbitMQ module
# imports them through the one guard that explains a missing extra.
log = logging.getLogger(__name__)

__all__ = [
    "CONNECTION_ERRORS",
    "AbstractChannel",
    "AbstractConnection",
    "AbstractIncomingMessage",
    "Basic",
    "aio_pika",
    "aiormq",
    "close_quietly",
    "connect",
    "declare_exchange",
    "text",
    "unavailable",
]

CONNECTION_ERRORS = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError,
                      ConnectionError, OSError, asyncio.TimeoutError)


def unavailable(what: str, exc: BaseException) -> BrokerUnavailableError:
    """The typed error for a client-library failure, naming what was being done."""
    return BrokerUnavailableError(f"RabbitMQ {what}: {type(exc).__name__}: {exc}")


async def connect(options: RabbitOptions, default_name: str) -> AbstractConnection:
    """A new connection, named for ``rabbitmqctl list_connections``, or BrokerUnavailableError."""
    name = options.name or default_name
    try:
        async with asyncio.timeout(options.connect_timeout):
            # A plain (not robust) connection: a lost connection must surface
            # to the caller, who reconnects and republishes what was unconfirmed.
            connection = await aio_pika.connect(
                options.connect_url, client_properties={"connection_name": name}
            )
    except CONNECTION_ERRORS as exc:
        raise unavailable(f"connect to {options.safe_url} failed", exc) from exc
    return connection


async def declare_exchange(channel: AbstractChannel, name: str) -> None:
    """Declare the durable topic exchange (idempotent); BusError if it exists otherwise."""
    try:
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise BusError(f"RabbitMQ exchange {name!r} exists with other settings: {exc}") from exc


def text(value: object) -> str:
    """A header value as text (AMQP hands some strings over as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def close_quietly(connection: AbstractConnection) -> None:
    """Close ``connection``, which may already be broken, without masking the error at hand."""
    if connection.is_closed:
        return
    try:
        await connection.close()
    except CONNECTION_ERRORS:
        log.debug("closing a RabbitMQ connection failed", exc_info=True)
