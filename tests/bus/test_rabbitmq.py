"""The RabbitMQ sink and source against the real server (one exchange and group per test)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from urllib.parse import quote

import aio_pika
import pytest

from eskit import (
    BrokerUnavailableError,
    BusError,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    PublishRejectedError,
)
from eskit.bus import OutgoingMessage
from eskit.bus._rabbitmq_options import delay_bucket_ms, parse_url, routing_key, routing_word
from eskit.bus.rabbitmq import RabbitMQSink, RabbitMQSource
from tests.bus.conftest import unique_name
from tests.bus.test_rabbitmq_helpers import key, messages, nothing_within, run, take, topology


def _url(base: str, exchange: str, **options: object) -> str:
    # Percent-encoded: a binding key's own %2E must reach the broker as %2E.
    pairs = {"exchange": exchange, **options}.items()
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in pairs)
    return f"{base}?{query}"


def test_confirmed_messages_are_delivered_with_their_ids_and_count(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["account-1", "account-2"], 2)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSource.from_url(url, group=group) as source:
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            got = await take(source, len(batch))
            assert [d.message.body for d in got] == [m.body for m in batch]
            assert [d.message.broker_id for d in got] == [m.message_id for m in batch]
            assert {d.message.delivery_count for d in got} == {1}
            assert await nothing_within(source, 0.5)

    run(scenario())


def test_per_stream_order_holds_over_interleaved_streams(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange, in_flight=64)
    batch = messages([f"order-{i}" for i in range(7)], 180)  # 1,260 messages
    assert len(batch) >= 1000

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSource.from_url(url, group=group) as source:
            async with RabbitMQSink.from_url(url) as sink:
                for start in range(0, len(batch), 300):  # several batches, as a relay does
                    await sink.publish(batch[start:start + 300])
            got = await take(source, len(batch))
        seen: dict[str, list[int]] = defaultdict(list)
        for delivery in got:
            stream, version = key(delivery.message.body)
            seen[stream].append(version)
        assert len(seen) == 7
        assert all(versions == list(range(1, 181)) for versions in seen.values())

    run(scenario())


def test_two_groups_each_get_every_message(rabbitmq_url: str) -> None:
    exchange, one, two = unique_name("ex"), unique_name("g"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["a-1", "b-2", "c-3"], 20)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [one, two]), \
                RabbitMQSource.from_url(url, group=one) as first, \
                RabbitMQSource.from_url(url, group=two) as second:
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            for source in (first, second):
                got = await take(source, len(batch))
                assert [d.message.body for d in got] == [m.body for m in batch]

    run(scenario())


def test_members_of_one_group_share_the_work_without_overlap(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange, prefetch=5)
    batch = messages([f"s-{i}" for i in range(4)], 50)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]):
            members = [RabbitMQSource.from_url(url, group=group) for _ in range(2)]
            for member in members:
                await member.open()
            shares: list[list[bytes]] = [[], []]
            done = asyncio.Event()

            async def work(index: int) -> None:
                async for delivery in members[index].deliveries():
                    shares[index].append(delivery.message.body)
                    await asyncio.sleep(0.002)  # a handler takes time: the other member gets work
                    await delivery.ack()
                    if sum(map(len, shares)) >= len(batch):
                        done.set()

            workers = [asyncio.create_task(work(i)) for i in range(2)]
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            await asyncio.wait_for(done.wait(), 30)
            assert await nothing_within(members[0], 0.3)
            for member in members:
                await member.close()
            await asyncio.gather(*workers)
            assert shares[0]
            assert shares[1]
            assert not set(shares[0]) & set(shares[1])
            assert sorted(shares[0] + shares[1]) == sorted(m.body for m in batch)

    run(scenario())


def test_unacked_message_goes_to_another_member_when_its_member_closes(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["loan-1"], 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]):
            first = RabbitMQSource.from_url(url, group=group)
            await first.open()
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            (held,) = await take(first, 1, ack=False)
            assert held.message.delivery_count == 1
            async with RabbitMQSource.from_url(url, group=group) as second:
                await first.close()  # dies holding the message, unacked
                (again,) = await take(second, 1)
            assert again.message.body == batch[0].body
            assert again.message.delivery_count == 2

    run(scenario())


def test_retry_redelivers_after_the_delay_with_a_higher_count(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["card-1"], 1)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with topology(rabbitmq_url, exchange, [group], retry_ms=[400, 200]), \
                RabbitMQSource.from_url(url, group=group) as source:
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            (first,) = await take(source, 1, ack=False)
            started = loop.time()
            await first.retry(0.4)
            with pytest.raises(Exception, match="already settled"):
                await first.ack()
            (second,) = await take(source, 1, ack=False)
            assert loop.time() - started >= 0.35
            assert second.message.delivery_count == 2
            assert second.message.body == batch[0].body
            assert second.message.broker_id == batch[0].message_id
            await second.retry(0.2)
            (third,) = await take(source, 1)
            assert third.message.delivery_count == 3
            assert await nothing_within(source, 0.6)

    run(scenario())


def test_dead_letter_is_listed_with_its_reason_then_replayed(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["acct-1", "acct-2"], 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSource.from_url(url, group=group) as source:
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            got = await take(source, 2, ack=False)
            await got[0].dead_letter("ValueError: bad amount ✗ \ud800")
            await got[1].dead_letter("second")
            assert await nothing_within(source, 0.5)
            listed = await source.dead_letters()
            assert await source.dead_letters() == listed  # listing removes nothing
            assert [d.dead_letter_id for d in listed] == [m.message_id for m in batch]
            assert listed[0].reason == "ValueError: bad amount ✗ \\ud800"
            assert listed[0].body == batch[0].body
            assert listed[0].dead_at is not None
            assert listed[0].dead_at.tzinfo is not None
            assert len(await source.dead_letters(limit=1)) == 1
            assert await source.replay_dead_letters([listed[1].dead_letter_id]) == 1
            (replayed,) = await take(source, 1)
            assert replayed.message.body == batch[1].body
            assert replayed.message.delivery_count == 1  # a fresh set of attempts
            assert [d.dead_letter_id for d in await source.dead_letters()] == [
                listed[0].dead_letter_id]
            assert await source.replay_dead_letters() == 1
            (last,) = await take(source, 1)
            assert last.message.body == batch[0].body
            assert await source.dead_letters() == []
            assert await source.replay_dead_letters() == 0

    run(scenario())


def test_broker_dead_letters_a_message_past_its_delivery_limit(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange, delivery_limit=1)
    batch = messages(["poison-1"], 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]):
            async with RabbitMQSink.from_url(url) as sink:
                await RabbitMQSource.from_url(url, group=group).open()  # declares the group
                await sink.publish(batch)
            for attempt in (1, 2):  # a consumer that dies mid-handler, twice
                source = RabbitMQSource.from_url(url, group=group)
                await source.open()
                (held,) = await take(source, 1, ack=False)
                assert held.message.delivery_count == attempt
                await source.close()
            async with RabbitMQSource.from_url(url, group=group) as source:
                assert await nothing_within(source, 0.5)
                (dead,) = await source.dead_letters()
                assert dead.reason == "broker: delivery_limit"
                assert dead.dead_letter_id == batch[0].message_id

    run(scenario())


def test_a_huge_message_and_an_odd_long_stream_id_route_and_arrive(rabbitmq_url: str) -> None:
    exchange, by_category, everything = unique_name("ex"), unique_name("g"), unique_name("g")
    head = "we.ird *cat# >ü€" * 90  # 1,890 bytes of dots, spaces, wildcards, non-ASCII
    stream = head + "-" + "x" * (2048 - len(head.encode()) - 1)
    assert len(stream.encode()) == 2048
    store = InMemoryEventStore()
    store.append(stream, [NewEvent("Odd.Type *#", {"n": 1})])
    store.append("plain-1", [NewEvent("Plain", {"n": 2})])
    odd, plain = store.read_all()
    huge = OutgoingMessage(odd, b"\x00\xff" * (512 * 1024))  # 1 MiB
    category = stream.partition("-")[0]
    binding = routing_key(category, "Odd.Type *#")
    assert len(binding.encode()) <= 255
    assert binding == routing_key(category, "Odd.Type *#")  # deterministic

    async def scenario() -> None:
        url = _url(rabbitmq_url, exchange)
        async with topology(rabbitmq_url, exchange, [by_category, everything]):
            bound = RabbitMQSource.from_url(
                _url(rabbitmq_url, exchange, bindings=binding), group=by_category)
            async with bound, RabbitMQSource.from_url(url, group=everything) as all_of_it:
                async with RabbitMQSink.from_url(url) as sink:
                    await sink.publish([huge, OutgoingMessage(plain, b"{}")])
                (got,) = await take(bound, 1)
                assert got.message.body == huge.body
                assert await nothing_within(bound, 0.3)  # "plain" is not bound here
                both = await take(all_of_it, 2)
                assert [d.message.body for d in both] == [huge.body, b"{}"]
                raw = both[0]._raw  # type: ignore[attr-defined]
                assert raw.headers["eskit-stream-id"] == stream
                assert raw.headers["eskit-event-type"] == "Odd.Type *#"
                assert raw.headers["eskit-stream-version"] == 1
                assert raw.content_type == "application/cloudevents+json; charset=utf-8"
                assert raw.delivery_mode == 2

    run(scenario())


def test_a_position_past_64_bits_rides_as_text(rabbitmq_url: str) -> None:
    # PostgreSQL positions are transaction << 64 | sequence: an int header refused them.
    import uuid
    from datetime import UTC, datetime

    from eskit.events import recorded_event

    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    position = (5_600_000 << 64) | 12_345
    event = recorded_event(uuid.uuid4(), "account-1", "Deposited", {"n": 1},
                           datetime.now(UTC), 2**63 - 1, position, {}, 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSource.from_url(url, group=group) as source:
            async with RabbitMQSink.from_url(url) as sink:
                await asyncio.wait_for(sink.publish([OutgoingMessage(event, b"{}")]), 10)
            (got,) = await take(source, 1)
            raw = got._raw  # type: ignore[attr-defined]
            assert raw.headers["eskit-position"] == str(position)
            assert raw.headers["eskit-stream-version"] == 2**63 - 1

    run(scenario())


def test_routing_words_escape_separators_and_wildcards_and_stay_short() -> None:
    assert routing_key("account", "AccountOpened") == "account.AccountOpened"
    assert routing_word("a.b*c#d e~%") == "a%2Eb%2Ac%23d%20e%7E%25"
    assert routing_word("ü") == "%C3%BC"
    long_a, long_b = "x" * 300, "x" * 299 + "y"
    assert routing_word(long_a) != routing_word(long_b)
    assert len(routing_word(long_a)) <= 117
    assert "~" in routing_word(long_a)
    assert routing_word("€" * 100) == routing_word("€" * 100)
    assert "%" not in routing_word("€" * 100).split("~")[0][-2:]  # never cut inside %XX
    assert len(routing_key("é" * 2048, "T" * 2048).encode()) <= 255


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "amqp:///?exchange=x",
        "amqp://h/?exchange=",
        "amqp://h/?exchange=amq.topic",
        "amqp://h/?exchange=a%20b",
        "amqp://h/?confirm_timeout=0",
        "amqp://h/?confirm_timeout=nan",
        "amqp://h/?confirm_timeout=soon",
        "amqp://h/?in_flight=0",
        "amqp://h/?prefetch=70000",
        "amqp://h/?delivery_limit=-1",
        "amqp://h/?mandatory=maybe",
        "amqp://h/?exchange=a&exchange=b",
        "amqp://h/?exchnage=a",
        "amqp://h/?bindings=a,,b",
        "amqp://h/?name=",
        "amqp://h:99999/",
        "amqp://h/#frag",
        "amqp://h/?groups=a.b",
        "amqp://h/?groups=",
        "amqp://h/?groups=a,,b",
    ],
)
def test_bad_urls_are_refused_before_any_io(url: str) -> None:
    with pytest.raises(InvalidInputError):
        RabbitMQSink.from_url(url)
    with pytest.raises(InvalidInputError):
        RabbitMQSource.from_url(url, group="g")


@pytest.mark.parametrize("group", ["", "a b", "amq.x", "g" * 250, "ü", "a.dead", 7])
def test_bad_group_names_are_refused(group: str) -> None:
    with pytest.raises(InvalidInputError):
        RabbitMQSource.from_url("amqp://h/", group=group)  # type: ignore[arg-type]


def test_destination_never_shows_the_password_and_options_parse() -> None:
    sink = RabbitMQSink.from_url("amqps://bob:s3cret@mq.example:5671/prod?exchange=bank&heartbeat=5")
    assert "s3cret" not in sink.destination
    assert sink.destination.startswith("amqps://bob@mq.example:5671/prod")
    options = parse_url("amqp://h/?bindings=account.*,*.Sent&mandatory=true&name=relay-1")
    assert options.bindings == ("account.*", "*.Sent")
    assert options.mandatory
    assert options.name == "relay-1"
    assert "name=relay-1" in options.connect_url
    assert "bindings" not in options.connect_url
    assert RabbitMQSource.from_url("amqp://h/", group="fraud").queue == "eskit.fraud"


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), 5e6, "1", True])
def test_bad_retry_delays_are_refused(delay: object) -> None:
    with pytest.raises(InvalidInputError):
        delay_bucket_ms(delay)  # type: ignore[arg-type]


def test_retry_delays_round_to_two_significant_digits() -> None:
    assert [delay_bucket_ms(d) for d in (0, 0.05, 0.4, 1.234, 61.9)] == [0, 50, 400, 1200, 62000]


def test_publish_before_open_and_bad_messages_fail_typed_without_io() -> None:
    sink = RabbitMQSink.from_url("amqp://127.0.0.1:1/")

    async def scenario() -> None:
        with pytest.raises(InvalidInputError):
            await sink.publish(["not a message"])  # type: ignore[list-item]
        with pytest.raises(BrokerUnavailableError):
            await sink.publish(messages(["a-1"], 1))
        with pytest.raises(BrokerUnavailableError):
            await sink.open()  # nothing listens on port 1
        await sink.close()
        await sink.close()

    run(scenario())


@pytest.mark.parametrize("module", ["eskit.bus.rabbitmq", "eskit.bus._rabbitmq_source"])
def test_without_aio_pika_the_import_names_the_rabbitmq_extra(module: str) -> None:
    from tests.test_extras import run_without

    result = run_without(("aio_pika", "aiormq"), f"""
        import eskit
        try:
            import {module}
        except eskit.MissingExtraError as exc:
            assert exc.extra == "rabbitmq", exc.extra
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'eskit[rabbitmq]'" in result.stdout


def test_unroutable_message_with_mandatory_is_rejected_not_dropped(rabbitmq_url: str) -> None:
    exchange = unique_name("ex")
    batch = messages(["nobody-1"], 3)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, []):
            async with RabbitMQSink.from_url(_url(rabbitmq_url, exchange)) as lenient:
                await lenient.publish(batch)  # no queue bound: RabbitMQ drops it, confirmed
            strict = RabbitMQSink.from_url(_url(rabbitmq_url, exchange, mandatory="true"))
            async with strict:
                with pytest.raises(PublishRejectedError, match="unroutable"):
                    await strict.publish(batch)

    run(scenario())


def test_close_ends_deliveries_and_open_again_reconnects(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["again-1"], 2)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]):
            source = RabbitMQSource.from_url(url, group=group)
            await source.open()
            await source.open()  # idempotent
            waiting = asyncio.create_task(take(source, 1))
            await asyncio.sleep(0.3)
            await source.close()
            assert await asyncio.wait_for(waiting, 5) == []  # the iterator ended, nothing lost
            await source.close()
            sink = RabbitMQSink.from_url(url)
            await sink.open()
            await sink.open()
            await sink.publish(batch[:1])
            await sink.close()
            await sink.open()  # reconnect by calling open again
            await sink.publish(batch[1:])
            await sink.close()
            await sink.close()
            await source.open()
            got = await take(source, 2)
            assert [d.message.body for d in got] == [m.body for m in batch]
            await source.close()

    run(scenario())


def test_a_sink_declaring_its_groups_keeps_messages_for_consumers_not_yet_started(
    rabbitmq_url: str,
) -> None:
    exchange, early, late = unique_name("ex"), unique_name("g"), unique_name("g")
    url = _url(rabbitmq_url, exchange, groups=f"{early},{late}", bindings="order.*")
    batch = messages(["order-1", "order-2"], 5)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [early, late]):
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)  # no consumer has ever run
            for group in (early, late):
                async with RabbitMQSource.from_url(url, group=group) as source:
                    got = await take(source, len(batch))
                    assert [d.message.body for d in got] == [m.body for m in batch]

    run(scenario())


def test_a_full_queue_that_refuses_messages_is_a_publish_rejected_error(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["full-1"], 10)
    capped = {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"}

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSink.from_url(url) as sink:
            connection = await aio_pika.connect(rabbitmq_url)
            async with connection:  # a queue an operator capped at one message
                channel = await connection.channel()
                queue = await channel.declare_queue(
                    f"{exchange}.{group}", durable=True, arguments=capped)
                await queue.bind(exchange, routing_key="#")
            # A quorum queue's limit is checked as messages are applied, so
            # one or two past it may still be accepted; then it nacks.
            async def one_by_one() -> None:
                for message in batch:
                    await sink.publish([message])

            with pytest.raises(PublishRejectedError, match="nack"):
                await one_by_one()

    run(scenario())


def test_a_dead_letter_that_cannot_be_moved_is_handed_back_not_held(rabbitmq_url: str) -> None:
    exchange, group = unique_name("ex"), unique_name("g")
    url = _url(rabbitmq_url, exchange)
    batch = messages(["lost-1"], 1)

    async def scenario() -> None:
        async with topology(rabbitmq_url, exchange, [group]), \
                RabbitMQSource.from_url(url, group=group) as source:
            async with RabbitMQSink.from_url(url) as sink:
                await sink.publish(batch)
            (first,) = await take(source, 1, ack=False)
            connection = await aio_pika.connect(rabbitmq_url)
            async with connection:  # an operator deleted the dead-letter queue
                channel = await connection.channel()
                await channel.queue_delete(source.dead_letter_queue)
            with pytest.raises(BusError):
                await first.dead_letter("nowhere to go")
            (again,) = await take(source, 1)  # returned at once, not at the next reconnect
            assert again.message.delivery_count == 2

    run(scenario())


def test_delivery_count_reads_both_rabbitmq_counting_rules() -> None:
    from eskit.bus._rabbitmq_source import _count

    assert _count({}) == 1
    assert _count({"x-delivery-count": 0}) == 1  # 3.x, first delivery
    assert _count({"x-delivery-count": 2}) == 3  # 3.x: returns counted here
    assert _count({"x-delivery-count": 0, "x-acquired-count": 2}) == 3  # 4.3: here
    assert _count({"x-eskit-attempts": 4, "x-delivery-count": 1}) == 6  # after a retry
    assert _count({"x-eskit-attempts": "junk", "x-delivery-count": True}) == 1
