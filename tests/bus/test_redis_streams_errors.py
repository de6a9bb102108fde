"""Redis bus input and configuration errors: URLs, messages, refusing or missing servers."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from uuid import uuid4

import pytest
import redis

from eskit.bus import OutgoingMessage
from eskit.bus.redis_streams import RedisStreamsSink, RedisStreamsSource
from eskit.errors import BrokerUnavailableError, BusError, InvalidInputError
from eskit.events import Event
from tests.bus.test_redis_streams import key, outgoing, recorded, run, sink_url

__all__ = ["key"]  # the fixture, shared with the main test module

# --- URL options ------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "amqp://127.0.0.1/",
    "redis:///0",
    "redis://127.0.0.1:99999/0",
    "redis://127.0.0.1/zero",
    "redis://127.0.0.1/0?nope=1",
    "redis://127.0.0.1/0?key=a&key=b",
    "redis://127.0.0.1/0?key=",
    "redis://127.0.0.1/0?maxlen=0",
    "redis://127.0.0.1/0?maxlen=-5",
    "redis://127.0.0.1/0?maxlen=1e3",
    "redis://127.0.0.1/0?confirm_timeout=0",
    "redis://127.0.0.1/0?confirm_timeout=nan",
    "redis://127.0.0.1/0?confirm_timeout=soon",
    "redis://127.0.0.1/0?key_per_category=maybe",
    "redis://127.0.0.1/0?client_name=has%20space",
    "redis://127.0.0.1/0?client_name=",
    "redis://127.0.0.1/0?batch_bytes=0",
    "redis://127.0.0.1/0?key=%ED%A0%80",  # a lone surrogate, once unquoted
])
def test_bad_sink_urls_are_refused_before_any_io(url: str) -> None:
    with pytest.raises(InvalidInputError):
        RedisStreamsSink.from_url(url)


@pytest.mark.parametrize(("url", "group"), [
    ("redis://127.0.0.1/0", ""),
    ("redis://127.0.0.1/0", "\ud800"),
    ("redis://127.0.0.1/0", "g\x00"),
    ("redis://127.0.0.1/0", 7),
    ("redis://127.0.0.1/0?key_per_category=1", "g"),
    ("redis://127.0.0.1/0?key_per_category=1&categories=,", "g"),
    ("redis://127.0.0.1/0?categories=account", "g"),
    ("redis://127.0.0.1/0?start=1", "g"),
    ("redis://127.0.0.1/0?claim_idle=-1", "g"),
    ("redis://127.0.0.1/0?block=0", "g"),
    ("redis://127.0.0.1/0?claim_idle=1e300", "g"),  # would overflow Redis's milliseconds
    ("redis://127.0.0.1/0?count=0", "g"),
    ("redis://127.0.0.1/0?count=10001", "g"),
    ("redis://127.0.0.1/0?timeout=inf", "g"),
    ("redis://127.0.0.1/0?consumer=", "g"),
    ("redis://127.0.0.1/0?max_deliveries=-1", "g"),
])
def test_bad_source_urls_and_groups_are_refused_before_any_io(url: str, group: Any) -> None:
    with pytest.raises(InvalidInputError):
        RedisStreamsSource.from_url(url, group=group)


def test_destination_never_shows_the_password_and_one_url_serves_both_sides() -> None:
    url = ("rediss://app:s3cret@cache.example:6380/2?key=bank:events&key_per_category=1"
           "&categories=account,customer&maxlen=1000&claim_idle=5")
    sink = RedisStreamsSink.from_url(url)
    source = RedisStreamsSource.from_url(url, group="notifications")
    assert "s3cret" not in sink.destination
    assert "s3cret" not in source.destination
    assert sink.destination == "rediss://app@cache.example:6380/2?key=bank:events&key_per_category=1"
    assert sink.options.maxlen == 1000
    assert source.options.claim_idle_ms == 5000
    assert source.options.keys == ("bank:events:account", "bank:events:customer")
    assert source.dead_key == "bank:events:dead:notifications"
    assert source.destination == ("rediss://app@cache.example:6380/2?key=bank:events"
                                  "&key_per_category=1&categories=account,customer "
                                  "group=notifications")
    assert sink.key_for("account-42") == "bank:events:account"
    # A category is percent-encoded: it can never hold the ":" that separates key parts.
    assert sink.key_for("a:dead:g-1") == "bank:events:a%3Adead%3Ag"
    assert sink.key_for("konto Ü*>#.x-1") == "bank:events:konto%20%C3%9C%2A%3E%23.x"


def test_bad_messages_are_refused_before_any_io(redis_url: str, key: str) -> None:
    [good] = recorded(1)
    lone = Event(uuid4(), "bad\ud800-1", "T", {}, good.timestamp, 1, 1)

    async def main() -> None:
        sink = RedisStreamsSink.from_url(sink_url(redis_url, key))
        with pytest.raises(InvalidInputError):
            await sink.publish([OutgoingMessage(lone, b"x")])  # not even open: input first
        with pytest.raises(InvalidInputError):
            await sink.publish([OutgoingMessage(good, "text")])  # type: ignore[arg-type]
        with pytest.raises(BrokerUnavailableError):
            await sink.publish(outgoing([good]))  # not open
        async with sink:
            with pytest.raises(InvalidInputError):
                await sink.publish([*outgoing([good]), OutgoingMessage(lone, b"x")])
        raw = redis.asyncio.Redis.from_url(redis_url)
        assert not await raw.exists(key)  # the good one of the refused batch was not sent
        await raw.aclose()

    run(main)


def test_an_unreachable_redis_is_broker_unavailable_and_close_is_safe_after_it() -> None:
    async def main() -> None:
        sink = RedisStreamsSink.from_url("redis://127.0.0.1:1/0?confirm_timeout=2")
        with pytest.raises(BrokerUnavailableError):
            await sink.open()
        await sink.close()
        await sink.close()
        source = RedisStreamsSource.from_url("redis://127.0.0.1:1/0?timeout=2", group="g")
        with pytest.raises(BrokerUnavailableError):
            await source.open()
        await source.close()
        with pytest.raises(BusError):
            await source.dead_letters()

    run(main)


@pytest.mark.parametrize("where", ["nouser:wrong@127.0.0.1:6379/0", "127.0.0.1:6379/99"])
def test_a_refusing_redis_is_a_bus_error_not_a_reason_to_reconnect(
    redis_url: str, where: str
) -> None:
    assert redis_url  # the server is up: it is the URL that is wrong
    url = f"redis://{where}?key=never-created"

    async def main() -> None:
        for side in (RedisStreamsSink.from_url(url), RedisStreamsSource.from_url(url, group="g")):
            with pytest.raises(BusError) as caught:
                await side.open()
            assert not isinstance(caught.value, BrokerUnavailableError)
            await side.close()

    run(main)


def test_without_redis_py_the_module_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from eskit.errors import MissingExtraError\n"
        "try:\n"
        "    import eskit.bus.redis_streams\n"
        "except MissingExtraError as exc:\n"
        "    assert exc.extra == 'redis' and \"eskit[redis]\" in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('imported without redis')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
