"""Event-bus numbers: the outbox relay against each broker's own client, and end-to-end latency.

``python -m benchmarks.bus [--events N] [--brokers amqp,nats,redis] [--rounds R]
[--postgres DSN] [--latency-events M] [--rate EPS] [--poll-interval S]``

Per broker, interleaved round by round in one run (the order of relay and raw
alternates between rounds):

* **relay**: a :class:`~eskit.bus.relay.Relay` with a fresh checkpoint publishes
  the N events of a pre-filled SQLite store file (and, with ``--postgres``, of a
  PostgreSQL store in a fresh schema, dropped after) until caught up. Timed from
  ``run()`` to its return: reading pages, encoding CloudEvents, publishing,
  awaiting every confirm, every checkpoint write, the lease and closing the sink;
  not the connect and declare (the sink is opened before the timer starts).
* **raw**: the broker's client alone publishing the same CloudEvent bodies with
  confirms (:mod:`benchmarks.bus_raw`), bodies encoded before the timer.
* **latency**: a live relay (``--poll-interval``) and a
  :class:`~eskit.bus.consumer.Consumer` with a :class:`~eskit.projections.SQLiteTarget`
  inbox; M events appended one by one at a steady ``--rate`` to a fresh SQLite
  store; latency = the handler's wall clock minus the wall clock taken just
  before ``append`` (in the payload), both in this process.

Every run gets fresh destinations (exchange and quorum queue, JetStream stream,
Redis key), and checks that the broker holds exactly the events published
before deleting everything it declared. The table shows the median of rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bus_raw import RAW, RawMessage
from eskit import NewEvent, SQLiteEventStore
from eskit.bus.cloudevents import cloudevent_body
from eskit.bus.consumer import Consumer
from eskit.bus.relay import Relay
from eskit.bus.urls import sink_for_url, source_for_url
from eskit.projections import SQLiteTarget

BROKERS = {
    "amqp": os.environ.get("ESKIT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "nats": os.environ.get("ESKIT_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "redis": os.environ.get("ESKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}
"""Broker → server URL (the test servers; the same variables as tests/bus/conftest.py)."""

GROUP = "bench"
STREAMS = 200
"""Events are spread round-robin over this many streams, in appends of 100."""


@dataclass(frozen=True)
class Destination:
    """A fresh destination on one broker: the URL the sink and source share."""

    scheme: str
    server: str
    name: str

    @property
    def url(self) -> str:
        if self.scheme == "amqp":
            return f"{self.server.rstrip('/')}/?exchange={self.name}&groups={GROUP}"
        if self.scheme == "nats":
            return f"{self.server.rstrip('/')}/?stream={self.name.upper()}&prefix={self.name}"
        return f"{self.server}?key={self.name}"

    async def count_and_drop(self) -> int:
        """The messages the destination holds; then everything it declared is deleted."""
        return await _DROP[self.scheme](self)


def new_destination(scheme: str, server: str) -> Destination:
    return Destination(scheme, server, f"eskitbench{uuid.uuid4().hex[:10]}")


async def _drop_amqp(dest: Destination) -> int:
    import aio_pika

    connection = await aio_pika.connect(dest.server)
    try:
        channel = await connection.channel()
        queue = f"{dest.name}.{GROUP}"
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count or 0
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
        # retry queues exist only if a handler failed; quorum queues are never auto-deleted
        await channel.exchange_delete(dest.name)
        return count
    finally:
        await connection.close()


async def _drop_nats(dest: Destination) -> int:
    import nats

    nc = await nats.connect(dest.server)
    try:
        js = nc.jetstream()
        stream = dest.name.upper()
        count = (await js.stream_info(stream)).state.messages
        for name in (stream, f"{stream}_DLQ"):
            # the DLQ stream exists only once a source opened
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        return count
    finally:
        await nc.close()


async def _drop_redis(dest: Destination) -> int:
    import redis.asyncio as redis

    client = redis.Redis.from_url(dest.server)
    try:
        count = int(await client.xlen(dest.name))
        await client.delete(dest.name, f"{dest.name}:dead:{GROUP}", f"{dest.name}:replay:{GROUP}")
        return count
    finally:
        await client.aclose()


_DROP = {"amqp": _drop_amqp, "nats": _drop_nats, "redis": _drop_redis}


def fill(store: Any, events: int) -> None:
    """``events`` deposits on :data:`STREAMS` streams, appended 100 at a time."""
    appended = 0
    while appended < events:
        size = min(100, events - appended)
        stream = f"account-{(appended // 100) % STREAMS}"
        store.append(stream, [
            NewEvent("BenchDeposited", {"cents": 100 + appended + j, "memo": "salary, March"})
            for j in range(size)
        ])
        appended += size


def raw_messages(store: Any) -> list[RawMessage]:
    """The relay's CloudEvent bodies of every event in ``store``, for the raw side."""
    return [RawMessage(str(e.event_id), str(e.stream_id), e.event_type,
                       cloudevent_body(e, "eskit")) for e in store.read_all()]


# ---------------------------------------------------------------- the three measurements


async def relay_run(
    store: Any, dest: Destination, timeout: float = 600.0
) -> tuple[float, int, int]:
    """(seconds, events the relay published, messages ``dest`` held); ``dest`` is dropped.

    Raises TimeoutError if the relay has not caught up within ``timeout`` seconds
    (a relay retrying a broker error forever logs it, and would hang the run).
    """
    sink = sink_for_url(dest.url)
    try:
        await sink.open()  # connect and declare, untimed; run() keeps the open sink
        relay = Relay(store, sink, name=f"bench-{dest.name}")
        started = time.perf_counter()
        await asyncio.wait_for(relay.run(until_caught_up=True), timeout)
        seconds = time.perf_counter() - started
    finally:
        await sink.close()
        held = await dest.count_and_drop()
    return seconds, relay.published, held


async def raw_run(scheme: str, server: str, messages: Sequence[RawMessage]) -> float:
    return await RAW[scheme](server, messages)


def _append_steadily(store: Any, events: int, rate: float, stop: threading.Event) -> None:
    began = time.perf_counter()
    for i in range(events):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            return
        store.append(f"account-{i % STREAMS}", [
            NewEvent("BenchDeposited", {"cents": i, "sent": time.time()})])


async def latency_run(
    dest: Destination, tmp: Path, events: int, rate: float, poll_interval: float,
    timeout: float = 120.0,
) -> tuple[list[float], int]:
    """(seconds from append to handler for each event, messages ``dest`` held; dropped).

    The messages held are those the broker keeps after the consumer acked them:
    all of them on JetStream (limits retention) and Redis (XACK does not delete),
    none on RabbitMQ (an ack removes a message from the queue).
    """
    store = SQLiteEventStore(tmp / f"{dest.name}-store.db")
    target = SQLiteTarget(tmp / f"{dest.name}-inbox.db")
    latencies: list[float] = []

    def handler(event: Any, conn: Any) -> None:
        latencies.append(time.time() - event.event_data["sent"])

    relay = Relay(store, sink_for_url(dest.url), name="bench-latency",
                  poll_interval=poll_interval)
    consumer = Consumer(source_for_url(dest.url, group=GROUP), target, handler,
                        name="bench-latency")
    stop = threading.Event()
    tasks = [asyncio.ensure_future(relay.run()), asyncio.ensure_future(consumer.run())]
    try:
        await asyncio.to_thread(_append_steadily, store, events, rate, stop)
        deadline = time.monotonic() + timeout
        while consumer.applied < events and time.monotonic() < deadline:
            done = [t for t in tasks if t.done()]
            if done:
                done[0].result()  # a relay or consumer that died: say why
                raise RuntimeError("the relay or the consumer returned early")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        relay.stop()
        consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        held = await dest.count_and_drop()
        store.close()
        target.close()
    if consumer.applied != events or len(latencies) != events:
        raise RuntimeError(f"{dest.scheme}: the consumer applied {consumer.applied} of {events} "
                           f"events within {timeout} s")
    return latencies, held


# ---------------------------------------------------------------- the run


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class BrokerResult:
    """All rounds of one broker; rates in events/s, latencies in ms."""

    scheme: str
    relay: dict[str, list[float]] = field(default_factory=dict)  # store kind → rate per round
    raw: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    """Per relay run: how many messages the destination held afterwards."""
    consumed: list[int] = field(default_factory=list)

    def ratio(self, store: str = "sqlite") -> float:
        """The median of the rounds' relay/raw ratios (each round's pair ran back to back)."""
        return statistics.median(r / w for r, w in zip(self.relay[store], self.raw, strict=True))


@dataclass
class Settings:
    events: int = 10_000
    brokers: tuple[str, ...] = ("amqp", "nats", "redis")
    rounds: int = 3
    postgres: str | None = None
    latency_events: int = 1_000
    rate: float = 100.0
    poll_interval: float = 0.02
    servers: dict[str, str] = field(default_factory=lambda: dict(BROKERS))


def run(settings: Settings, tmp: Path, log: Callable[[str], None] = print) -> list[BrokerResult]:
    """Measure every broker of ``settings``, round by round; see the module docstring."""
    return asyncio.run(_run(settings, tmp, log))


async def _run(settings: Settings, tmp: Path, log: Callable[[str], None]) -> list[BrokerResult]:
    stores: dict[str, Any] = {"sqlite": SQLiteEventStore(tmp / "outbox.db")}
    schema = None
    if settings.postgres:
        from eskit.stores.postgres import PostgresEventStore

        schema = f"eskit_bench_bus_{uuid.uuid4().hex[:8]}"
        stores["postgres"] = PostgresEventStore(settings.postgres, schema=schema)
    try:
        for store in stores.values():
            await asyncio.to_thread(fill, store, settings.events)
        messages = raw_messages(stores["sqlite"])
        results = {b: BrokerResult(b) for b in settings.brokers}
        for r in range(settings.rounds):
            for scheme, result in results.items():
                server = settings.servers[scheme]
                sides = ["relay", "raw"] if r % 2 == 0 else ["raw", "relay"]
                for side in sides:
                    if side == "raw":
                        seconds = await raw_run(scheme, server, messages)
                        result.raw.append(len(messages) / seconds)
                        log(f"round {r + 1} {scheme} raw: {result.raw[-1]:,.0f} events/s")
                        continue
                    for kind, store in stores.items():
                        seconds, published, held = await relay_run(
                            store, new_destination(scheme, server))
                        result.relay.setdefault(kind, []).append(published / seconds)
                        result.published.append(held)
                        log(f"round {r + 1} {scheme} relay ({kind}): "
                            f"{published / seconds:,.0f} events/s, {held} held")
                if settings.latency_events:
                    latencies, _ = await latency_run(
                        new_destination(scheme, server), tmp, settings.latency_events,
                        settings.rate, settings.poll_interval)
                    result.p50.append(percentile(latencies, 50) * 1000)
                    result.p99.append(percentile(latencies, 99) * 1000)
                    result.consumed.append(len(latencies))
                    log(f"round {r + 1} {scheme} latency: p50 {result.p50[-1]:.1f} ms, "
                        f"p99 {result.p99[-1]:.1f} ms")
        return list(results.values())
    finally:
        for store in stores.values():
            store.close()
        if schema is not None and settings.postgres:
            import psycopg

            with psycopg.connect(settings.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def table(results: Sequence[BrokerResult], settings: Settings) -> str:
    """The results as a Markdown table (medians of rounds)."""
    kinds = list(results[0].relay) if results else []
    head = ["broker"] + [f"relay {k} (ev/s)" for k in kinds] + ["raw (ev/s)"] + [
        f"relay {k}/raw" for k in kinds] + ["p50 ms", "p99 ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        cells = [res.scheme]
        cells += [f"{statistics.median(res.relay[k]):,.0f}" for k in kinds]
        cells.append(f"{statistics.median(res.raw):,.0f}")
        cells += [f"{res.ratio(k):.0%}" for k in kinds]
        if res.p50:
            cells += [f"{statistics.median(res.p50):.1f}", f"{statistics.median(res.p99):.1f}"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"\nmedian of {settings.rounds} rounds (ratios: median of each round's relay/raw); "
        f"{settings.events:,} events per throughput run; "
        f"latency over {settings.latency_events:,} events at {settings.rate:g}/s, relay "
        f"poll_interval {settings.poll_interval:g} s")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bus",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--brokers", default="amqp,nats,redis",
                        help="comma-separated: amqp, nats, redis")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", metavar="DSN",
                        help="also relay from a PostgreSQL store (fresh schema, dropped after)")
    parser.add_argument("--latency-events", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="events/s appended in the latency run")
    parser.add_argument("--poll-interval", type=float, default=0.02,
                        help="the live relay's poll_interval in the latency run")
    args = parser.parse_args(argv)
    brokers = tuple(b.strip() for b in args.brokers.split(",") if b.strip())
    unknown = [b for b in brokers if b not in BROKERS]
    if unknown or not brokers:
        parser.error(f"--brokers takes {', '.join(BROKERS)}; got {args.brokers!r}")
    if args.events < 1 or args.rounds < 1 or args.latency_events < 0 or args.rate <= 0:
        parser.error("--events, --rounds and --rate must be positive, --latency-events >= 0")
    return Settings(args.events, brokers, args.rounds, args.postgres, args.latency_events,
                    args.rate, args.poll_interval)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = run(settings, Path(tmp), lambda line: print(line, file=sys.stderr, flush=True))
    print(table(results, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
