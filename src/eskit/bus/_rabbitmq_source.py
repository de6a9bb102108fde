"""The consuming half of the RabbitMQ bus: :class:`RabbitMQSource` (see eskit.bus.rabbitmq)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from eskit.bus._rabbitmq_client import (
    CONNECTION_ERRORS,
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    aio_pika,
    aiormq,
    close_quietly,
    connect,
    declare_exchange,
    text,
    unavailable,
)
from eskit.bus._rabbitmq_options import (
    RabbitOptions,
    check_group,
    delay_bucket_ms,
    parse_url,
    retry_queue_expiry_ms,
)
from eskit.bus.source import DeadMessage, Delivery, IncomingMessage, Source
from eskit.errors import BrokerUnavailableError, BusError, InvalidInputError

__all__ = ["RabbitMQSource", "declare_group"]

log = logging.getLogger(__name__)

_MAX_REASON = 8 * 1024
_ATTEMPTS = "x-eskit-attempts"
_REASON = "x-eskit-reason"
_DEAD_AT = "x-eskit-dead-at"
_REPLAY = "x-eskit-replay"
# Headers the broker adds on delivery and dead-lettering: a copy we publish
# again (retry, dead letter, replay) starts without them.
_BROKER_HEADERS = frozenset(
    {
        "x-death", "x-delivery-count", "x-acquired-count", "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
        "x-last-death-reason", _REASON, _DEAD_AT,
    }
)

_LOST = object()
_CLOSED = object()


def _queue_arguments(target: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": target,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # at-least-once dead-lettering requires it
    }


async def declare_group(channel: AbstractChannel, options: RabbitOptions, group: str) -> None:
    """Declare ``group``'s dead-letter queue and queue, and bind it (idempotent).

    Raises :class:`~eskit.BusError` if the queue exists with other arguments.
    """
    queue_name = f"{options.exchange}.{group}"
    dead = f"{queue_name}.dead"
    arguments = _queue_arguments(dead)
    if options.delivery_limit:
        arguments["x-delivery-limit"] = options.delivery_limit
    try:
        await channel.declare_queue(dead, durable=True, arguments={"x-queue-type": "quorum"})
        queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise BusError(f"RabbitMQ queue {queue_name!r} exists with other settings "
                       f"(delivery_limit?): {exc}") from exc
    for key in options.bindings:
        await queue.bind(options.exchange, routing_key=key)


class _RabbitDelivery(Delivery):
    def __init__(self, source: RabbitMQSource, raw: AbstractIncomingMessage, count: int) -> None:
        self._source = source
        self._raw = raw
        self._channel = source._channel  # settled through this channel or not at all
        self._settled = False
        self.message = IncomingMessage(
            body=raw.body, delivery_count=count,
            broker_id=raw.message_id or f"delivery-tag:{raw.delivery_tag}",
        )

    def _settle(self) -> None:
        if self._settled:
            raise BusError(f"delivery {self.message.broker_id} was already settled")
        self._settled = True

    async def ack(self) -> None:
        self._settle()
        try:
            await self._raw.ack()
        except CONNECTION_ERRORS as exc:
            raise unavailable("ack failed (the message will be redelivered)", exc) from exc

    async def retry(self, delay: float) -> None:
        ms = delay_bucket_ms(delay)
        self._settle()
        await self._source._move(self._raw, self._channel, self._source._retry_queue(ms), {
            _ATTEMPTS: self.message.delivery_count}, declare_ms=ms)

    async def dead_letter(self, reason: str) -> None:
        if not isinstance(reason, str):
            raise InvalidInputError(f"dead-letter reason must be a str, not {reason!r}")
        self._settle()
        text = reason[:_MAX_REASON].encode("utf-8", "backslashreplace").decode("utf-8")
        await self._source._move(self._raw, self._channel, self._source.dead_letter_queue, {
            _ATTEMPTS: self.message.delivery_count, _REASON: text,
            _DEAD_AT: datetime.now(UTC).isoformat()})


def _count(headers: Mapping[str, Any]) -> int:
    """Deliveries so far: earlier copies' attempts + this copy's earlier deliveries + this one.

    RabbitMQ up to 4.2 counts every return (a consumer that died included) in
    ``x-delivery-count``; 4.3 counts only failed ones there and every earlier
    delivery in ``x-acquired-count``: the larger of the two is the count here.
    """

    def number(name: str) -> int:
        value = headers.get(name, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return number(_ATTEMPTS) + max(number("x-delivery-count"), number("x-acquired-count")) + 1


class RabbitMQSource(Source):
    """A consumer group: one durable quorum queue bound to the exchange, shared by its members.

    Takes the :class:`RabbitMQSink` URL (same ``exchange``), plus:

    - ``bindings`` (default ``#``): comma-separated binding keys, e.g.
      ``account.*,*.TransferSent``; words are :func:`routing_word` encoded.
    - ``prefetch`` (default 100): unacknowledged messages per member.
    - ``delivery_limit`` (default 20, 0 = none): after this many returns of an
      unsettled message (its consumer died) the broker dead-letters it itself,
      with reason ``delivery_limit``. Fixed when the queue is first declared.
    - ``reconnect_timeout`` (seconds, default 60): how long :meth:`deliveries`
      keeps reconnecting before it raises :class:`~eskit.BrokerUnavailableError`.
    - ``name``: the connection name (default ``eskit-source-<group>``).

    ``delivery_count`` is the quorum queue's ``x-delivery-count`` + 1, plus the
    deliveries before each :meth:`~Delivery.retry` (carried in a header, as a
    retry publishes a copy). A retry or dead letter publishes the copy with a
    confirm, then acks the original: if the connection drops between the two,
    the message is there twice (at least once; the inbox drops the repeat).
    """

    scheme: ClassVar[str] = "amqp"

    def __init__(self, options: RabbitOptions, group: str) -> None:
        self._options = options
        self._group = check_group(options.exchange, group)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._inbox: asyncio.Queue[object] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, group: str) -> Self:
        return cls(parse_url(url), group)

    @property
    def destination(self) -> str:
        return f"{self._options.safe_url} queue {self.queue}"

    @property
    def queue(self) -> str:
        """The group's queue (``<exchange>.<group>``)."""
        return f"{self._options.exchange}.{self._group}"

    @property
    def dead_letter_queue(self) -> str:
        """The group's dead-letter queue (``<exchange>.<group>.dead``)."""
        return f"{self.queue}.dead"

    def _retry_queue(self, ms: int) -> str:
        return f"{self.queue}.retry.{ms}"

    async def open(self) -> None:
        self._closed = False
        await self._open()

    async def _open(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            return
        await self._disconnect()
        connection = await connect(self._options, f"eskit-source-{self._group}")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self._options.prefetch)
            await declare_exchange(channel, self._options.exchange)
            await declare_group(channel, self._options, self._group)
        except BaseException as exc:
            await close_quietly(connection)
            if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, BusError):
                raise unavailable("declaring the group's queues failed", exc) from exc
            raise
        self._connection, self._channel = connection, channel

    async def _consume(self) -> asyncio.Queue[object]:
        assert self._connection is not None
        assert self._channel is not None
        inbox: asyncio.Queue[object] = asyncio.Queue()
        source = self

        async def on_message(raw: AbstractIncomingMessage) -> None:
            inbox.put_nowait(_RabbitDelivery(source, raw, _count(raw.headers)))

        def on_close(*_: object) -> None:
            inbox.put_nowait(_LOST)

        self._connection.close_callbacks.add(on_close)
        self._channel.close_callbacks.add(on_close)
        queue = await self._channel.get_queue(self.queue, ensure=False)
        await queue.consume(on_message)
        self._inbox = inbox
        return inbox

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Deliveries as they arrive, until :meth:`close`; reconnects on a dropped connection.

        Deliveries already handed out from a lost connection can no longer be
        settled (their ack raises :class:`~eskit.BrokerUnavailableError`): the
        broker redelivers them, with a higher ``delivery_count``.
        """
        while not self._closed:
            inbox = self._inbox
            if inbox is None or self._channel is None or self._channel.is_closed:
                try:
                    inbox = await self._reconnect()
                except BrokerUnavailableError:
                    if self._closed:
                        return
                    raise
            item = await inbox.get()
            if item is _CLOSED:
                return
            if item is _LOST:
                self._inbox = None
                continue
            assert isinstance(item, _RabbitDelivery)
            yield item

    async def _reconnect(self) -> asyncio.Queue[object]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.reconnect_timeout
        pause = 0.1
        while True:
            try:
                await self._open()
                if self._closed:  # close() was called while we reconnected
                    await self._disconnect()
                    raise BrokerUnavailableError(f"RabbitMQ source {self.queue} was closed")
                return await self._consume()
            except BrokerUnavailableError:
                if self._closed or loop.time() + pause > deadline:
                    raise
                log.warning("RabbitMQ source %s: reconnecting in %.1f s", self.queue, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
            except CONNECTION_ERRORS as exc:
                await self._disconnect()
                if loop.time() > deadline:
                    raise unavailable("consume failed", exc) from exc
                await asyncio.sleep(pause)

    async def _move(self, raw: AbstractIncomingMessage, channel: AbstractChannel | None,
                    queue: str, extra: dict[str, Any], *, declare_ms: int | None = None) -> None:
        """Publish a copy of ``raw`` to ``queue`` with a confirm, then ack ``raw``."""
        if channel is None or channel is not self._channel or channel.is_closed:
            # Its channel is gone, so the broker redelivers it: a copy now would
            # only make a duplicate.
            raise BrokerUnavailableError(
                f"RabbitMQ source {self.queue}: the delivery's connection was lost; "
                "the broker redelivers it")
        try:
            if declare_ms is not None:
                # Redeclared on every retry: that renews its x-expires lease.
                arguments = _queue_arguments(self.queue)
                arguments["x-message-ttl"] = declare_ms
                arguments["x-expires"] = retry_queue_expiry_ms(declare_ms)
                await channel.declare_queue(queue, durable=True, arguments=arguments)
            await channel.default_exchange.publish(_copy(raw, extra), routing_key=queue)
            await raw.ack()
        except CONNECTION_ERRORS as exc:
            if not channel.is_closed:
                # Not moved, and its channel lives on: hand it back now, or it
                # would sit unacknowledged until the connection drops.
                try:
                    await raw.nack(requeue=True)
                except CONNECTION_ERRORS:
                    log.debug("returning a message failed", exc_info=True)
            raise unavailable(f"moving a message to {queue} failed", exc) from exc

    async def dead_letters(self, limit: int = 100) -> list[DeadMessage]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInputError(f"limit must be an int >= 0, not {limit!r}")
        found: list[DeadMessage] = []

        def collect(raw: AbstractIncomingMessage) -> bool:
            found.append(_dead(raw))
            return len(found) < limit

        if limit:
            await self._browse(collect)
        return found

    async def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and (isinstance(ids, str) or not all(isinstance(i, str) for i in ids)):
            raise InvalidInputError("ids must be a sequence of dead-letter ids (str) or None")
        wanted = None if ids is None else set(ids)
        replayed = 0
        channel = await self._open_side_channel()

        held: list[AbstractIncomingMessage] = []
        token = uuid.uuid4().hex
        try:
            dlq = await channel.get_queue(self.dead_letter_queue, ensure=False)
            while (raw := await dlq.get(no_ack=False, fail=False)) is not None:
                if (raw.headers or {}).get(_REPLAY) == token:
                    # Replayed by this very call and dead-lettered again already:
                    # stop, rather than chase it round the loop.
                    held.append(raw)
                    break
                if wanted is not None and _dead_id(raw) not in wanted:
                    held.append(raw)  # stays; back in the queue when returned below
                    continue
                copy = _copy(raw, {_REPLAY: token})
                await channel.default_exchange.publish(copy, routing_key=self.queue)
                await raw.ack()
                replayed += 1
            await _give_back(held)
        except CONNECTION_ERRORS as exc:
            raise unavailable("replaying dead letters failed", exc) from exc
        finally:
            await _close_quietly(channel)
        return replayed

    async def _open_side_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            await self.open()
        assert self._connection is not None
        try:
            return await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        except CONNECTION_ERRORS as exc:
            raise unavailable("opening a channel failed", exc) from exc

    async def _browse(self, keep_going: Callable[[AbstractIncomingMessage], bool]) -> None:
        channel = await self._open_side_channel()
        held: list[AbstractIncomingMessage] = []
        try:
            dlq = await channel.get_queue(self.dead_letter_queue, ensure=False)
            while (raw := await dlq.get(no_ack=False, fail=False)) is not None:
                held.append(raw)
                if not keep_going(raw):
                    break
            await _give_back(held)
        except CONNECTION_ERRORS as exc:
            raise unavailable("reading dead letters failed", exc) from exc
        finally:
            # Returned in order above, or by the broker when the channel closes
            # (after a failure): listing removes nothing.
            await _close_quietly(channel)

    async def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if self._inbox is not None:
            self._inbox.put_nowait(_LOST)
            self._inbox = None
        if connection is not None:
            await close_quietly(connection)

    async def close(self) -> None:
        self._closed = True
        if self._inbox is not None:
            self._inbox.put_nowait(_CLOSED)
        await self._disconnect()


async def _give_back(held: Sequence[AbstractIncomingMessage]) -> None:
    """Return ``held`` to the head of their queue, in the order they were got."""
    for raw in held:
        await raw.nack(requeue=True)


async def _close_quietly(channel: AbstractChannel) -> None:
    try:
        await channel.close()
    except CONNECTION_ERRORS:
        log.debug("closing a RabbitMQ channel failed", exc_info=True)


def _copy(raw: AbstractIncomingMessage, extra: Mapping[str, Any]) -> aio_pika.Message:
    headers = {k: v for k, v in (raw.headers or {}).items() if k not in _BROKER_HEADERS}
    headers.pop(_ATTEMPTS, None)
    headers.update(extra)
    return aio_pika.Message(
        raw.body, headers=headers, content_type=raw.content_type,
        content_encoding=raw.content_encoding, message_id=raw.message_id,
        timestamp=raw.timestamp, app_id=raw.app_id, type=raw.type,
        correlation_id=raw.correlation_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _dead_id(raw: AbstractIncomingMessage) -> str:
    return raw.message_id or hashlib.sha256(raw.body).hexdigest()[:32]


def _dead(raw: AbstractIncomingMessage) -> DeadMessage:
    headers = raw.headers or {}
    reason = headers.get(_REASON)
    dead_at: datetime | None = None
    raw_at = headers.get(_DEAD_AT)
    if isinstance(raw_at, str | bytes):
        try:
            dead_at = datetime.fromisoformat(text(raw_at))
        except ValueError:
            dead_at = None
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        # Dead-lettered by the broker itself (delivery limit, a reject by
        # another client): its x-death record says why and when.
        if reason is None:
            reason = f"broker: {text(deaths[0].get('reason', 'unknown'))}"
        when = deaths[0].get("time")
        if dead_at is None and isinstance(when, datetime):
            dead_at = when if when.tzinfo else when.replace(tzinfo=UTC)
    return DeadMessage(dead_letter_id=_dead_id(raw), body=raw.body,
                       reason=text(reason) if reason is not None else "", dead_at=dead_at)
