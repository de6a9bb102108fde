"""The consumer: inbox on every target kind, retries, dead letters, undecodable messages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eskit import Event, InvalidInputError
from eskit.bus.cloudevents import to_cloudevent
from eskit.bus.consumer import Consumer
from eskit.bus.inbox import Inbox
from eskit.bus.memory import MemoryBroker, MemorySink, MemorySource
from eskit.bus.sink import OutgoingMessage
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.targets import InMemoryTarget, PostgresTarget, SQLiteTarget
from tests.bus.conftest import unique_name
from tests.conftest import new_schema_name


def _event(n: int, stream: str = "account-1") -> Event:
    return Event(uuid.uuid4(), stream, "Deposited", {"n": n}, datetime.now(UTC), n, n)


@pytest.fixture
def broker_name() -> Iterator[str]:
    name = unique_name("consumer")
    yield name
    MemoryBroker.forget(name)


def _publish(name: str, bodies: list[bytes], events: list[Event]) -> None:
    async def go() -> None:
        sink = MemorySink(name)
        await sink.open()
        await sink.publish([OutgoingMessage(e, b) for e, b in zip(events, bodies, strict=True)])
        await sink.close()

    asyncio.run(go())


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProjectionTarget]:
    if request.param == "memory":
        made: ProjectionTarget = InMemoryTarget()
    elif request.param == "sqlite":
        made = SQLiteTarget(tmp_path / "rm.db")
    else:
        made = PostgresTarget(request.getfixturevalue("postgres_dsn"), schema=new_schema_name())
    yield made
    made.close()


class _Recorder:
    """A read model: a table on SQL targets, a list in memory (no rollback there)."""

    def __init__(self, target: ProjectionTarget) -> None:
        self.target = target
        self.memory: list[int] = []
        if target.dialect != "memory":
            with target.transaction() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS applied (n INTEGER NOT NULL)")

    def apply(self, event: Event, conn: Any) -> None:
        if conn is None:
            self.memory.append(event.event_data["n"])
        else:
            mark = "?" if self.target.dialect == "sqlite" else "%s"
            conn.execute(f"INSERT INTO applied (n) VALUES ({mark})", (event.event_data["n"],))

    def rows(self) -> list[int]:
        if self.target.dialect == "memory":
            return sorted(self.memory)
        with self.target.transaction() as conn:
            return sorted(r[0] for r in conn.execute("SELECT n FROM applied").fetchall())


def test_a_redelivered_message_is_acked_without_running_the_handler_again(
    target: ProjectionTarget, broker_name: str
) -> None:
    events = [_event(n) for n in range(1, 6)]
    bodies = [to_cloudevent(e) for e in events]
    _publish(broker_name, bodies + bodies[1:3], events + events[1:3])  # two repeats
    model = _Recorder(target)
    consumer = Consumer(MemorySource(broker_name, group="g"), target, model.apply, name="m")
    consumer.run_sync(idle_timeout=0.3)
    assert model.rows() == [1, 2, 3, 4, 5]
    assert (consumer.applied, consumer.duplicates) == (5, 2)
    assert Inbox(target, "m").seen(str(events[0].event_id))
    assert not Inbox(target, "another").seen(str(events[0].event_id))
    # A new run of the same consumer (a restart) sees the same inbox.
    _publish(broker_name, bodies[:1], events[:1])
    again = Consumer(MemorySource(broker_name, group="g"), target, model.apply, name="m")
    again.run_sync(idle_timeout=0.3)
    assert (again.applied, again.duplicates) == (0, 1)
    assert model.rows() == [1, 2, 3, 4, 5]


def test_a_failing_handler_is_rolled_back_retried_then_dead_lettered(
    tmp_path: Path, broker_name: str
) -> None:
    target = SQLiteTarget(tmp_path / "rm.db")
    model = _Recorder(target)
    events = [_event(n) for n in (1, 2, 3)]
    bodies = [to_cloudevent(e) for e in events]
    _publish(broker_name, bodies, events)
    attempts: list[int] = []

    def handler(event: Event, conn: Any) -> None:
        model.apply(event, conn)  # written, then rolled back
        if event.event_data["n"] == 2:
            attempts.append(1)
            raise RuntimeError("always fails")

    consumer = Consumer(MemorySource(broker_name, group="g"), target, handler, name="m",
                        max_attempts=3, backoff=(0.001, 0.004))
    consumer.run_sync(idle_timeout=0.3)
    assert model.rows() == [1, 3]
    assert len(attempts) == 3
    assert (consumer.retried, consumer.dead_lettered) == (2, 1)

    async def inspect() -> None:
        source = MemorySource(broker_name, group="g")
        [dead] = await source.dead_letters()
        assert dead.reason == "RuntimeError: always fails"
        assert dead.body == bodies[1]
        assert dead.dead_at is not None

    asyncio.run(inspect())
    assert not Inbox(target, "m").seen(str(events[1].event_id))


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"specversion": "1.0"}', b"\xff"])
def test_an_undecodable_message_is_dead_lettered_at_once(
    body: bytes, tmp_path: Path, broker_name: str
) -> None:
    target = SQLiteTarget(tmp_path / "rm.db")
    calls: list[Event] = []
    _publish(broker_name, [body], [_event(1)])
    consumer = Consumer(MemorySource(broker_name, group="g"), target,
                        lambda e, c: calls.append(e), name="m")
    consumer.run_sync(idle_timeout=0.2)
    assert calls == []
    assert consumer.dead_lettered == 1
    assert consumer.retried == 0

    async def inspect() -> None:
        [dead] = await MemorySource(broker_name, group="g").dead_letters()
        assert dead.body == body
        assert dead.reason.startswith("undecodable:")

    asyncio.run(inspect())


def test_retry_delays_grow_to_the_longest(tmp_path: Path, broker_name: str) -> None:
    consumer = Consumer(MemorySource(broker_name, group="g"), InMemoryTarget(),
                        lambda e, c: None, name="m", backoff=(0.5, 3.0))
    assert [consumer.retry_delay(n) for n in (1, 2, 3, 4, 99)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_stop_ends_a_waiting_consumer(broker_name: str) -> None:
    async def scenario() -> None:
        consumer = Consumer(MemorySource(broker_name, group="g"), InMemoryTarget(),
                            lambda e, c: None, name="m")
        task = asyncio.create_task(consumer.run())
        await asyncio.sleep(0.05)
        consumer.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


@pytest.mark.parametrize("bad", [
    {"name": ""}, {"name": "x" * 201}, {"max_attempts": 0}, {"backoff": (1.0,)},
    {"backoff": (2.0, 1.0)}, {"backoff": (-1.0, 1.0)}, {"handler": 3}, {"target": object()},
    {"source": object()},
])
def test_bad_arguments_are_invalid_input(bad: dict[str, Any], broker_name: str) -> None:
    kwargs: dict[str, Any] = {
        "source": MemorySource(broker_name, group="g"), "target": InMemoryTarget(),
        "handler": lambda e, c: None, "name": "m", **bad,
    }
    source, target, handler = kwargs.pop("source"), kwargs.pop("target"), kwargs.pop("handler")
    with pytest.raises(InvalidInputError):
        Consumer(source, target, handler, **kwargs)


def test_a_consumer_killed_mid_handler_leaves_no_double_effect(
    tmp_path: Path, broker_name: str
) -> None:
    import threading

    target = SQLiteTarget(tmp_path / "rm.db")
    model = _Recorder(target)
    events = [_event(n) for n in range(1, 6)]
    _publish(broker_name, [to_cloudevent(e) for e in events], events)
    inside, release = threading.Event(), threading.Event()

    def slow_on_three(event: Event, conn: Any) -> None:
        model.apply(event, conn)
        if event.event_data["n"] == 3 and not release.is_set():
            inside.set()
            release.wait(30)  # the process "dies" here: the task is cancelled

    async def scenario() -> None:
        consumer = Consumer(MemorySource(broker_name, group="g"), target, slow_on_three,
                            name="m")
        task = asyncio.create_task(consumer.run())
        while not inside.is_set():
            await asyncio.sleep(0.01)
        task.cancel()  # no ack for event 3: the broker redelivers it
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()  # the handler's transaction now commits, with its inbox row
        again = Consumer(MemorySource(broker_name, group="g"), target, slow_on_three,
                         name="m")
        await again.run(idle_timeout=0.3)
        assert again.duplicates == 1  # event 3, redelivered, found in the inbox

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert model.rows() == [1, 2, 3, 4, 5]


def test_a_consumer_waits_for_an_unreachable_broker(broker_name: str) -> None:
    from eskit import BrokerUnavailableError

    class Flaky(MemorySource):
        tries = 0

        async def open(self) -> None:
            Flaky.tries += 1
            if Flaky.tries < 3:
                raise BrokerUnavailableError("not yet (test)")
            await super().open()

    events = [_event(1)]
    _publish(broker_name, [to_cloudevent(events[0])], events)
    seen: list[Event] = []
    consumer = Consumer(Flaky(broker_name, group="g"), InMemoryTarget(),
                        lambda e, c: seen.append(e), name="m")
    consumer.run_sync(idle_timeout=0.3)
    assert Flaky.tries == 3
    assert seen == events


def test_competing_consumers_on_one_target_apply_each_event_once(
    target: ProjectionTarget, broker_name: str
) -> None:
    events = [_event(n, stream=f"account-{n % 3}") for n in range(1, 61)]
    bodies = [to_cloudevent(e) for e in events]
    _publish(broker_name, bodies + bodies, events + events)  # every message twice
    model = _Recorder(target)

    async def scenario() -> list[Consumer]:
        members = [Consumer(MemorySource(broker_name, group="g"), target, model.apply,
                            name="m") for _ in range(2)]
        await asyncio.gather(*(m.run(idle_timeout=0.5) for m in members))
        return members

    members = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert model.rows() == list(range(1, 61))
    assert sum(m.applied for m in members) == 60
    assert sum(m.duplicates for m in members) == 60
