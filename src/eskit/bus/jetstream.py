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

import orjson

from eskit.bus._jetstream_client import (  # nats-py, or MissingExtraError
    Client,
    JetStreamContext,
    Msg,
    connect,
    ensure_stream,
    nats,
)
from eskit.bus._jetstream_config import JetStreamOptions, parse_url, subject_for
from eskit.bus._jetstream_source import JetStreamSource
from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE, OutgoingMessage, Sink, stream_category
from eskit.errors import BrokerUnavailableError, InvalidInputError, PublishRejectedError

__all__ = ["JetStreamSink", "JetStreamSource"]

# JetStream error codes that mean "not now" rather than "no": the cluster is unavailable.
_UNAVAILABLE_CODES = frozenset({10008})


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
        self._window: asyncio.Semaphore | None = None
        self._inbox = ""
        self._acks: dict[str, asyncio.Future[bytes]] = {}
        self._sent = 0

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
        js = nc.jetstream(timeout=self._opts.timeout)
        try:
            await ensure_stream(js, self._opts, self._opts.stream, [f"{self._opts.prefix}.>"])
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            await nc.close()
            raise BrokerUnavailableError(f"JetStream at {self._opts.display}: {exc!r}") from exc
        except BaseException:
            await nc.close()
            raise
        inbox = nc.new_inbox()
        try:
            await nc.subscribe(f"{inbox}.*", cb=self._on_reply_async)
        except (nats.errors.Error, OSError) as exc:
            await nc.close()
            raise BrokerUnavailableError(f"JetStream at {self._opts.display}: {exc!r}") from exc
        self._inbox, self._acks, self._sent = inbox, {}, 0
        self._window = asyncio.Semaphore(self._opts.in_flight)
        self._nc, self._js, self._lost = nc, js, lost

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        subjects: dict[str, str] = {}  # a batch holds runs of one stream: escape each id once
        prepared = [self._prepare(m, subjects) for m in messages]  # typed errors before any I/O
        if not prepared:
            return
        nc, lost, window = self._nc, self._lost, self._window
        if nc is None or lost is None or window is None or lost.is_set():
            raise BrokerUnavailableError(f"the sink for {self.destination} is not open")
        timeout, loop = self._opts.timeout, asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = []
        lost_wait = asyncio.ensure_future(lost.wait())
        try:
            try:
                # One deadline, pushed on at each send, bounds a stall on a full window.
                async with asyncio.timeout(timeout) as deadline:
                    for subject, body, headers in prepared:
                        await window.acquire()
                        self._sent += 1
                        token = str(self._sent)
                        fut: asyncio.Future[bytes] = loop.create_future()
                        fut.add_done_callback(lambda _: window.release())
                        self._acks[token] = fut
                        futures.append(fut)
                        await nc.publish(subject, body, reply=f"{self._inbox}.{token}",
                                         headers=headers)
                        deadline.reschedule(loop.time() + timeout)
            except TimeoutError:
                raise BrokerUnavailableError(
                    f"no JetStream ack within {timeout} s from {self.destination}"
                ) from None
            except nats.errors.MaxPayloadError as exc:
                raise PublishRejectedError(f"a message is over max_payload: {exc!r}") from exc
            except (nats.errors.Error, OSError) as exc:
                raise BrokerUnavailableError(
                    f"lost the connection to {self.destination}: {exc!r}"
                ) from exc
            # One waiter for all acks, raced against the connection: waiting on each
            # future apart would cost O(n^2) callbacks.
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
            for fut in futures:  # in order: the first refusal of the batch is raised
                self._check_ack(fut.result())
        finally:
            lost_wait.cancel()
            for fut in futures:
                fut.cancel()  # no-op for acked ones; frees the window for the rest
            for number in range(self._sent - len(futures) + 1, self._sent + 1):
                self._acks.pop(str(number), None)

    async def _on_reply_async(self, msg: Msg) -> None:
        self._on_reply(msg)

    def _on_reply(self, msg: Msg) -> None:
        """A JetStream publish ack (or error, or no-responders status) for one message.

        Hand-written on purpose: nats-py's ``publish_async`` (2.16) raises inside its
        reply callback on a JetStream error reply and never completes that future, so
        a refusal would look like a timeout, and the relay would retry it forever.
        """
        fut = self._acks.pop(msg.subject.rpartition(".")[2], None)
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503" and not msg.data:
            fut.set_result(b"")  # no responders: no stream captures the subject
        else:
            fut.set_result(msg.data)

    def _prepare(
        self, message: OutgoingMessage, subjects: dict[str, str]
    ) -> tuple[str, bytes, dict[str, str]]:
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
        stream_id = str(message.event.stream_id)
        subject = subjects.get(stream_id)
        if subject is None:
            subject = subjects[stream_id] = self.subject(message)
        return subject, message.body, headers

    def _check_ack(self, reply: bytes) -> None:
        if not reply:
            # No stream captures the subject right now (deleted, say): reopening
            # declares it again, so this is worth a retry.
            raise BrokerUnavailableError(f"no JetStream stream answered on {self.destination}")
        try:
            ack = orjson.loads(reply)
        except ValueError:
            raise PublishRejectedError(
                f"JetStream sent an unreadable ack: {reply[:200]!r}"
            ) from None
        if "error" in ack:
            error = ack["error"]
            if error.get("err_code") in _UNAVAILABLE_CODES:
                raise BrokerUnavailableError(f"JetStream is unavailable: {error}")
            raise PublishRejectedError(f"JetStream refused a message: {error}")
        if ack.get("stream") != self._opts.stream:
            raise PublishRejectedError(
                f"stored in stream {ack.get('stream')}, not {self._opts.stream}"
            )

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=self._opts.timeout)
