"""The consuming half of :mod:`eskit.bus.jetstream`: a group's durable pull consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Self
from urllib.parse import quote, unquote

from eskit.bus._jetstream_client import (  # nats-py, or MissingExtraError
    Client,
    JetStreamContext,
    Msg,
    api,
    connect,
    ensure_stream,
    nats,
)
from eskit.bus._jetstream_config import (
    JetStreamOptions,
    check_group,
    dead_subject,
    parse_url,
    replay_subject,
)
from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE
from eskit.bus.source import DeadMessage, Delivery, IncomingMessage, Source
from eskit.errors import BrokerUnavailableError, BusError, InvalidInputError, PublishRejectedError

__all__ = ["JetStreamSource"]

log = logging.getLogger("eskit.bus.jetstream")

REASON_HEADER = "Eskit-Dead-Letter-Reason"
MAX_REASON_CHARS = 1000
_MAX_REASON_HEADER = 3000  # bytes: a dead letter is its body plus headers, under max_payload
_REPLAY_FROM = "Eskit-Replayed-From"
_FETCH_WAIT = 1.0  # seconds a pull request waits on the server; bounds close()
_CHECK_IDLE = 5.0  # seconds without messages before checking that the consumer still exists


class JetStreamSource(Source):
    """A consumer group on a JetStream stream: a durable pull consumer named ``group``.

    Takes the same URL as :class:`JetStreamSink` (and its options, for creating
    the stream if no sink did yet), plus:

    - ``ack_wait`` (30 s): an unsettled delivery is redelivered after this long.
    - ``max_deliver`` (unlimited): after this many deliveries JetStream stops
      delivering a message and sends an advisory; the open members move the
      message to the dead-letter path then (a member crashing on it each time
      never gets to call :meth:`Delivery.dead_letter`). Set it above the
      consumer's retry limit.
    - ``batch`` (16): messages fetched per pull request.
    - ``filter`` (``>``): the consumer's subject filter below the prefix, e.g.
      ``account.>``; fixed when the group is first created.

    ``group`` is 1-100 of ``A-Z a-z 0-9 _ -``. Guaranteed: each message goes to
    one member at a time; an unsettled one is redelivered after ``ack_wait``, at
    once when its member closes; ``delivery_count`` is JetStream's
    ``num_delivered``. The connection reconnects by itself (nats-py), and an ack
    made while it is down is sent when it is back or lost (the message comes again).
    """

    scheme: ClassVar[str] = "nats"

    def __init__(self, options: JetStreamOptions, group: str) -> None:
        self._opts = options
        self.group = group
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._queue: asyncio.Queue[tuple[Msg, float] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[JetStreamContext.PullSubscription] = []
        self._unsettled: dict[str, Msg] = {}
        self._closed = True

    @classmethod
    def from_url(cls, url: str, *, group: str) -> Self:
        return cls(parse_url(url), check_group(group))

    @property
    def destination(self) -> str:
        o = self._opts
        return f"{o.display} stream {o.stream} ({o.filter_subject}) group {self.group}"

    async def open(self) -> None:
        if not self._closed:
            return
        opts = self._opts
        nc = await connect(opts, f"eskit-source-{self.group}", reconnect=True)
        js = nc.jetstream(timeout=opts.timeout)
        try:
            await self._declare(js)
            subs = [await js.pull_subscribe_bind(durable=self.group, stream=stream)
                    for stream in (opts.stream, opts.dlq_stream)]
        except BaseException as exc:
            await nc.close()
            if isinstance(exc, nats.errors.Error | OSError | TimeoutError):
                raise BrokerUnavailableError(f"JetStream at {opts.display}: {exc!r}") from exc
            raise
        if opts.max_deliver > 0:
            for stream in (opts.stream, opts.dlq_stream):
                await nc.subscribe(
                    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{self.group}",
                    cb=self._on_max_deliveries,
                )
        self._nc, self._js, self._closed = nc, js, False
        self._queue = asyncio.Queue(maxsize=opts.batch)
        self._subs = subs
        self._tasks = [asyncio.create_task(self._fetch(sub, stream))
                       for sub, stream in zip(subs, (opts.stream, opts.dlq_stream), strict=True)]

    async def _declare(self, js: JetStreamContext) -> None:
        """The two streams and the group's two durable consumers (idempotent)."""
        opts = self._opts
        await ensure_stream(js, opts, opts.stream, [f"{opts.prefix}.>"])
        await ensure_stream(js, opts, opts.dlq_stream, [f"{opts.prefix}_dlq.>"])
        await self._consumer(js, opts.stream, opts.filter_subject)
        await self._consumer(js, opts.dlq_stream, replay_subject(opts.prefix, self.group))

    async def _consumer(self, js: JetStreamContext, stream: str, filter_subject: str) -> None:
        config = api.ConsumerConfig(
            durable_name=self.group, ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL, ack_wait=self._opts.ack_wait,
            max_deliver=self._opts.max_deliver, filter_subject=filter_subject,
            max_ack_pending=max(1000, 4 * self._opts.batch),
        )
        try:
            existing = await js.consumer_info(stream, self.group)
        except nats.js.errors.NotFoundError:
            existing = None
        if existing is not None and existing.config.filter_subject != filter_subject:
            # The server would re-target the whole group; one member's URL must not.
            raise BusError(
                f"group {self.group} on {stream} filters {existing.config.filter_subject!r}, "
                f"not {filter_subject!r}: a group keeps the filter it was created with"
            )
        try:
            await js.add_consumer(stream, config)
        except nats.js.errors.APIError as exc:
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                raise
            raise BusError(
                f"cannot create consumer {self.group} on {stream} ({filter_subject}): {exc}; "
                "a group keeps the filter it was created with"
            ) from exc

    async def _fetch(self, sub: JetStreamContext.PullSubscription, stream: str) -> None:
        """Pull batches into the shared queue until closed (one task per consumer)."""
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not self._closed:
            try:
                msgs = await sub.fetch(self._opts.batch, timeout=_FETCH_WAIT)
            except nats.errors.TimeoutError:
                # A pull on a deleted consumer just times out: look now and then.
                if loop.time() - checked > _CHECK_IDLE and self._js is not None:
                    checked = loop.time()
                    try:
                        await self._js.consumer_info(stream, self.group)
                    except nats.js.errors.NotFoundError:
                        log.warning("%s: consumer %s on %s is gone; declaring it again",
                                    self.destination, self.group, stream)
                        with contextlib.suppress(Exception):
                            await self._declare(self._js)
                    except Exception as exc:
                        log.debug("checking consumer %s on %s: %r", self.group, stream, exc)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnecting, a stream or consumer deleted, ...
                log.warning("fetch from %s failed (%r); trying again", self.destination, exc)
                await asyncio.sleep(0.5)
                if self._js is not None and not self._closed:
                    try:  # the same durable name: this subscription's pulls reach it again
                        await self._declare(self._js)
                    except Exception as again:
                        log.warning("declaring %s failed: %r", self.destination, again)
                continue
            for msg in msgs:
                await self._queue.put((msg, loop.time()))

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._closed:
            raise BusError(f"open the source for {self.destination} first")
        loop = asyncio.get_running_loop()
        queue = self._queue
        while not self._closed:
            item = await queue.get()
            if item is None:
                return
            msg, fetched_at = item
            if loop.time() - fetched_at > self._opts.ack_wait / 3:
                # It waited here: reset its ack timer so it is not redelivered meanwhile.
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            self._unsettled[msg.reply] = msg
            yield _JetStreamDelivery(self, msg)

    async def dead_letters(self, limit: int = 100) -> list[DeadMessage]:
        if type(limit) is not int or limit < 1:
            raise InvalidInputError(f"limit must be a positive int, got {limit!r}")
        js = self._require()
        found: list[DeadMessage] = []
        async for raw in self._dead(js):
            headers = raw.headers or {}
            found.append(DeadMessage(
                dead_letter_id=str(raw.seq), body=raw.data or b"",
                reason=unquote(headers.get(REASON_HEADER, "")), dead_at=raw.time,
            ))
            if len(found) >= limit:
                break
        return found

    async def _dead(self, js: JetStreamContext) -> AsyncIterator[api.RawStreamMsg]:
        subject, seq = dead_subject(self._opts.prefix, self.group), 1
        while True:
            try:
                raw = await js.get_msg(self._opts.dlq_stream, seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            except (nats.errors.Error, OSError) as exc:
                raise BrokerUnavailableError(f"reading dead letters: {exc!r}") from exc
            yield raw
            seq = (raw.seq or seq) + 1

    async def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and (
            isinstance(ids, str)
            or not all(isinstance(i, str) and i.isascii() and i.isdigit() and len(i) < 20
                       for i in ids)
        ):
            raise InvalidInputError("dead-letter ids are the str ids dead_letters() lists")
        js = self._require()
        moved = 0
        try:
            if ids is None:
                async for raw in self._dead(js):  # deleting behind the cursor is safe
                    moved += await self._replay(js, raw)
            for seq in dict.fromkeys(int(i) for i in ids or ()):
                try:
                    raw = await js.get_msg(self._opts.dlq_stream, seq)
                except nats.js.errors.NotFoundError:
                    continue
                moved += await self._replay(js, raw)
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnavailableError(f"replaying dead letters: {exc!r}") from exc
        return moved

    async def _replay(self, js: JetStreamContext, raw: api.RawStreamMsg) -> int:
        opts = self._opts
        if raw.subject != dead_subject(opts.prefix, self.group) or raw.seq is None:
            return 0  # another group's dead letter, or one of its replays
        headers = {**(raw.headers or {}), _REPLAY_FROM: str(raw.seq),
                   "Nats-Msg-Id": f"replay:{self.group}:{raw.seq}"}
        await js.publish(replay_subject(opts.prefix, self.group), raw.data or b"",
                         headers=headers)
        # Published first, deleted second: a crash in between replays it twice (the
        # Nats-Msg-Id dedupes that within the window), never zero times.
        await js.delete_msg(opts.dlq_stream, raw.seq)
        return 1

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """JetStream gave up on a message (``max_deliver``): put it on the dead-letter path.

        Every member gets the advisory; the ``Nats-Msg-Id`` keeps one copy. An advisory
        is not stored: one sent while no member is connected is missed, and that
        message stays in the stream, undelivered to this group (see the docs).
        """
        try:
            info = json.loads(advisory.data)
            stream, seq = str(info["stream"]), int(info["stream_seq"])
            js = self._require()
            raw = await js.get_msg(stream, seq)
            headers = {
                REASON_HEADER: _reason_header(
                    f"JetStream max_deliver reached: {info.get('deliveries')} deliveries"
                ),
                "Content-Type": (raw.headers or {}).get("Content-Type", CLOUDEVENTS_CONTENT_TYPE),
                "Eskit-Original-Subject": raw.subject or "",
                "Eskit-Delivery-Count": str(info.get("deliveries", "")),
                "Nats-Msg-Id": f"dead:{self.group}:{stream}:{seq}",
            }
            await js.publish(dead_subject(self._opts.prefix, self.group), raw.data or b"",
                             headers=headers, timeout=self._opts.timeout)
        except Exception as exc:  # a callback must not raise into nats-py
            log.error("could not dead-letter after max_deliver on %s: %r", self.destination, exc)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        js = self._require()
        meta = msg.metadata
        headers = {
            REASON_HEADER: _reason_header(reason),
            "Content-Type": (msg.headers or {}).get("Content-Type", CLOUDEVENTS_CONTENT_TYPE),
            "Eskit-Original-Subject": msg.subject,
            "Eskit-Delivery-Count": str(meta.num_delivered),
            # One dead letter per delivered message even if term() is lost and it comes again.
            "Nats-Msg-Id": f"dead:{self.group}:{meta.stream}:{meta.sequence.stream}",
        }
        try:
            await js.publish(dead_subject(self._opts.prefix, self.group), msg.data,
                             headers=headers, timeout=self._opts.timeout)
            await msg.term()
        except (nats.js.errors.APIError, nats.errors.MaxPayloadError) as exc:
            raise PublishRejectedError(f"JetStream refused the dead letter: {exc!r}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnavailableError(f"dead-lettering: {exc!r}") from exc

    def _require(self) -> JetStreamContext:
        if self._closed or self._js is None:
            raise BusError(f"the source for {self.destination} is not open")
        return self._js

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let the pull requests under way finish (at most _FETCH_WAIT) rather than cancel
        # them: one left waiting on the server would swallow the redeliveries below.
        held = list(self._unsettled.values())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _FETCH_WAIT + 2
        tasks = set(self._tasks)
        while True:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    held.append(item[0])
            if not tasks or loop.time() > deadline:
                break
            _, tasks = await asyncio.wait(tasks, timeout=0.05)
        for task in tasks:
            task.cancel()
        self._tasks = []
        self._unsettled.clear()
        self._queue.put_nowait(None)  # wakes a deliveries() waiting on the queue
        nc, self._nc, self._js = self._nc, None, None
        if nc is None:
            return
        subs, self._subs = self._subs, []
        # Unsubscribe before handing anything back: a pull request of ours that the
        # server still holds (its expiry races the client's timeout) would otherwise be
        # the first taker of a nak'd message, and nobody would read it until ack_wait.
        # Without interest on its inbox the server drops that request instead.
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.flush(), timeout=2)
        with contextlib.suppress(Exception):
            for msg in held:
                await msg.nak()
            await asyncio.wait_for(nc.flush(), timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=self._opts.timeout)


class _JetStreamDelivery(Delivery):
    def __init__(self, source: JetStreamSource, msg: Msg) -> None:
        meta = msg.metadata
        self.message = IncomingMessage(
            body=msg.data, delivery_count=meta.num_delivered,
            broker_id=f"{meta.stream}:{meta.sequence.stream}",
        )
        self._source = source
        self._msg = msg

    def _settle(self) -> Msg:
        if self._source._unsettled.pop(self._msg.reply, None) is None:
            raise InvalidInputError(
                f"delivery {self.message.broker_id} was settled already (or its source closed)"
            )
        return self._msg

    async def ack(self) -> None:
        msg = self._settle()
        try:
            await msg.ack()
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnavailableError(f"ack failed: {exc!r}") from exc

    async def retry(self, delay: float) -> None:
        if not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise InvalidInputError(f"retry delay must be a finite number >= 0, got {delay!r}")
        msg = self._settle()
        try:
            await msg.nak(delay=delay)
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnavailableError(f"nak failed: {exc!r}") from exc

    async def dead_letter(self, reason: str) -> None:
        if not isinstance(reason, str):
            raise InvalidInputError(f"a dead-letter reason must be a str, got {reason!r}")
        reason = reason.encode("utf-8", "backslashreplace").decode()  # lone surrogates
        msg = self._settle()
        await self._source._dead_letter(msg, reason)


def _reason_header(reason: str) -> str:
    """``reason`` as a header value: percent-encoded (no CR/LF), cut to fit the bounds."""
    value = quote(reason[:MAX_REASON_CHARS], safe=" ")
    while len(value) > _MAX_REASON_HEADER:  # many multi-byte characters
        reason = reason[: len(reason) // 2]
        value = quote(reason, safe=" ")
    return value
