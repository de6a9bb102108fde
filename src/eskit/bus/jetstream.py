"""NATS JetStream: a :class:`JetStreamSink` that publishes with acks, a :class:`JetStreamSource`.

Layout on the server, for ``nats://host:4222/?stream=ESKIT&prefix=eskit``:

- the stream ``ESKIT`` captures ``eskit.>``; each event is published on
  ``eskit.<category>.<stream id>`` (tokens escaped by
  :func:`~eskit.bus._jetstream_config.subject_token`) with ``Nats-Msg-Id`` = the
  event id, so JetStream drops a repeat within the duplicate window;
- a consumer group is a durable pull consumer of that name on ``ESKIT``;
- dead letters go to the stream ``ESKIT_DLQ`` (subjects ``eskit_dlq.>``), on
  ``eskit_dlq.<group>.dead``; a replay moves them to ``eskit_dlq.<group>.replay``,
  which only that group's second durable consumer (same name, on ``ESKIT_DLQ``)
  reads, so a replay reaches that group and no other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from eskit.bus._jetstream_client import (  # nats-py, or MissingExtraError
    Client,
    JetStreamContext,
    api,
    connect,
    ensure_stream,
    nats,
)
from eskit.bus._jetstream_config import JetStreamOptions, parse_url, subject_for
from eskit.bus._jetstream_source import JetStreamSource
from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE, OutgoingMessage, Sink, stream_category
from eskit.errors import BrokerUnavailableError, InvalidInputError, PublishRejectedError

__all__ = ["JetStreamSink", "JetStreamSource"]


class JetStreamSink(Sink):
    """Publishes to a JetStream stream and returns once JetStream acked every message.

    URL: ``nats://[user:password@]host[:port]/?option=value&...`` (``tls://`` for TLS,
    as nats-py does it). Options:

    - ``stream`` (``ESKIT``): the JetStream stream; created if missing, capturing
      ``<prefix>.>``. An existing stream must capture that, or ``open`` raises BusError.
    - ``prefix`` (``eskit``): subjects are ``<prefix>.<category>.<stream id>``.
    - ``timeout`` (10 s): how long to wait for an ack (and for room in the window);
      past it, :class:`~eskit.BrokerUnavailableError`.
    - ``in_flight`` (1000): messages sent ahead of their acks.
    - ``dupe_window`` (120 s), ``storage`` (``file``|``memory``), ``replicas`` (1),
      ``max_age`` (0 = keep forever): the stream's settings when this creates it.
    - ``name``: the NATS connection name (default ``eskit-sink``); ``connect_timeout`` (5 s).

    Guaranteed: messages go out in the given order on one connection and JetStream
    stores them in that order; a repeat of a message id within ``dupe_window`` is
    acked as a duplicate, not stored. nats-py's automatic reconnect is off here: a
    reconnect could send messages queued after ones lost with the old socket, so a
    lost connection fails the batch and the caller reopens and republishes it.
    Not guaranteed: a republish after ``dupe_window`` stores a second copy.
    """

    scheme: ClassVar[str] = "nats"

    def __init__(self, options: JetStreamOptions) -> None:
        self._opts = options
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lost: asyncio.Event | None = None

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(parse_url(url))

    @property
    def destination(self) -> str:
        o = self._opts
        return f"{o.display} stream {o.stream} ({o.prefix}.>)"

    def subject(self, message: OutgoingMessage) -> str:
        """The subject ``message`` is published on."""
        stream_id = str(message.event.stream_id)
        return subject_for(self._opts.prefix, stream_category(stream_id), stream_id)

    async def open(self) -> None:
        if self._nc is not None and self._js is not None and self._nc.is_connected:
            # Still connected (a reopen after a missing stream or a timeout): declare
            # the stream again, which also checks that JetStream answers.
            try:
                await ensure_stream(self._js, self._opts, self._opts.stream,
                                    [f"{self._opts.prefix}.>"])
                return
            except (nats.errors.Error, OSError, TimeoutError):
                pass  # reconnect below
        await self.close()
        lost = asyncio.Event()

        async def on_lost() -> None:
            lost.set()

        nc = await connect(self._opts, "eskit-sink", reconnect=False,
                            disconnected_cb=on_lost, closed_cb=on_lost)
        js = nc.jetstream(timeout=self._opts.timeout,
                          publish_async_max_pending=self._opts.in_flight)
        try:
            await ensure_stream(js, self._opts, self._opts.stream, [f"{self._opts.prefix}.>"])
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            await nc.close()
            raise BrokerUnavailableError(f"JetStream at {self._opts.display}: {exc!r}") from exc
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js, self._lost = nc, js, lost

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        prepared = [self._prepare(m) for m in messages]  # typed errors before any I/O
        if not prepared:
            return
        if self._js is None or self._nc is None or self._lost is None or self._lost.is_set():
            raise BrokerUnavailableError(f"the sink for {self.destination} is not open")
        js, lost, timeout = self._js, self._lost, self._opts.timeout
        futures: list[asyncio.Future[api.PubAck]] = []
        lost_wait = asyncio.ensure_future(lost.wait())
        try:
            loop = asyncio.get_running_loop()
            try:
                # One deadline, pushed on at each send, bounds a stall on a full window;
                # nats-py's own wait_stall would start a task per message.
                async with asyncio.timeout(timeout) as deadline:
                    for subject, body, headers in prepared:
                        futures.append(await js.publish_async(subject, body, headers=headers))
                        deadline.reschedule(loop.time() + timeout)
            except TimeoutError:
                raise BrokerUnavailableError(
                    f"no JetStream ack within {timeout} s from {self.destination}"
                ) from None
            except (nats.errors.Error, OSError) as exc:
                raise BrokerUnavailableError(
                    f"lost the connection to {self.destination}: {exc!r}"
                ) from exc
            # One waiter for all acks (gather fails at the first error), raced against the
            # connection: waiting on each future apart would cost O(n^2) callbacks.
            acks = asyncio.gather(*futures)
            waiters: set[asyncio.Future[Any]] = {acks, lost_wait}
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if acks not in done:
                acks.cancel()
                with contextlib.suppress(BaseException):
                    await acks
                if lost_wait in done:
                    raise BrokerUnavailableError(f"lost the connection to {self.destination}")
                raise BrokerUnavailableError(
                    f"no JetStream ack within {timeout} s from {self.destination}"
                )
            if not acks.cancelled():
                acks.exception()  # retrieved here; the failing future is reported below
            for fut in futures:  # in order: the first failure of the batch is raised
                if fut.done():
                    self._check_ack(fut)
        finally:
            lost_wait.cancel()
            for fut in futures:
                fut.cancel()  # no-op for acked ones; frees nats-py's window for the rest

    def _prepare(self, message: OutgoingMessage) -> tuple[str, bytes, dict[str, str]]:
        if not isinstance(message, OutgoingMessage):
            raise InvalidInputError(f"publish takes OutgoingMessage, got {type(message).__name__}")
        if not isinstance(message.body, bytes):
            raise InvalidInputError("an OutgoingMessage body must be bytes")
        headers = {"Nats-Msg-Id": message.message_id, "Content-Type": CLOUDEVENTS_CONTENT_TYPE,
                   "Nats-Expected-Stream": self._opts.stream}
        limit = self._nc.max_payload if self._nc is not None else 0
        if limit and len(message.body) + 256 > limit:
            raise PublishRejectedError(
                f"event {message.message_id}: {len(message.body)} bytes is over the server's "
                f"max_payload of {limit} bytes (with headers)"
            )
        return self.subject(message), message.body, headers

    def _check_ack(self, fut: asyncio.Future[Any]) -> None:
        try:
            ack = fut.result()
        except nats.js.errors.NoStreamResponseError:
            # No stream captures the subject right now (deleted, or a leader election):
            # reopening declares it again, so it is worth a retry.
            raise BrokerUnavailableError(
                f"no JetStream stream answered on {self.destination}"
            ) from None
        except nats.js.errors.APIError as exc:
            raise PublishRejectedError(f"JetStream refused a message: {exc}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnavailableError(f"publish to {self.destination} failed: {exc!r}") from exc
        if ack.stream != self._opts.stream:
            raise PublishRejectedError(f"stored in stream {ack.stream}, not {self._opts.stream}")

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=self._opts.timeout)
