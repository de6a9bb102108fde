"""The event bus end to end against the real brokers, under faults (issue 12, item 4).

Each test runs once per broker (RabbitMQ, JetStream, Redis Streams) on a destination
of its own, deleted afterwards. Only this test's own processes are killed and only
its own connections are dropped: RabbitMQ's by connection name (``rabbitmqctl
close_connection``), Redis's by client name (``CLIENT KILL ID``), NATS's at a TCP
proxy in this process (the shared server is never restarted). Every wait is bounded.

After each fault: every appended event reached the destination at least once, each
stream's events arrived in order (counting first deliveries only, as an inbox
does), and a consumer's read model equals a clean run's (exactly-once effects).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eskit import Event, PublishRejectedError, SQLiteEventStore
from eskit.bus.cloudevents import from_cloudevent, to_cloudevent
from eskit.bus.consumer import Consumer
from eskit.bus.relay import Relay, relay_status
from eskit.bus.sink import OutgoingMessage
from eskit.bus.urls import sink_for_url, source_for_url
from eskit.testing.bus_contract import _event
from tests.bus import bus_fault_workers as workers
from tests.bus.conftest import unique_name
from tests.bus.test_broker_contracts import _delete_jetstream, _delete_rabbitmq, _delete_redis
from tests.bus.test_jetstream_faults import Proxy
from tests.bus.test_rabbitmq_helpers import drop_connection
from tests.bus.test_redis_streams_faults import kill_connections

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BOUND = 60.0  # seconds: the most any one wait below may take
EVENTS = 2000
STREAMS = 7


@dataclass
class Broker:
    kind: str
    url: str
    """A URL of this test's own destination, with fast redelivery."""
    admin: str
    """The server's URL, for fault injection and clean-up."""

    def named(self, name: str) -> str:
        """The URL with the connection named ``name`` (to drop it by that name)."""
        option = {"redis": "client_name", "rabbitmq": "name", "jetstream": "name"}[self.kind]
        return f"{self.url}&{option}={name}"


@pytest.fixture(params=["rabbitmq", "jetstream", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    kind = request.param
    if kind == "rabbitmq":
        admin, exchange = request.getfixturevalue("rabbitmq_url"), unique_name("fault")
        yield Broker(kind, f"{admin}?exchange={exchange}", admin)
        asyncio.run(_delete_rabbitmq(admin, exchange))
    elif kind == "jetstream":
        admin, stream = request.getfixturevalue("nats_url"), unique_name("fault")
        yield Broker(kind, f"{admin}/?stream={stream}&prefix={unique_name('p')}&ack_wait=1",
                     admin)
        asyncio.run(_delete_jetstream(admin, stream, f"{stream}_DLQ"))
    else:
        admin, key = request.getfixturevalue("redis_url"), unique_name("eskit-fault:")
        yield Broker(kind, f"{admin}?key={key}&claim_idle=0.5&block=0.1", admin)
        _delete_redis(admin, key)


def run(coro: Awaitable[object], limit: float = BOUND) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(limit):
            await coro

    asyncio.run(bounded())


def worker(*args: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.bus.bus_fault_workers",
                             *map(str, args)], cwd=ROOT, env=env, stderr=subprocess.PIPE)


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=BOUND)


def wait_for(condition: Callable[[], bool], what: str, limit: float = BOUND,
             poll: float = 0.02) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def declare(url: str, *groups: str) -> None:
    """Open each group's source once, so it exists before anything is published."""
    async def go() -> None:
        for group in groups:
            source = source_for_url(url, group=group)
            await source.open()
            await source.close()

    run(go())


def log_lines(log: Path) -> list[tuple[str, int, list[int]]]:
    """(start|end, pid, positions) per line of a LoggingSink log, in write order."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        # A relay SIGKILLed in the middle of writing a line leaves a torn record that
        # the next relay's line continues: only whole records count.
        for what, pid, _, positions in _RECORD.findall(line):
            out.append((what, int(pid), [int(p) for p in positions.split(",")]))
    return out


_RECORD = re.compile(r"(start|end) (\d+) (\S+) (\d+(?:,\d+)*)(?=start|end|$)")


def mid_batch_kills(lines: list[tuple[str, int, list[int]]]) -> int:
    """How many relays were killed with a batch not yet checkpointed: the next relay's
    first publish repeats what the killed one published (or began to) last."""
    pids = list(dict.fromkeys(p for _, p, _ in lines))
    repeats = 0
    for killed, successor in itertools.pairwise(pids):
        last = [ps for _, p, ps in lines if p == killed][-1]
        first = next(ps for _, p, ps in lines if p == successor)
        repeats += bool(set(last) & set(first))
    return repeats


def assert_on_the_wire_in_order(url: str, events: list[Event]) -> None:
    """Group ``wire`` got every event at least once, each stream in order of first delivery."""
    wanted = {e.event_id for e in events}
    firsts: dict[str, list[int]] = {}

    async def read() -> None:
        async with source_for_url(url, group="wire") as source:
            async for delivery in source.deliveries():
                event = from_cloudevent(delivery.message.body)
                if event.event_id in wanted:
                    wanted.discard(event.event_id)
                    firsts.setdefault(str(event.stream_id), []).append(event.version)
                await delivery.ack()
                if not wanted:
                    return

    run(read())
    assert not wanted
    for stream, versions in firsts.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream} out of order"


def assert_read_model_is_a_clean_runs(url: str, events: list[Event], target_path: Path) -> None:
    """Group ``model`` applied through a Consumer + SQLiteTarget: each event's effect once."""
    target = workers.target(target_path)

    async def consume() -> None:
        consumer = Consumer(source_for_url(url, group="model"), target, workers.apply,
                            name="balances", backoff=(0.01, 0.1))
        task = asyncio.create_task(consumer.run())
        try:
            while sum(n for _, n in workers.read_model(target).values()) < len(events):
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a late duplicate would be applied now
        finally:
            consumer.stop()
            await task

    run(consume())
    assert workers.read_model(target) == workers.clean_run(events)


def test_a_relay_sigkilled_mid_batch_and_restarted_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    db, log = tmp_path / "events.db", tmp_path / "publish.log"
    store = SQLiteEventStore(db)
    declare(broker.url, "wire", "model")
    appender = worker("append", db, EVENTS, STREAMS)
    rng = random.Random()
    kills = 0
    try:
        while kills < 3:
            relay = worker("relay", db, broker.url, "r", 0.5, log)

            try:
                wait_for(lambda: any(w == "start" and p == relay.pid  # noqa: B023
                                     for w, p, _ in log_lines(log)), "the relay to publish")
                time.sleep(rng.uniform(0.0, 0.3))
                # Then right after its next log line (a batch starting, or confirmed and
                # not yet checkpointed), watched by the log's size: a cheap stat.
                size = log.stat().st_size
                with contextlib.suppress(AssertionError):
                    wait_for(lambda: log.stat().st_size > size,  # noqa: B023
                             "the next batch", limit=2.0, poll=0.001)
            finally:
                kill(relay)
            kills += 1
        assert appender.wait(timeout=BOUND) == 0
        final = worker("relay", db, broker.url, "r", 0.5, log, "--until-caught-up")
        assert final.wait(timeout=BOUND) == 0, final.stderr.read() if final.stderr else b""
    finally:
        with contextlib.suppress(ProcessLookupError):
            appender.kill()
    events = list(store.read_all())
    assert len(events) == EVENTS
    assert mid_batch_kills(log_lines(log)) >= 1, "no kill landed inside a batch"
    assert_on_the_wire_in_order(broker.url, events)
    assert_read_model_is_a_clean_runs(broker.url, events, tmp_path / "model.db")


def test_the_relays_connection_dropped_while_publishing_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    db, log = tmp_path / "events.db", tmp_path / "publish.log"
    workers.append(str(db), EVENTS, STREAMS)
    store = SQLiteEventStore(db)
    events = list(store.read_all())
    declare(broker.url, "wire", "model")
    name = unique_name("eskit-busfault-relay-")
    dropped: list[int] = []

    async def scenario() -> None:
        proxy = Proxy(broker.admin) if broker.kind == "jetstream" else None
        url = broker.named(name)
        if proxy is not None:
            await proxy.start()
            url = proxy.url(url)

        async def drop() -> int:
            if proxy is not None:
                return proxy.sever()
            if broker.kind == "rabbitmq":
                return await drop_connection(name)
            return await kill_connections(broker.admin, name)

        # Paced, so that both drops land while it publishes (rabbitmqctl takes ~3 s a drop).
        pause = 0.15 if broker.kind == "rabbitmq" else 0.03
        sink = workers.LoggingSink(sink_for_url(url), str(log), pause=pause)
        relay = Relay(store, sink, name="r", batch_size=50, lease_seconds=5)
        task = asyncio.create_task(relay.run(until_caught_up=True))
        try:
            for threshold in (events[300].position, events[1200].position):
                while relay.position < threshold:
                    assert not task.done(), "the relay finished before the drop"
                    await asyncio.sleep(0.01)
                while not (n := await drop()):  # between connections: drop the next one
                    assert not task.done(), "the relay finished before the drop"
                    await asyncio.sleep(0.05)
                dropped.append(n)
            await task
        finally:
            relay.stop()
            await task
            if proxy is not None:
                await proxy.stop()

    run(scenario(), limit=2 * BOUND)
    assert len(dropped) == 2
    assert all(n >= 1 for n in dropped), dropped
    lines = log_lines(log)
    assert sum(w == "start" for w, _, _ in lines) > sum(w == "end" for w, _, _ in lines), \
        "no publish failed: the drops missed the relay"
    assert_on_the_wire_in_order(broker.url, events)
    assert_read_model_is_a_clean_runs(broker.url, events, tmp_path / "model.db")


def test_a_consumer_sigkilled_mid_handler_applies_nothing_twice(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    workers.append(str(db), 600, STREAMS)
    store = SQLiteEventStore(db)
    events = list(store.read_all())
    declare(broker.url, "wire", "model")
    run(Relay(store, sink_for_url(broker.url), name="r").run(until_caught_up=True))
    model = tmp_path / "model.db"
    for n, block_at in enumerate((20, 120)):
        flag = tmp_path / f"blocked-{n}"
        consumer = worker("consume", broker.url, "model", model, block_at, flag)
        try:
            wait_for(flag.exists, "the handler to block")
            time.sleep(0.05)  # the flag is written inside the handler: its transaction is open
        finally:
            kill(consumer)
    applied = sum(n for _, n in workers.read_model(workers.target(model)).values())
    assert 0 < applied < len(events)  # some were applied before the kills, not all
    assert_read_model_is_a_clean_runs(broker.url, events, model)


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_two_relays_with_one_name_never_publish_at_the_same_time(
    broker: Broker, tmp_path: Path
) -> None:
    """What the lease promises (docs/event-bus.md): one holder publishes at a time; a
    successor takes over only once the holder's lease expired; it republishes at most
    the batch the killed holder had not checkpointed.

    One broker only: the lease lives in the store, the broker plays no part in it.
    """
    db, log = tmp_path / "events.db", tmp_path / "publish.log"
    store = SQLiteEventStore(db)
    declare(broker.url, "wire")
    appender = worker("append", db, EVENTS, STREAMS)
    relays = [worker("relay", db, broker.url, "r", 3.0, log) for _ in range(2)]
    killed = 0
    try:
        wait_for(lambda: sum(w == "end" for w, _, _ in log_lines(log)) >= 5, "publishing")
        holder = next(r for r in relays if r.pid == log_lines(log)[-1][1])
        kill(holder)
        killed = holder.pid
        relays = [r for r in relays if r is not holder]
        relays.append(worker("relay", db, broker.url, "r", 3.0, log))  # a third, started late
        assert appender.wait(timeout=BOUND) == 0
        head = store.head_position()
        wait_for(lambda: any(w == "end" and head in ps for w, _, ps in log_lines(log)),
                 "the survivor to catch up")
    finally:
        for proc in [appender, *relays]:
            with contextlib.suppress(ProcessLookupError):
                kill(proc)
    lines = log_lines(log)
    publishers = {p for _, p, _ in lines}
    assert killed in publishers
    assert len(publishers) == 2, "exactly one successor published"
    # In write order (O_APPEND), every publish's start is followed by its own end: no
    # other relay published in between, except after the killed holder's last line.
    last_of_killed = max(i for i, (_, p, _) in enumerate(lines) if p == killed)
    for i, (what, pid, positions) in enumerate(lines):
        if what == "start" and i != last_of_killed:
            assert lines[i + 1] == ("end", pid, positions), f"line {i}: interleaved publish"
    by: dict[int, set[int]] = {}
    for what, pid, positions in lines:
        if what == "end" or (pid == killed and what == "start"):
            by.setdefault(pid, set()).update(positions)
    twice = set.intersection(*by.values())
    assert twice <= set(lines[last_of_killed][2]), "more than the killed batch went out twice"
    assert_on_the_wire_in_order(broker.url, list(store.read_all()))


def test_a_consumers_connection_dropped_mid_run_applies_nothing_twice(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    workers.append(str(db), 600, STREAMS)
    store = SQLiteEventStore(db)
    events = list(store.read_all())
    declare(broker.url, "model")
    run(Relay(store, sink_for_url(broker.url), name="r").run(until_caught_up=True))
    target = workers.target(tmp_path / "model.db")
    name = unique_name("eskit-busfault-consumer-")
    dropped: list[int] = []

    def applied() -> int:
        return sum(n for _, n in workers.read_model(target).values())

    async def scenario() -> None:
        proxy = Proxy(broker.admin) if broker.kind == "jetstream" else None
        url = broker.named(name)
        if proxy is not None:
            await proxy.start()
            url = proxy.url(url)
        slow = asyncio.Event()  # held, so the drop lands mid-run

        def handler(event: Event, conn: object) -> None:
            workers.apply(event, conn)
            if not slow.is_set():
                time.sleep(0.005)

        consumer = Consumer(source_for_url(url, group="model"), target, handler,
                            name="balances", backoff=(0.01, 0.1))
        task = asyncio.create_task(consumer.run())
        try:
            while applied() < 100:
                assert not task.done(), task
                await asyncio.sleep(0.02)
            if proxy is not None:
                dropped.append(proxy.sever())
            elif broker.kind == "rabbitmq":
                dropped.append(await drop_connection(name))
            else:
                dropped.append(await kill_connections(broker.admin, name))
            slow.set()
            while applied() < len(events):
                if task.done():
                    task.result()  # the consumer must outlive the drop
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a late duplicate would be applied now
        finally:
            consumer.stop()
            await task
            if proxy is not None:
                await proxy.stop()

    run(scenario())
    assert dropped[0] >= 1
    assert workers.read_model(target) == workers.clean_run(events)


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def _freeze_outside_a_write(proc: subprocess.Popen[bytes], db: Path) -> None:
    """SIGSTOP ``proc`` at a moment it holds no SQLite write lock.

    A relay renews its lease in short write transactions; frozen inside one it would
    hold the file's write lock (as any frozen SQLite writer does) and every appender
    would time out, which is SQLite's nature, not what this test is about.
    """
    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        probe = sqlite3.connect(db, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # frozen mid-transaction: let it finish
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.02)
        finally:
            probe.close()
    raise AssertionError("the relay always held the write lock")


def test_a_relay_stalled_past_its_lease_does_not_publish_again_after_it_resumes(
    broker: Broker, tmp_path: Path
) -> None:
    """The fence (docs/event-bus.md): a holder frozen (SIGSTOP) past its lease may finish
    the one publish it was in; then it finds the lease gone: it publishes nothing more
    and moves no checkpoint while the new holder holds the lease. Here it is frozen
    idle, between batches, so it may not publish at all once resumed."""
    db, log = tmp_path / "events.db", tmp_path / "publish.log"
    store = SQLiteEventStore(db)
    declare(broker.url, "wire")
    workers.append(str(db), 300, STREAMS)
    relays = [worker("relay", db, broker.url, "r", 2.0, log) for _ in range(2)]

    def published(pid: int | None = None) -> set[int]:
        return {q for w, p, ps in log_lines(log) if w == "end" and pid in (None, p) for q in ps}

    try:
        head = store.head_position()
        wait_for(lambda: head in published(), "the holder to catch up")
        stalled = next(r for r in relays if r.pid == log_lines(log)[-1][1])
        other = next(r for r in relays if r is not stalled)
        _freeze_outside_a_write(stalled, db)  # idle, polling the store
        try:
            workers.append(str(db), 300, STREAMS, "card")  # for the new holder, once its turn
            head = store.head_position()
            wait_for(lambda: head in published(other.pid), "the takeover")
        finally:
            stalled.send_signal(signal.SIGCONT)
        resumed_at = len(log_lines(log))
        time.sleep(1.0)  # the resumed relay would publish what it finds after its checkpoint now
        workers.append(str(db), 100, STREAMS, "loan")
        head = store.head_position()
        wait_for(lambda: [s.position for s in relay_status(store)] == [head],
                 "the new holder to go on", poll=0.1)
    finally:
        for proc in relays:
            with contextlib.suppress(ProcessLookupError):
                kill(proc)
    after = [w for w, p, _ in log_lines(log)[resumed_at:] if p == stalled.pid]
    assert after == [], "the stalled relay published after it lost its lease"
    assert published() >= {e.position for e in store.read_all()}
    assert [s.position for s in relay_status(store)] == [head]  # never moved back
    assert_on_the_wire_in_order(broker.url, list(store.read_all()))


@pytest.mark.parametrize(("broker", "size"), [("rabbitmq", 135_000_000), ("jetstream", 1_100_000)],
                         indirect=["broker"])
def test_an_event_over_the_brokers_size_limit_is_rejected_not_retried_for_ever(
    broker: Broker, size: int
) -> None:
    """Over RabbitMQ's max_message_size (128 MiB) or NATS's max_payload (1 MiB), a publish
    is a PublishRejectedError, which stops a relay with its last error, rather than a
    BrokerUnavailableError, on which a relay would reconnect and resend it for ever.
    (Redis's limit, 512 MB, is too large to test here.)"""
    huge = _event("account-1", 1, 1, blob="x" * size)
    small = _event("account-1", 2, 2)

    async def scenario() -> None:
        async with sink_for_url(broker.url) as sink:
            with pytest.raises(PublishRejectedError):
                await sink.publish([OutgoingMessage(huge, to_cloudevent(huge))])
            await sink.open()  # the sink goes on once reopened
            await sink.publish([OutgoingMessage(small, to_cloudevent(small))])

    run(scenario())
