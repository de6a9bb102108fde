"""The Redis Streams sink and source against the real Redis (unique keys, deleted after)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
import redis

from eskit import InMemoryEventStore, NewEvent
from eskit.bus import CLOUDEVENTS_CONTENT_TYPE, Delivery, OutgoingMessage
from eskit.bus.redis_streams import RedisStreamsSink, RedisStreamsSource
from eskit.errors import BusError, InvalidInputError, PublishRejectedError
from eskit.events import Event
from tests.bus.conftest import unique_name

TIME_LIMIT = 60.0


def run(main: Callable[[], Awaitable[Any]], limit: float = TIME_LIMIT) -> Any:
    """Run a test's coroutine, bounded in time: a hang fails instead of stalling the suite."""
    async def bounded() -> Any:
        async with asyncio.timeout(limit):
            return await main()

    return asyncio.run(bounded())


@pytest.fixture
def key(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted after the test."""
    name = unique_name("eskit-test:")
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        doomed = list(client.scan_iter(match=f"{name}*", count=1000))
        if doomed:
            client.delete(*doomed)
    finally:
        client.close()


def recorded(count: int, streams: int = 1, *, prefix: str = "account") -> list[Event]:
    """``count`` recorded events, round-robin over ``streams`` streams, in global order."""
    store = InMemoryEventStore()
    for i in range(count):
        store.append(f"{prefix}-{i % streams}", [NewEvent("Deposited", {"n": i})])
    return list(store.read_all())


def outgoing(events: list[Event], body_size: int = 0) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(e, json.dumps({"id": str(e.event_id), "stream": str(e.aggregate_id),
                                       "version": e.version, "pad": "x" * body_size}).encode())
        for e in events
    ]


def decoded(body: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(body)
    return value


async def take(source: RedisStreamsSource, count: int, settle: str = "ack") -> list[Delivery]:
    """The next ``count`` deliveries, each acked (or left unsettled with ``settle="none"``)."""
    taken: list[Delivery] = []
    async for delivery in source.deliveries():
        taken.append(delivery)
        if settle == "ack":
            await delivery.ack()
        if len(taken) == count:
            break
    return taken


async def nothing_within(source: RedisStreamsSource, seconds: float) -> bool:
    """Whether the source delivers nothing for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await take(source, 1, settle="none")
    except TimeoutError:
        return True
    return False


def sink_url(redis_url: str, key: str, extra: str = "") -> str:
    return f"{redis_url}?key={key}{extra}"


# --- publish and deliver -----------------------------------------------------------------


def test_publish_returns_after_redis_confirmed_and_the_group_gets_each_message(
    redis_url: str, key: str
) -> None:
    events = recorded(10, streams=3)

    async def main() -> None:
        async with RedisStreamsSink.from_url(sink_url(redis_url, key)) as sink:
            await sink.open()  # idempotent
            await sink.publish(outgoing(events))
            await sink.publish([])
        raw = redis.asyncio.Redis.from_url(redis_url)
        entries = await raw.xrange(key)
        await raw.aclose()
        assert len(entries) == 10  # on return, every message is in the stream
        _, fields = entries[0]
        assert fields[b"id"] == str(events[0].event_id).encode()
        assert fields[b"stream"] == b"account-0"
        assert fields[b"type"] == b"Deposited"
        assert fields[b"content_type"] == CLOUDEVENTS_CONTENT_TYPE.encode()
        async with RedisStreamsSource.from_url(sink_url(redis_url, key), group="g") as source:
            got = await take(source, 10)
        assert [decoded(d.message.body)["id"] for d in got] == [str(e.event_id) for e in events]
        assert {d.message.delivery_count for d in got} == {1}
        assert all(d.message.broker_id.startswith(key) for d in got)

    run(main)


def test_per_stream_order_holds_for_1200_interleaved_messages_in_small_transactions(
    redis_url: str, key: str
) -> None:
    events = recorded(1200, streams=7)
    url = sink_url(redis_url, key, "&batch_bytes=2000")  # many MULTI/EXEC chunks per batch

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            for start in range(0, len(events), 250):
                await sink.publish(outgoing(events[start:start + 250]))
        # And once more in one publish, split by count (1,000 a transaction), not by bytes.
        async with RedisStreamsSink.from_url(sink_url(redis_url, key + ":whole")) as sink:
            await sink.publish(outgoing(events))
        for read_url in (url, sink_url(redis_url, key + ":whole")):
            async with RedisStreamsSource.from_url(read_url + "&count=64", group="g") as source:
                got = [decoded(d.message.body) for d in await take(source, 1200)]
            assert len({m["id"] for m in got}) == 1200
            for stream in {m["stream"] for m in got}:
                versions = [m["version"] for m in got if m["stream"] == stream]
                assert versions == list(range(1, len(versions) + 1)), stream

    run(main)


def test_key_per_category_routes_by_category_and_the_source_reads_the_keys_it_is_told(
    redis_url: str, key: str
) -> None:
    accounts = recorded(4, streams=2, prefix="account")
    customers = recorded(3, streams=1, prefix="customer")
    url = sink_url(redis_url, key, "&key_per_category=1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(accounts + customers))
        raw = redis.asyncio.Redis.from_url(redis_url)
        assert await raw.xlen(f"{key}:account") == 4
        assert await raw.xlen(f"{key}:customer") == 3
        assert not await raw.exists(key)
        await raw.aclose()
        async with RedisStreamsSource.from_url(url + "&categories=customer", group="g") as source:
            got = await take(source, 3)
            assert await nothing_within(source, 0.5)  # account's key is not read
        assert {decoded(d.message.body)["stream"] for d in got} == {"customer-0"}

    run(main)


def test_two_groups_each_get_every_message(redis_url: str, key: str) -> None:
    events = recorded(50, streams=5)
    url = sink_url(redis_url, key)

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(events))
        async with (RedisStreamsSource.from_url(url, group="billing") as billing,
                    RedisStreamsSource.from_url(url, group="fraud") as fraud):
            first, second = await asyncio.gather(take(billing, 50), take(fraud, 50))
        ids = [str(e.event_id) for e in events]
        assert [decoded(d.message.body)["id"] for d in first] == ids
        assert [decoded(d.message.body)["id"] for d in second] == ids

    run(main)


def test_members_of_one_group_share_the_work_and_no_message_goes_to_both(
    redis_url: str, key: str
) -> None:
    events = recorded(300, streams=6)
    url = sink_url(redis_url, key, "&count=5")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(events))
        seen: dict[str, list[str]] = {"a": [], "b": []}
        done = asyncio.Event()

        async def member(name: str) -> None:
            async with RedisStreamsSource.from_url(f"{url}&consumer={name}", group="g") as source:
                async for delivery in source.deliveries():
                    seen[name].append(decoded(delivery.message.body)["id"])
                    await delivery.ack()
                    await asyncio.sleep(0)  # let the other member read meanwhile
                    if len(seen["a"]) + len(seen["b"]) == 300:
                        done.set()

        tasks = [asyncio.create_task(member("a")), asyncio.create_task(member("b"))]
        await done.wait()
        for task in tasks:  # a member waits for more until it is stopped
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert seen["a"]
        assert seen["b"]
        assert not set(seen["a"]) & set(seen["b"])
        assert set(seen["a"]) | set(seen["b"]) == {str(e.event_id) for e in events}

    run(main)


def test_unacked_messages_of_a_closed_member_are_claimed_by_another_with_a_higher_count(
    redis_url: str, key: str
) -> None:
    events = recorded(5)
    url = sink_url(redis_url, key, "&claim_idle=0.3&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(events))
        async with RedisStreamsSource.from_url(url + "&consumer=a", group="g") as first:
            unsettled = await take(first, 3, settle="none")
            for delivery in await take(first, 2, settle="none"):
                await delivery.ack()
        # "a" is gone, holding 3 unsettled messages: "b" claims them once they are idle.
        async with RedisStreamsSource.from_url(url + "&consumer=b", group="g") as second:
            again = await take(second, 3)
            assert await nothing_within(second, 0.8)
        assert [d.message.body for d in again] == [d.message.body for d in unsettled]
        assert {d.message.delivery_count for d in again} == {2}

    run(main)


def test_a_slow_handler_keeps_its_message_past_claim_idle(redis_url: str, key: str) -> None:
    url = sink_url(redis_url, key, "&claim_idle=0.6&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
        async with (RedisStreamsSource.from_url(url + "&consumer=slow", group="g") as slow,
                    RedisStreamsSource.from_url(url + "&consumer=other", group="g") as other):
            [held] = await take(slow, 1, settle="none")
            # Two and a half times claim_idle: the member's refresh (every claim_idle/3)
            # keeps "other" from claiming it.
            assert await nothing_within(other, 1.5)
            await held.ack()

    run(main)


def test_retry_redelivers_after_the_delay_with_a_higher_count(redis_url: str, key: str) -> None:
    url = sink_url(redis_url, key, "&claim_idle=5&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
        async with RedisStreamsSource.from_url(url, group="g") as source:
            [first] = await take(source, 1, settle="none")
            with pytest.raises(InvalidInputError):
                await first.retry(-1)
            await first.retry(0.5)
            with pytest.raises(BusError):
                await first.ack()  # settled once already
            assert await nothing_within(source, 0.3)  # not before the delay
            [second] = await take(source, 1, settle="none")
            assert second.message.body == first.message.body
            assert second.message.delivery_count == 2
            await second.retry(0)
            [third] = await take(source, 1)
            assert third.message.delivery_count == 3

    run(main)


def test_dead_letter_is_listed_with_its_reason_then_replayed_and_delivered_again(
    redis_url: str, key: str
) -> None:
    events = recorded(3)
    url = sink_url(redis_url, key, "&claim_idle=0.2&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(events))
        async with (RedisStreamsSource.from_url(url, group="g") as source,
                    RedisStreamsSource.from_url(url, group="other") as other):
            first, second, third = await take(source, 3, settle="none")
            before = datetime.now(UTC).replace(microsecond=0)
            await first.dead_letter("handler failed: ✗ \ud800")
            await second.dead_letter("second")
            await third.ack()
            assert await nothing_within(source, 0.6)  # dead: neither pending nor delivered
            dead = await source.dead_letters()
            assert [d.body for d in dead] == [first.message.body, second.message.body]
            assert dead[0].reason == "handler failed: ✗ \\ud800"
            assert dead[0].dead_at is not None
            assert dead[0].dead_at >= before
            assert [d.reason for d in await source.dead_letters(limit=1)] == [dead[0].reason]
            assert await other.dead_letters() == []  # per group
            with pytest.raises(InvalidInputError):
                await source.replay_dead_letters(["not-an-id"])
            with pytest.raises(InvalidInputError):
                await source.dead_letters(limit=0)
            assert await source.replay_dead_letters([dead[1].dead_letter_id]) == 1
            assert await source.replay_dead_letters([dead[1].dead_letter_id]) == 0  # moved once
            [replayed] = await take(source, 1)
            assert replayed.message.body == second.message.body
            assert replayed.message.delivery_count == 1
            assert await source.replay_dead_letters() == 1
            [last] = await take(source, 1)
            assert last.message.body == first.message.body
            assert await source.dead_letters() == []
            # "other" had all three to itself, and gets no replayed copy.
            assert len(await take(other, 3)) == 3
            assert await nothing_within(other, 0.4)
        raw = redis.asyncio.Redis.from_url(redis_url)
        assert await raw.xlen(f"{key}:replay:g") == 0  # settled replays are deleted
        assert (await raw.xpending(key, "g"))["pending"] == 0
        await raw.aclose()

    run(main)


def test_a_1_mb_message_and_a_2048_byte_odd_stream_id_route_and_arrive(
    redis_url: str, key: str
) -> None:
    odd = "Ü.* >#:%\t"
    stream_id = (odd * 400).encode()[:2040].decode("utf-8", "ignore")
    stream_id = stream_id + "-" + "x" * (2048 - len(stream_id.encode()) - 1)
    assert len(stream_id.encode()) == 2048
    store = InMemoryEventStore()
    store.append(stream_id, [NewEvent("Odd", {})])
    store.append("big-1", [NewEvent("Big", {})])
    odd_event, big_event = store.read_all()
    huge = b"\xff" * (1 << 20)
    messages = [OutgoingMessage(odd_event, b"odd"), OutgoingMessage(big_event, huge)]

    async def main() -> None:
        for extra in ("", "&key_per_category=1"):
            url = sink_url(redis_url, key, extra)
            async with RedisStreamsSink.from_url(url) as sink:
                await sink.publish(messages)
            categories = ",".join(quote(c, safe="") for c in ("big", stream_id.partition("-")[0]))
            source_url = url + (f"&categories={categories}" if extra else "")
            async with RedisStreamsSource.from_url(source_url, group="g") as source:
                got = await take(source, 2)
            assert sorted(d.message.body for d in got) == sorted([b"odd", huge])

    run(main)


def test_a_refused_xadd_is_publish_rejected(redis_url: str, key: str) -> None:
    async def main() -> None:
        raw = redis.asyncio.Redis.from_url(redis_url)
        await raw.set(key, "not a stream")
        async with RedisStreamsSink.from_url(sink_url(redis_url, key)) as sink:
            with pytest.raises(PublishRejectedError, match="WRONGTYPE"):
                await sink.publish(outgoing(recorded(2)))
        assert await raw.get(key) == b"not a stream"
        await raw.aclose()

    run(main)


def test_a_refused_xadd_mid_batch_stops_the_batch_there(redis_url: str, key: str) -> None:
    # account-0, card-0 (its key is not a stream), account-0: the first is written, the
    # third never is, so account-0's second event cannot land before card-0's is retried.
    events = recorded(2, prefix="account")
    card = recorded(1, prefix="card")
    batch = outgoing([events[0], card[0], events[1]])

    async def main() -> None:
        raw = redis.asyncio.Redis.from_url(redis_url)
        await raw.set(f"{key}:card", "not a stream")
        url = sink_url(redis_url, key, "&key_per_category=1")
        async with RedisStreamsSink.from_url(url) as sink:
            with pytest.raises(PublishRejectedError, match="WRONGTYPE"):
                await sink.publish(batch)
        written = await raw.xrange(f"{key}:account")
        assert [fields[b"id"].decode() for _, fields in written] == [str(events[0].event_id)]
        await raw.aclose()

    run(main)


def test_maxlen_trims_each_key_to_about_that_many_entries(redis_url: str, key: str) -> None:
    async def main() -> None:
        async with RedisStreamsSink.from_url(sink_url(redis_url, key, "&maxlen=10")) as sink:
            for _ in range(5):
                await sink.publish(outgoing(recorded(200)))
        raw = redis.asyncio.Redis.from_url(redis_url)
        length = await raw.xlen(key)
        await raw.aclose()
        assert 10 <= length < 1000  # "~": Redis trims whole macro nodes, never below 10

    run(main)


def test_a_source_reopens_and_declares_its_group_again_when_the_key_was_deleted(
    redis_url: str, key: str
) -> None:
    url = sink_url(redis_url, key, "&block=0.1")

    async def main() -> None:
        source = RedisStreamsSource.from_url(url, group="g")
        with pytest.raises(BusError):
            await anext(aiter(source.deliveries()))  # not open
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
            await source.open()
            await take(source, 1)
            await source.close()
            await source.close()
            await source.open()  # reconnect by opening again
            raw = redis.asyncio.Redis.from_url(redis_url)
            await raw.delete(key)  # group and all: the source declares them again
            await raw.aclose()
            reading = asyncio.create_task(take(source, 1))
            await asyncio.sleep(0.3)
            await sink.publish(outgoing(recorded(1)))
            assert len(await reading) == 1
        await source.close()

    run(main)


def test_a_members_refresh_never_takes_back_a_message_another_member_claimed(
    redis_url: str, key: str
) -> None:
    url = sink_url(redis_url, key, "&claim_idle=0.3&block=0.1&consumer=a")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
        raw = redis.asyncio.Redis.from_url(redis_url)
        async with RedisStreamsSource.from_url(url, group="g") as source:
            [held] = await take(source, 1, settle="none")
            entry_id = held.message.broker_id.split(" ")[1]
            await raw.xclaim(key, "g", "b", 0, [entry_id], justid=True)  # "a" was cut off
            await asyncio.sleep(0.5)  # several of "a"'s refreshes
            [row] = await raw.xpending_range(key, "g", "-", "+", 10)
            assert row["consumer"] == b"b"
        await raw.aclose()

    run(main)


def test_a_retry_longer_than_claim_idle_comes_back_after_claim_idle(
    redis_url: str, key: str
) -> None:
    url = sink_url(redis_url, key, "&claim_idle=0.4&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
        async with RedisStreamsSource.from_url(url, group="g") as source:
            [first] = await take(source, 1, settle="none")
            await first.retry(3600)  # cut to claim_idle: documented
            [again] = await take(source, 1)
            assert again.message.delivery_count == 2

    run(main)


def test_racing_replays_move_each_dead_letter_once(redis_url: str, key: str) -> None:
    url = sink_url(redis_url, key, "&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(150)))
        async with (RedisStreamsSource.from_url(url, group="g") as one,
                    RedisStreamsSource.from_url(url, group="g") as two):
            for delivery in await take(one, 150, settle="none"):
                await delivery.dead_letter("no")
            assert len(await one.dead_letters(limit=1000)) == 150
            moved = await asyncio.gather(one.replay_dead_letters(), two.replay_dead_letters())
            assert sum(moved) == 150
            assert len(await take(one, 150)) == 150
            assert await nothing_within(one, 0.3)

    run(main)


def test_close_ends_a_waiting_iteration(redis_url: str, key: str) -> None:
    url = sink_url(redis_url, key, "&block=5")

    async def main() -> None:
        source = RedisStreamsSource.from_url(url, group="g")
        await source.open()
        reading = asyncio.create_task(take(source, 1))
        await asyncio.sleep(0.2)  # blocked in XREADGROUP
        await source.close()
        assert await reading == []  # ended without a delivery, long before block's 5 s

    run(main, limit=4)


def test_a_huge_dead_letter_reason_is_kept_truncated_and_says_so(
    redis_url: str, key: str
) -> None:
    url = sink_url(redis_url, key, "&block=0.1")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
        async with RedisStreamsSource.from_url(url, group="g") as source:
            [delivery] = await take(source, 1, settle="none")
            with pytest.raises(InvalidInputError):
                await delivery.dead_letter(b"bytes")  # type: ignore[arg-type]
            await delivery.dead_letter("Traceback " + "x" * 1_000_000)
            [dead] = await source.dead_letters()
        assert dead.reason.startswith("Traceback xxx")
        assert dead.reason.endswith("(reason truncated)")
        assert len(dead.reason) < 20_000

    run(main)


def test_max_deliveries_dead_letters_a_message_no_member_ever_settles(
    redis_url: str, key: str
) -> None:
    url = sink_url(redis_url, key, "&claim_idle=0.1&block=0.05&max_deliveries=3")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(recorded(1)))
        counts = []
        for member in ("a", "b", "c", "d"):  # each "crashes": closes without settling
            async with RedisStreamsSource.from_url(f"{url}&consumer={member}", group="g") as src:
                if member == "d":
                    assert await nothing_within(src, 0.6)
                    [dead] = await src.dead_letters()
                else:
                    [delivery] = await take(src, 1, settle="none")
                    counts.append(delivery.message.delivery_count)
        assert counts == [1, 2, 3]
        assert dead.reason == "delivered 3 times and never settled (max_deliveries=3)"

    run(main)
