"""Smoke test of the event-bus benchmark (benchmarks/bus.py) against the real brokers.

Tiny sizes; nothing here looks at timings. Each broker path runs end to end: the
relay publishes every event of the store and the broker holds exactly those, the
raw client publishes the same bodies, the consumer applies every appended event
once, and no destination is left behind. The broker fixtures fail under CI=true
when a server is down.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmarks import bus
from eskit import SQLiteEventStore
from tests.bus.conftest import nats_url, rabbitmq_url, redis_url  # the broker fixtures

BROKER_FIXTURES = {"amqp": "rabbitmq_url", "nats": "nats_url", "redis": "redis_url"}

__all__ = ["nats_url", "rabbitmq_url", "redis_url"]  # used as fixtures, by name


def server(request: pytest.FixtureRequest, scheme: str) -> str:
    url = request.getfixturevalue(BROKER_FIXTURES[scheme])
    assert isinstance(url, str)
    return url


async def exists(dest: bus.Destination) -> bool:
    """Whether anything ``dest`` declares is still on its broker."""
    if dest.scheme == "amqp":
        import aio_pika
        import aiormq

        found = False
        connection = await aio_pika.connect(dest.server)
        try:
            for name in (f"{dest.name}.{bus.GROUP}", f"{dest.name}.{bus.GROUP}.dead"):
                channel = await connection.channel()
                try:
                    await channel.declare_queue(name, passive=True)
                    found = True
                except aiormq.exceptions.ChannelNotFoundEntity:
                    pass
            channel = await connection.channel()
            try:
                await channel.get_exchange(dest.name, ensure=True)
                found = True
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass
        finally:
            await connection.close()
        return found
    if dest.scheme == "nats":
        import nats

        nc = await nats.connect(dest.server)
        try:
            names = [info.config.name for info in await nc.jetstream().streams_info()]
        finally:
            await nc.close()
        return any(n in (dest.name.upper(), f"{dest.name.upper()}_DLQ") for n in names)
    import redis.asyncio as redis

    client = redis.Redis.from_url(dest.server)
    try:
        return bool(await client.keys(f"{dest.name}*"))
    finally:
        await client.aclose()


@pytest.mark.parametrize("scheme", list(BROKER_FIXTURES))
def test_the_relay_publishes_every_event_and_leaves_no_destination(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = SQLiteEventStore(tmp_path / "outbox.db")
    bus.fill(store, 250)
    dest = bus.new_destination(scheme, server(request, scheme))
    try:
        seconds, published, held = asyncio.run(bus.relay_run(store, dest))
    finally:
        store.close()
    assert (published, held) == (250, 250)
    assert seconds > 0
    assert not asyncio.run(exists(dest))


@pytest.mark.parametrize("scheme", list(BROKER_FIXTURES))
def test_the_consumer_gets_every_appended_event_once(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    dest = bus.new_destination(scheme, server(request, scheme))
    latencies, held = asyncio.run(bus.latency_run(dest, tmp_path, 20, 200.0, 0.01))
    assert held == (0 if scheme == "amqp" else 20)  # a RabbitMQ ack deletes the message
    assert len(latencies) == 20
    assert all(s >= 0 for s in latencies)
    assert not asyncio.run(exists(dest))


@pytest.mark.parametrize("scheme", list(BROKER_FIXTURES))
def test_one_round_measures_relay_raw_and_latency(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = bus.Settings(events=120, brokers=(scheme,), rounds=2, latency_events=10,
                            rate=200.0, poll_interval=0.01,
                            servers={scheme: server(request, scheme)})
    lines: list[str] = []
    [result] = bus.run(settings, tmp_path, lines.append)
    # round 1 relay then raw, round 2 raw then relay; each round one latency run
    assert result.published == [120, 120]
    assert result.consumed == [10, 10]
    assert len(result.relay["sqlite"]) == len(result.raw) == len(result.p50) == 2
    assert all(rate > 0 for rate in result.relay["sqlite"] + result.raw)
    assert lines[0].startswith(f"round 1 {scheme} relay")
    assert "raw" in lines[3]
    table = bus.table([result], settings)
    assert f"| {scheme} |" in table
    assert "median of 2 rounds" in table


def test_a_postgres_store_is_relayed_too(
    postgres_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    import psycopg

    def bench_schemas() -> set[str]:
        with psycopg.connect(postgres_dsn) as conn:
            rows = conn.execute("SELECT nspname FROM pg_namespace "
                                "WHERE nspname LIKE 'eskit_bench_bus_%'").fetchall()
        return {r[0] for r in rows}

    before = bench_schemas()
    settings = bus.Settings(events=50, brokers=("redis",), rounds=1, postgres=postgres_dsn,
                            latency_events=0, servers={"redis": redis_url})
    [result] = bus.run(settings, tmp_path, lambda _: None)
    assert set(result.relay) == {"sqlite", "postgres"}
    assert result.published == [50, 50]
    assert bench_schemas() <= before  # this run's schema was dropped


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        bus.parse_args(["--brokers", "kafka"])
    with pytest.raises(SystemExit):
        bus.parse_args(["--events", "0"])
    settings = bus.parse_args(["--brokers", "nats,redis", "--events", "7"])
    assert (settings.brokers, settings.events) == (("nats", "redis"), 7)


@pytest.mark.parametrize("scheme", list(BROKER_FIXTURES))
def test_exists_sees_a_destination_until_count_and_drop(
    scheme: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from eskit.bus.relay import Relay
    from eskit.bus.urls import sink_for_url

    store = SQLiteEventStore(tmp_path / "outbox.db")
    bus.fill(store, 3)
    dest = bus.new_destination(scheme, server(request, scheme))

    async def publish_then_drop() -> tuple[bool, int, bool]:
        try:
            await Relay(store, sink_for_url(dest.url), name="smoke").run(until_caught_up=True)
            there = await exists(dest)
        finally:
            held = await dest.count_and_drop()
        return there, held, await exists(dest)

    try:
        assert asyncio.run(publish_then_drop()) == (True, 3, False)
    finally:
        store.close()
