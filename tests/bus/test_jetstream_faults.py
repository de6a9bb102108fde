"""Fault tests: this test's own NATS connections are cut from the far side, mid-work.

The shared server cannot kill one client's connection without a system account,
and must not be restarted, so each test routes its connection through a small
TCP proxy and severs it there: the client sees the socket die, as it would on a
server restart or a dropped link. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import urlsplit

import pytest

from eskit.bus import Delivery
from eskit.bus.jetstream import JetStreamSink, JetStreamSource
from eskit.errors import BrokerUnavailableError
from tests.bus.test_jetstream import BOUND, assert_stream_order, js_url, messages, take

__all__ = ["js_url"]  # the fixture, shared with test_jetstream


class Proxy:
    """Forwards 127.0.0.1:<port> to the NATS server; :meth:`sever` aborts every link."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 4222)
        self.links: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.flowing = asyncio.Event()  # cleared: bytes are held, the link stays up
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, js_url: str) -> str:
        query = urlsplit(js_url).query
        return f"nats://127.0.0.1:{self.port}/?{query}"

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def sever(self) -> int:
        links, self.links = self.links, []
        for writer in links:
            writer.transport.abort()
        return len(links) // 2

    async def stop(self) -> None:
        self.sever()
        if self.server is not None:
            self.server.close()


def first_deliveries(got: list[Delivery]) -> list[dict[str, object]]:
    """The bodies in first-delivery order, repeats dropped (what an inbox would apply)."""
    seen: set[bytes] = set()
    out = []
    for d in got:
        if d.message.body not in seen:
            seen.add(d.message.body)
            out.append(json.loads(d.message.body))
    return out


def test_a_connection_dropped_while_publishing_loses_and_reorders_nothing(js_url: str) -> None:
    batch = messages([f"f-{i}" for i in range(6)], per_stream=500)  # 3,000 interleaved
    batches = [batch[i : i + 1000] for i in range(0, len(batch), 1000)]
    outcomes: list[str] = []

    async def publish_all(sink: JetStreamSink, proxy: Proxy) -> None:
        for number, part in enumerate(batches):
            attempt = asyncio.create_task(sink.publish(part))
            if number == 1:  # cut the link while the second batch is in flight
                for _ in range(3):
                    await asyncio.sleep(0)
                outcomes.append(f"severed {proxy.sever()}")
            while True:
                try:
                    await attempt
                    outcomes.append("confirmed")
                    break
                except BrokerUnavailableError:
                    outcomes.append("unavailable")
                    await sink.open()  # as a relay does: reopen, publish the batch again
                    attempt = asyncio.create_task(sink.publish(part))

    async def run() -> list[Delivery]:
        proxy = Proxy(js_url)
        await proxy.start()
        try:
            sink = JetStreamSink.from_url(proxy.url(js_url) + "&timeout=5")
            await sink.open()
            await asyncio.wait_for(publish_all(sink, proxy), BOUND)
            await sink.close()
        finally:
            await proxy.stop()
        async with JetStreamSource.from_url(js_url + "&batch=100", group="g") as source:
            got = await take(source, len(batch))

            async def extra() -> None:  # anything more is a duplicate the dedupe let in
                async for d in source.deliveries():
                    got.append(d)
                    await d.ack()

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(extra(), 2)
            return got

    got = asyncio.run(run())
    assert "severed 1" in outcomes, outcomes
    assert outcomes.count("confirmed") == len(batches)
    first = first_deliveries(got)
    assert len(first) == len(batch), "a message is missing"
    assert_stream_order(first)
    assert len(got) == len(batch), "the republished prefix was stored twice (dedupe failed)"


def test_a_connection_dropped_while_consuming_reconnects_and_redelivers(js_url: str) -> None:
    batch = messages([f"c-{i}" for i in range(3)], per_stream=100)

    async def run() -> tuple[list[Delivery], list[Delivery], list[Delivery]]:
        async with JetStreamSink.from_url(js_url) as sink:
            await sink.publish(batch)
        proxy = Proxy(js_url)
        await proxy.start()
        try:
            url = proxy.url(js_url) + "&batch=16"  # ack_wait=2 from js_url
            async with JetStreamSource.from_url(url, group="g") as source:
                acked = await take(source, 50)
                held = await take(source, 10, ack=False)  # a member dies mid-handler
                assert proxy.sever() == 1
                rest: list[Delivery] = []
                done = {d.message.body for d in acked}

                async def until_all() -> None:
                    async for d in source.deliveries():  # the same iterator API goes on
                        rest.append(d)
                        await d.ack()
                        done.add(d.message.body)
                        if len(done) == len(batch):
                            return

                await asyncio.wait_for(until_all(), BOUND)
                return acked, held, rest
        finally:
            await proxy.stop()

    acked, held, rest = asyncio.run(run())
    bodies = {d.message.body for d in acked + rest}
    assert bodies == {m.body for m in batch}
    again = [d for d in rest if d.message.body in {h.message.body for h in held}]
    assert {d.message.body for d in again} == {h.message.body for h in held}
    assert all(d.message.delivery_count >= 2 for d in again)


def test_a_member_cut_off_for_good_has_its_unacked_messages_go_to_another(js_url: str) -> None:
    batch = messages(["k-1", "k-2"], per_stream=10)

    async def run() -> tuple[list[Delivery], list[Delivery]]:
        async with JetStreamSink.from_url(js_url) as sink:
            await sink.publish(batch)
        proxy = Proxy(js_url)
        await proxy.start()
        doomed = JetStreamSource.from_url(proxy.url(js_url) + "&batch=5", group="g")
        await doomed.open()
        try:
            held = await take(doomed, 5, ack=False)  # then it dies: no close, no nak
            await proxy.stop()  # its link is cut and nothing listens there any more
            async with JetStreamSource.from_url(js_url, group="g") as survivor:
                return held, await take(survivor, len(batch))
        finally:
            await asyncio.wait_for(doomed.close(), BOUND)

    held, got = asyncio.run(run())
    assert {d.message.body for d in got} == {m.body for m in batch}
    again = {d.message.body: d.message.delivery_count for d in got}
    assert all(again[h.message.body] >= 2 for h in held)


def test_acks_that_never_come_are_a_broker_unavailable_error_after_the_timeout(
    js_url: str,
) -> None:
    batch = messages(["t-1", "t-2"], per_stream=50)

    async def run() -> None:
        proxy = Proxy(js_url)
        await proxy.start()
        sink = JetStreamSink.from_url(proxy.url(js_url) + "&timeout=1&in_flight=10")
        try:
            await sink.open()
            proxy.flowing.clear()  # a link that hangs: nothing arrives, nothing fails
            with pytest.raises(BrokerUnavailableError, match="no JetStream ack"):
                await asyncio.wait_for(sink.publish(batch), BOUND)
            proxy.flowing.set()
            await sink.close()
            await sink.open()  # and the relay goes on after reopening
            await sink.publish(batch)
        finally:
            await sink.close()
            await proxy.stop()
        async with JetStreamSource.from_url(js_url, group="g") as source:
            got = await take(source, len(batch))
        assert sorted(d.message.body for d in got) == sorted(m.body for m in batch)

    asyncio.run(run())
