"""Fault tests: connections killed by name (CLIENT KILL), processes killed by SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from eskit.bus.redis_streams import RedisStreamsSink, RedisStreamsSource
from eskit.errors import BrokerUnavailableError
from tests.bus.conftest import unique_name
from tests.bus.test_redis_streams import decoded, key, outgoing, recorded, run, sink_url, take

__all__ = ["key"]  # the fixture, shared with the main test module

ROOT = Path(__file__).resolve().parents[2]

# The child builds the same events as the parent (same seed for the ids), publishes them
# in batches of 50 and prints the index of each confirmed batch, as a relay checkpoints.
PUBLISHER = """
import asyncio, random, sys, uuid
from unittest import mock
rng = random.Random(7)
with mock.patch("eskit.events._urandom", lambda n: rng.randbytes(n)):
    from tests.bus.test_redis_streams import recorded, outgoing
    events = recorded(3000, streams=7)
from eskit.bus.redis_streams import RedisStreamsSink

async def main():
    async with RedisStreamsSink.from_url(sys.argv[1]) as sink:
        for i in range(0, len(events), 50):
            await sink.publish(outgoing(events[i:i + 50]))
            print(i // 50, flush=True)

asyncio.run(main())
"""

CONSUMER = """
import asyncio, sys
from eskit.bus.redis_streams import RedisStreamsSource

async def main():
    async with RedisStreamsSource.from_url(sys.argv[1], group="g") as source:
        async for delivery in source.deliveries():
            print(delivery.message.broker_id, flush=True)  # taken, never settled

asyncio.run(main())
"""


def child(code: str, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)


def same_events() -> list[Any]:
    from unittest import mock

    rng = random.Random(7)
    with mock.patch("eskit.events._urandom", lambda n: rng.randbytes(n)):
        return recorded(3000, streams=7)


def test_a_publisher_killed_mid_batch_then_restarted_from_its_checkpoint_loses_nothing(
    redis_url: str, key: str
) -> None:
    url = f"{redis_url}?key={key}"
    events = same_events()
    proc = child(PUBLISHER, url)
    assert proc.stdout is not None
    stop_after = random.randint(3, 40)
    confirmed = -1
    try:
        for line in proc.stdout:
            confirmed = int(line)
            if confirmed >= stop_after:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert confirmed >= stop_after  # killed while it was publishing, not after

    async def restart() -> None:  # the relay again, from the batch after its checkpoint
        async with RedisStreamsSink.from_url(url) as sink:
            for i in range((confirmed + 1) * 50, len(events), 50):
                await sink.publish(outgoing(events[i:i + 50]))

    run(restart)
    client = redis.Redis.from_url(redis_url)
    try:
        first_seen: dict[str, list[int]] = {}
        ids = set()
        for _, fields in client.xrange(key):
            message = decoded(fields[b"body"])
            if message["id"] not in ids:
                ids.add(message["id"])
                first_seen.setdefault(message["stream"], []).append(message["version"])
    finally:
        client.close()
    assert ids == {str(e.event_id) for e in events}
    for stream, versions in first_seen.items():
        assert versions == list(range(1, len(versions) + 1)), stream


def test_a_member_killed_mid_handler_leaves_its_messages_to_the_group(
    redis_url: str, key: str
) -> None:
    url = f"{redis_url}?key={key}&claim_idle=0.5&block=0.1&count=10"
    events = recorded(200, streams=3)

    async def publish() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(events))

    run(publish)
    proc = child(CONSUMER, url + f"&consumer={unique_name('doomed-')}")
    assert proc.stdout is not None
    taken = []
    try:
        for line in proc.stdout:
            taken.append(line.strip())
            if len(taken) == 25:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)

    async def survivor() -> None:
        async with RedisStreamsSource.from_url(url + "&consumer=survivor", group="g") as source:
            got = await take(source, len(events))
        by_id = {decoded(d.message.body)["id"]: d.message for d in got}
        assert set(by_id) == {str(e.event_id) for e in events}
        # What the killed member had taken comes back claimed, with a higher count.
        redelivered = [m for m in by_id.values() if m.delivery_count > 1]
        assert {m.broker_id for m in redelivered} >= set(taken)

    run(survivor)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xpending(key, "g")["pending"] == 0
    finally:
        client.close()


# --- faults: this test's own connections are killed by name --------------------------------


async def kill_connections(redis_url: str, client_name: str) -> int:
    """CLIENT KILL every connection named ``client_name`` (this test's own), no other."""
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        clients = await admin.client_list()
        mine = [c["id"] for c in clients if c.get("name") == client_name]
        for client_id in mine:
            await admin.client_kill_filter(_id=client_id)
        return len(mine)
    finally:
        await admin.aclose()


def test_connection_killed_while_publishing_then_republished_loses_nothing(
    redis_url: str, key: str
) -> None:
    events = recorded(5000, streams=9)
    name = unique_name("eskit-test-sink-")
    url = sink_url(redis_url, key, f"&client_name={name}")
    batches = [outgoing(events[i:i + 50]) for i in range(0, len(events), 50)]

    async def main() -> None:
        kills: list[int] = []
        failures = 0
        raw = redis.asyncio.Redis.from_url(redis_url)

        async def killer() -> None:
            while await raw.xlen(key) < 1000:
                await asyncio.sleep(0.001)
            kills.append(await kill_connections(redis_url, name))

        killing = asyncio.create_task(killer())
        sink = RedisStreamsSink.from_url(url)
        await sink.open()
        for batch in batches:
            while True:  # what a relay does: reopen, publish the whole batch again
                try:
                    await sink.publish(batch)
                    break
                except BrokerUnavailableError:
                    failures += 1
                    await sink.close()
                    await sink.open()
        await sink.close()
        await killing
        assert kills
        assert kills[0] >= 1
        assert failures >= 1
        first_seen: list[dict[str, Any]] = []
        ids: set[str] = set()
        for _, fields in await raw.xrange(key):
            message = decoded(fields[b"body"])
            if message["id"] not in ids:
                ids.add(message["id"])
                first_seen.append(message)
        await raw.aclose()
        assert ids == {str(e.event_id) for e in events}  # at least once
        for stream in {m["stream"] for m in first_seen}:
            versions = [m["version"] for m in first_seen if m["stream"] == stream]
            assert versions == list(range(1, len(versions) + 1)), stream

    run(main)


def test_connection_killed_while_consuming_then_every_unacked_message_is_redelivered(
    redis_url: str, key: str
) -> None:
    events = recorded(600, streams=4)
    name = unique_name("eskit-test-source-")
    url = sink_url(redis_url, key, f"&client_name={name}&claim_idle=0.5&block=0.1&count=20")

    async def main() -> None:
        async with RedisStreamsSink.from_url(url) as sink:
            await sink.publish(outgoing(events))
        acked: set[str] = set()
        kills = 0
        lost_acks = 0
        async with RedisStreamsSource.from_url(url, group="g") as source:
            counter = itertools.count()
            async for delivery in source.deliveries():
                n = next(counter)
                if n in (100, 300):
                    kills += await kill_connections(redis_url, name)
                try:
                    await delivery.ack()
                    acked.add(decoded(delivery.message.body)["id"])
                except BrokerUnavailableError:
                    lost_acks += 1  # stays pending: claimed again after claim_idle
                if len(acked) == len(events):
                    break
            raw = redis.asyncio.Redis.from_url(redis_url)
            assert (await raw.xpending(key, "g"))["pending"] == 0
            await raw.aclose()
        assert kills >= 2
        assert lost_acks >= 1
        assert acked == {str(e.event_id) for e in events}

    run(main)
