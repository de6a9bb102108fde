"""The in-process broker's own behaviour: URLs, fault hooks, settling rules, late groups."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from eskit import BrokerUnavailableError, Event, InvalidInputError, PublishRejectedError
from eskit.bus.cloudevents import to_cloudevent
from eskit.bus.memory import MemoryBroker, MemorySink, MemorySource
from eskit.bus.sink import OutgoingMessage
from tests.bus.conftest import unique_name


@pytest.fixture
def name() -> Iterator[str]:
    broker = unique_name("mem")
    yield broker
    MemoryBroker.forget(broker)


def _messages(count: int) -> list[OutgoingMessage]:
    out = []
    for n in range(1, count + 1):
        event = Event(uuid.uuid4(), "s-1", "T", {"n": n}, datetime.now(UTC), n, n)
        out.append(OutgoingMessage(event, to_cloudevent(event)))
    return out


@pytest.mark.parametrize("url", [
    "memory://", "memory://a b", "memory://x?y=1", "memory://x/path", "amqp://x",
    "memory://" + "x" * 201, 3,
])
def test_bad_memory_urls_are_invalid_input(url: object) -> None:
    with pytest.raises(InvalidInputError):
        MemorySink.from_url(url)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        MemorySource.from_url(url, group="g")  # type: ignore[arg-type]


def test_fail_publish_publishes_a_prefix_then_raises(name: str) -> None:
    async def scenario() -> None:
        sink = MemorySink(name)
        await sink.open()
        sink.broker.fail_publish(times=2, after=1)
        messages = _messages(3)
        for _ in (1, 2):
            with pytest.raises(BrokerUnavailableError):
                await sink.publish(messages)
            with pytest.raises(BrokerUnavailableError):  # a dropped connection stays dropped
                await sink.publish(messages)
            await sink.open()
        await sink.publish(messages)
        assert sink.broker.published == [messages[0].body] * 2 + [m.body for m in messages]
        sink.broker.fail_publish(error=PublishRejectedError("nack"))
        with pytest.raises(PublishRejectedError):
            await sink.publish(messages)
        with pytest.raises(InvalidInputError):
            sink.broker.fail_publish(times=0)

    asyncio.run(scenario())


def test_a_group_declared_late_still_gets_the_log_and_settling_twice_is_refused(
    name: str
) -> None:
    async def scenario() -> None:
        sink = MemorySink(name)
        await sink.open()
        await sink.publish(_messages(2))
        source = MemorySource(name, group="late")
        with pytest.raises(BrokerUnavailableError):
            async for _ in source.deliveries():
                pass  # not open yet
        await source.open()
        got = []
        async for delivery in source.deliveries():
            got.append(delivery)
            if len(got) == 2:
                break
        await got[0].ack()
        with pytest.raises(InvalidInputError):
            await got[0].ack()
        with pytest.raises(InvalidInputError):
            await got[1].retry(-1)
        await source.close()  # got[1] goes back to the group
        with pytest.raises(BrokerUnavailableError):
            await got[1].ack()  # its member is gone: the broker redelivers it
        assert sink.broker.groups() == ["late"]
        assert await source.replay_dead_letters() == 0
        with pytest.raises(InvalidInputError):
            await source.replay_dead_letters("1")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            await source.dead_letters(-1)

    asyncio.run(scenario())


def test_replay_all_dead_letters(name: str) -> None:
    async def scenario() -> None:
        sink, source = MemorySink(name), MemorySource(name, group="g")
        await source.open()
        await sink.open()
        await sink.publish(_messages(3))
        n = 0
        async for delivery in source.deliveries():
            await delivery.dead_letter(f"r{n}")
            n += 1
            if n == 3:
                break
        assert [d.reason for d in await source.dead_letters()] == ["r0", "r1", "r2"]
        assert [d.reason for d in await source.dead_letters(2)] == ["r0", "r1"]
        assert await source.replay_dead_letters(["nope"]) == 0
        assert await source.replay_dead_letters() == 3
        counts = []
        async for delivery in source.deliveries():
            counts.append(delivery.message.delivery_count)
            await delivery.ack()
            if len(counts) == 3:
                break
        assert counts == [1, 1, 1]  # a replay is a fresh start
        await source.close()

    asyncio.run(scenario())
