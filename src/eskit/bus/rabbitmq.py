"""RabbitMQ for the event bus: a topic exchange to publish to, one quorum queue per group.

Install with ``pip install 'eskit[rabbitmq]'`` (aio-pika). See docs/event-bus-rabbitmq.md.

Topology, for exchange ``X`` and consumer group ``G``:

- ``X``: a durable topic exchange; each event is published with the routing key
  ``<category>.<event type>`` (:func:`routing_key`), persistent, with
  publisher confirms.
- ``X.G``: the group's durable quorum queue, bound to ``X`` by each binding key.
  Its dead-letter exchange is the default exchange, routing to ``X.G.dead``
  (at-least-once dead-lettering), and its delivery limit moves a message that
  keeps coming back unsettled (a consumer killed mid-handler, again and again)
  there too.
- ``X.G.dead``: the group's dead-letter queue (quorum).
- ``X.G.retry.<ms>``: one quorum queue per retry delay (rounded to two
  significant digits), no consumers, message TTL ``<ms>``, dead-lettering back
  into ``X.G`` when a message expires. It deletes itself when unused for
  10 minutes longer than its TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from eskit.bus._rabbitmq_client import (
    CONNECTION_ERRORS,
    AbstractConnection,
    Basic,
    aiormq,
    close_quietly,
    connect,
    declare_exchange,
    unavailable,
)
from eskit.bus._rabbitmq_options import RabbitOptions, parse_url, routing_key, routing_word
from eskit.bus._rabbitmq_source import RabbitMQSource, declare_group
from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE, OutgoingMessage, Sink, stream_category
from eskit.errors import BrokerUnavailableError, BusError, InvalidInputError, PublishRejectedError

__all__ = ["RabbitMQSink", "RabbitMQSource", "routing_key", "routing_word"]

log = logging.getLogger(__name__)

_MAX_HEADERS = 64 * 1024  # a content header must fit in one frame (frame_max 128 KiB)


class RabbitMQSink(Sink):
    """Publishes events to a durable topic exchange, with publisher confirms.

    URL: ``amqp[s]://user:password@host:port/vhost?option=value&...``. Options:

    - ``exchange`` (default ``eskit``): the topic exchange, declared durable.
    - ``confirm_timeout`` (seconds, default 10): how long one message may wait
      for its confirm before :class:`~eskit.BrokerUnavailableError`.
    - ``in_flight`` (default 1000): at most this many unconfirmed messages.
    - ``mandatory`` (default false): if true, a message no queue is bound to
      is returned by the broker and raises :class:`~eskit.PublishRejectedError`;
      if false such a message is dropped by the broker (RabbitMQ's default):
      declare the groups first (``groups``, or open their sources once).
    - ``groups``: comma-separated consumer groups whose queues :meth:`open`
      declares (with the source options of this URL), so that no message
      published before a group's first consumer started is dropped.
    - ``name``: the connection name shown by ``rabbitmqctl list_connections``
      (default ``eskit-sink``); ``connect_timeout`` (seconds, default 10);
      ``heartbeat``, ``cafile``, ``capath``, ``cadata``, ``keyfile``,
      ``certfile``, ``no_verify_ssl``: handed to aio-pika as they are.
    - ``bindings``, ``prefetch``, ``delivery_limit``, ``reconnect_timeout``
      are :class:`RabbitMQSource` options, accepted so both share one URL.

    Each message: ``message_id`` = the event id, content type
    :data:`~eskit.bus.CLOUDEVENTS_CONTENT_TYPE`, persistent, timestamp, headers
    ``eskit-stream-id``, ``eskit-event-type``, ``eskit-stream-version``,
    ``eskit-position`` (decimal text: positions reach 2**128),
    ``eskit-schema-version``. RabbitMQ has no broker-side dedupe: a message
    republished after a lost confirm arrives twice, with the same ``message_id``,
    and the consumer's inbox drops the repeat.
    """

    scheme: ClassVar[str] = "amqp"

    def __init__(self, options: RabbitOptions) -> None:
        self._options = options
        self._connection: AbstractConnection | None = None
        self._channel: aiormq.Channel | None = None

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(parse_url(url))

    @property
    def destination(self) -> str:
        return f"{self._options.safe_url} exchange {self._options.exchange}"

    @property
    def exchange(self) -> str:
        """The topic exchange messages are published to."""
        return self._options.exchange

    async def open(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            return
        await self.close()
        connection = await connect(self._options, "eskit-sink")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_exchange(channel, self._options.exchange)
            for group in self._options.groups:
                await declare_group(channel, self._options, group)
            underlay = await channel.get_underlay_channel()
            assert isinstance(underlay, aiormq.Channel)  # basic_publish(wait=False) is on it
            self._channel = underlay
        except BaseException as exc:
            await close_quietly(connection)
            if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, BusError):
                raise unavailable("declaring the exchange or groups failed", exc) from exc
            raise
        self._connection = connection

    def _prepare(self, message: OutgoingMessage) -> tuple[bytes, str, Basic.Properties]:
        if not isinstance(message, OutgoingMessage) or not isinstance(message.body, bytes):
            raise InvalidInputError(f"publish expects OutgoingMessage with bytes, got {message!r}")
        event = message.event
        stream = str(event.stream_id)
        headers: dict[str, Any] = {
            "eskit-stream-id": stream,
            "eskit-event-type": event.event_type,
            "eskit-stream-version": event.version,
            # Text: a PostgreSQL position (transaction << 64 | sequence) is far past
            # the signed 64-bit integer an AMQP header can hold, and pamqp would
            # refuse the frame (the relay then retried it forever).
            "eskit-position": str(event.position),
            "eskit-schema-version": event.schema_version,
        }
        try:
            size = len(stream.encode()) + len(event.event_type.encode())
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"event {event.event_id}: stream id or type is not UTF-8: {exc}") from exc
        if size > _MAX_HEADERS:
            raise InvalidInputError(
                f"event {event.event_id}: stream id and type take {size} bytes, "
                f"more than the {_MAX_HEADERS} an AMQP header frame can carry"
            )
        properties = Basic.Properties(
            content_type=CLOUDEVENTS_CONTENT_TYPE,
            delivery_mode=2,
            message_id=message.message_id,
            timestamp=event.timestamp,
            app_id="eskit",
            headers=headers,
        )
        return message.body, routing_key(stream_category(stream), event.event_type), properties

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        prepared = [self._prepare(m) for m in messages]  # all checked before any I/O
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailableError("RabbitMQ sink is not open (call open())")
        if not prepared:
            return
        window = asyncio.Semaphore(self._options.in_flight)
        failed = False
        tasks: list[asyncio.Task[object]] = []

        def done(task: asyncio.Task[object]) -> None:
            nonlocal failed
            window.release()
            if task.cancelled() or task.exception() is not None:
                failed = True

        try:
            for body, key, properties in prepared:
                await window.acquire()
                if failed:
                    window.release()
                    break
                # Tasks start in creation order and aiormq sends each publish
                # under a FIFO lock, so the wire order is the batch order (a
                # stream is never reordered) while confirms overlap.
                task: asyncio.Task[object] = asyncio.ensure_future(
                    channel.basic_publish(
                        body, exchange=self._options.exchange, routing_key=key,
                        properties=properties, mandatory=self._options.mandatory,
                        timeout=self._options.confirm_timeout, wait=False,
                    )
                )
                task.add_done_callback(done)
                tasks.append(task)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for task in tasks:
                task.cancel()
            await self._break()
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return
        rejected = [e for e in errors if isinstance(e, aiormq.exceptions.DeliveryError)]
        if rejected and len(rejected) == len(errors):
            what = "returned it as unroutable" if isinstance(
                rejected[0], aiormq.exceptions.PublishError) else "refused it (basic.nack)"
            raise PublishRejectedError(
                f"RabbitMQ {what}: {len(rejected)} of {len(prepared)} messages "
                f"to exchange {self._options.exchange!r}"
            )
        first = next(e for e in errors if not isinstance(e, aiormq.exceptions.DeliveryError))
        refused = next((e for e in errors
                        if isinstance(e, aiormq.exceptions.ChannelPreconditionFailed)), None)
        if refused is not None:
            # The broker closed the channel over the message itself (larger than its
            # max_message_size, say): sending it again fails again, so it is not a
            # lost broker for the relay to wait out.
            await self._break()
            raise PublishRejectedError(f"RabbitMQ refused a message: {refused}") from refused
        # Confirm state is unknown after a timeout or a lost connection: drop
        # the connection, so the caller's open() starts clean.
        await self._break()
        if isinstance(first, asyncio.TimeoutError):
            raise BrokerUnavailableError(
                f"RabbitMQ did not confirm within {self._options.confirm_timeout} s"
            ) from first
        raise unavailable("publish failed", first) from first

    async def _break(self) -> None:
        try:
            await self.close()
        except Exception:  # closing a broken connection may fail again
            log.debug("closing a broken RabbitMQ connection failed", exc_info=True)

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await close_quietly(connection)
