"""The contract every broker module passes, as a reusable pytest suite.

A broker's test module subclasses :class:`BusContract` (transport only) or
:class:`RelayConsumerContract` (that, plus a relay and a consumer end to end)
and says how to name a fresh destination::

    class TestMyBroker(RelayConsumerContract):
        def make_url(self) -> str:
            return f"mybroker://127.0.0.1/?stream={unique_name()}"

Every test goes through :func:`eskit.bus.urls.sink_for_url` and
:func:`~eskit.bus.urls.source_for_url` only, so a broker passes exactly the
tests eskit's own brokers pass. Each test is bounded by :attr:`BusContract.timeout`
seconds (a hang fails, it never blocks the run); no test measures speed.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eskit import Event, InvalidInputError, NewEvent, SQLiteEventStore
from eskit.bus.checkpoints import checkpoints_for
from eskit.bus.cloudevents import from_cloudevent, to_cloudevent
from eskit.bus.consumer import Consumer
from eskit.bus.relay import Relay
from eskit.bus.sink import OutgoingMessage, Sink
from eskit.bus.source import Delivery, Source
from eskit.bus.urls import sink_for_url, source_for_url
from eskit.projections.targets import SQLiteTarget

__all__ = ["BusContract", "RelayConsumerContract"]

T = TypeVar("T")


def _event(stream: str, version: int, position: int, **data: Any) -> Event:
    return Event(uuid.uuid4(), stream, "Deposited", {"amount": Decimal("1.05"), **data},
                 datetime.now(UTC), version, position, {"correlation_id": "c-1"})


def _messages(events: Sequence[Event]) -> list[OutgoingMessage]:
    return [OutgoingMessage(e, to_cloudevent(e)) for e in events]


def _group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


async def _take(source: Source, count: int) -> list[Delivery]:
    """The next ``count`` deliveries of ``source``, unsettled."""
    taken: list[Delivery] = []
    if count == 0:
        return taken
    async for delivery in source.deliveries():
        taken.append(delivery)
        if len(taken) == count:
            break
    return taken


async def _consume(source: Source, count: int) -> list[bytes]:
    """Ack ``count`` deliveries, each as it arrives; their bodies in delivery order.

    Acked one by one, as a consumer does: a broker may stop delivering while its
    prefetch window of unsettled messages is full (RabbitMQ's ``prefetch``).
    """
    bodies: list[bytes] = []
    if count == 0:
        return bodies
    async for delivery in source.deliveries():
        bodies.append(delivery.message.body)
        await delivery.ack()
        if len(bodies) == count:
            break
    return bodies


class BusContract(ABC):
    """Transport guarantees of one broker's sink and source (see :mod:`eskit.bus`)."""

    timeout: float = 60.0
    """The most seconds one test may take before it fails."""

    @abstractmethod
    def make_url(self) -> str:
        """A URL for a fresh destination nobody else uses (unique exchange / stream / key)."""

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(asyncio.wait_for(coro, self.timeout))

    async def _open(self, url: str, *groups: str) -> tuple[Sink, list[Source]]:
        sources = [source_for_url(url, group=g) for g in groups]
        for source in sources:  # declared before anything is published
            await source.open()
        sink = sink_for_url(url)
        await sink.open()
        return sink, sources

    async def _close(self, sink: Sink, sources: Sequence[Source]) -> None:
        await sink.close()
        for source in sources:
            await source.close()

    def test_a_confirmed_publish_is_delivered_intact(self) -> None:
        async def scenario() -> None:
            sink, [source] = await self._open(self.make_url(), _group())
            try:
                events = [_event("account-1", v, v) for v in (1, 2, 3)]
                await sink.publish(_messages(events))
                bodies = await _consume(source, 3)
                assert [from_cloudevent(b) for b in bodies] == events
            finally:
                await self._close(sink, [source])

        self.run(scenario())

    def test_per_stream_order_holds_for_interleaved_streams(self) -> None:
        async def scenario() -> None:
            sink, [source] = await self._open(self.make_url(), _group())
            try:
                streams = [f"account-{n}" for n in range(7)]
                versions = dict.fromkeys(streams, 0)
                events = []
                for position in range(1, 1001):
                    stream = streams[(position * 3) % 7]
                    versions[stream] += 1
                    events.append(_event(stream, versions[stream], position))
                for start in range(0, 1000, 100):
                    await sink.publish(_messages(events[start:start + 100]))
                seen: dict[Any, list[int]] = {}
                for body in await _consume(source, 1000):
                    event = from_cloudevent(body)
                    seen.setdefault(event.stream_id, []).append(event.version)
                for stream in streams:
                    assert seen[stream] == list(range(1, versions[stream] + 1)), stream
            finally:
                await self._close(sink, [source])

        self.run(scenario())

    def test_every_group_gets_every_message(self) -> None:
        async def scenario() -> None:
            sink, sources = await self._open(self.make_url(), _group(), _group())
            try:
                events = [_event(f"s-{v % 4}", v, v) for v in range(1, 51)]
                await sink.publish(_messages(events))
                for source in sources:
                    got = {from_cloudevent(b).event_id for b in await _consume(source, 50)}
                    assert got == {e.event_id for e in events}
            finally:
                await self._close(sink, sources)

        self.run(scenario())

    def test_competing_members_of_a_group_share_the_work(self) -> None:
        async def scenario() -> None:
            group = _group()
            sink, members = await self._open(self.make_url(), group, group)
            total = 200
            got: list[list[str]] = [[], []]
            done = asyncio.Event()

            async def member(index: int) -> None:
                async for delivery in members[index].deliveries():
                    got[index].append(str(from_cloudevent(delivery.message.body).event_id))
                    await delivery.ack()
                    await asyncio.sleep(0.001)  # let the other member take its share
                    if len(got[0]) + len(got[1]) >= total:
                        done.set()

            tasks = [asyncio.create_task(member(i)) for i in (0, 1)]
            try:
                events = [_event(f"s-{v}", 1, v) for v in range(1, total + 1)]
                for start in range(0, total, 10):  # a trickle, as a relay publishes
                    await sink.publish(_messages(events[start:start + 10]))
                    await asyncio.sleep(0.01)
                await done.wait()
                await asyncio.sleep(0.2)  # nothing more may arrive
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._close(sink, members)
            everything = got[0] + got[1]
            assert sorted(everything) == sorted(str(e.event_id) for e in events)
            assert got[0], "the second member did all the work"
            assert got[1], "the first member did all the work"

        self.run(scenario())

    def test_unacked_messages_are_redelivered_after_a_member_closes(self) -> None:
        async def scenario() -> None:
            url, group = self.make_url(), _group()
            sink, [first] = await self._open(url, group)
            second = source_for_url(url, group=group)
            try:
                events = [_event("account-9", v, v) for v in (1, 2)]
                await sink.publish(_messages(events))
                held = await _take(first, 1)
                assert held[0].message.delivery_count == 1
                await first.close()  # without settling
                await second.open()
                redelivered: dict[bytes, int] = {}
                async for delivery in second.deliveries():
                    redelivered[delivery.message.body] = delivery.message.delivery_count
                    await delivery.ack()
                    if len(redelivered) == 2:
                        break
                assert redelivered[held[0].message.body] >= 2
                got = sorted((from_cloudevent(b) for b in redelivered), key=lambda e: e.version)
                assert got == events
            finally:
                await self._close(sink, [first, second])

        self.run(scenario())

    def test_retry_redelivers_with_a_higher_delivery_count(self) -> None:
        async def scenario() -> None:
            sink, [source] = await self._open(self.make_url(), _group())
            try:
                [message] = _messages([_event("account-1", 1, 1)])
                await sink.publish([message])
                [first] = await _take(source, 1)
                await first.retry(0.05)
                [again] = await _take(source, 1)
                assert again.message.body == message.body
                assert again.message.delivery_count > first.message.delivery_count
                await again.ack()
            finally:
                await self._close(sink, [source])

        self.run(scenario())

    def test_dead_letters_are_listed_with_their_reason_and_replayed(self) -> None:
        async def scenario() -> None:
            sink, [source] = await self._open(self.make_url(), _group())
            try:
                [message] = _messages([_event("account-1", 1, 1)])
                await sink.publish([message])
                [delivery] = await _take(source, 1)
                await delivery.dead_letter("handler said no")
                dead = await source.dead_letters()
                while not dead:  # a broker may route to its dead-letter path asynchronously
                    await asyncio.sleep(0.05)
                    dead = await source.dead_letters()
                assert [(d.body, d.reason) for d in dead] == [(message.body, "handler said no")]
                assert await source.replay_dead_letters([dead[0].dead_letter_id]) == 1
                [replayed] = await _take(source, 1)
                assert replayed.message.body == message.body
                await replayed.ack()
                assert await source.dead_letters() == []
            finally:
                await self._close(sink, [source])

        self.run(scenario())

    def test_body_bytes_arrive_unchanged(self) -> None:
        async def scenario() -> None:
            sink, [source] = await self._open(self.make_url(), _group())
            try:
                odd = _event("konto-ä😀", 1, 2**96 + 5, note="ünïcödé 😀 \u2028 \"quoted\"",
                             blob="x" * 200_000, big=2**200)
                messages = _messages([odd])
                await sink.publish(messages)
                [body] = await _consume(source, 1)
                assert body == messages[0].body
                assert from_cloudevent(body) == odd
            finally:
                await self._close(sink, [source])

        self.run(scenario())

    def test_close_twice_is_fine(self) -> None:
        async def scenario() -> None:
            url = self.make_url()
            sink, source = sink_for_url(url), source_for_url(url, group=_group())
            await sink.close()  # never opened
            await source.close()
            await sink.open()
            await source.open()
            for _ in (1, 2):
                await sink.close()
                await source.close()

        self.run(scenario())

    def test_a_bad_group_is_invalid_input_before_any_io(self) -> None:
        url = self.make_url()
        for group in ("", "\ud800", 7):
            with pytest.raises(InvalidInputError):
                source_for_url(url, group=group)  # type: ignore[arg-type]


class RelayConsumerContract(BusContract):
    """End to end: SQLite store → :class:`~eskit.bus.relay.Relay` → broker →
    :class:`~eskit.bus.consumer.Consumer` → :class:`~eskit.projections.targets.SQLiteTarget`.
    """

    streams = 5
    events_per_stream = 40

    def _store(self, tmp_path: Path) -> SQLiteEventStore:
        store = SQLiteEventStore(tmp_path / "events.db")
        for round_no in range(self.events_per_stream):
            for n in range(self.streams):
                store.append(f"account-{n}", [
                    NewEvent("Deposited", {"amount": Decimal(f"{round_no}.{n:02d}")}),
                ], expected_version=round_no)
        return store

    def _target(self, tmp_path: Path) -> SQLiteTarget:
        target = SQLiteTarget(tmp_path / "read-model.db")
        with target.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS balances "
                         "(stream TEXT PRIMARY KEY, total TEXT NOT NULL, applied INTEGER NOT NULL)")
        return target

    @staticmethod
    def _apply(event: Event, conn: Any) -> None:
        row = conn.execute("SELECT total, applied FROM balances WHERE stream = ?",
                           (str(event.stream_id),)).fetchone()
        total = Decimal(row[0]) if row else Decimal(0)
        applied = row[1] if row else 0
        conn.execute("INSERT OR REPLACE INTO balances VALUES (?, ?, ?)", (
            str(event.stream_id), str(total + event.event_data["amount"]), applied + 1))

    def _expected(self, store: SQLiteEventStore) -> dict[str, tuple[Decimal, int]]:
        out: dict[str, tuple[Decimal, int]] = {}
        for event in store.read_all():
            total, count = out.get(str(event.stream_id), (Decimal(0), 0))
            out[str(event.stream_id)] = (total + event.event_data["amount"], count + 1)
        return out

    @staticmethod
    def _balances(target: SQLiteTarget) -> dict[str, tuple[Decimal, int]]:
        with target.transaction() as conn:
            rows = conn.execute("SELECT stream, total, applied FROM balances").fetchall()
        return {r[0]: (Decimal(r[1]), r[2]) for r in rows}

    async def _consume_until(self, consumer: Consumer, target: SQLiteTarget, applied: int) -> None:
        task = asyncio.create_task(consumer.run())
        try:
            while sum(n for _, n in self._balances(target).values()) < applied:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # a late duplicate would show now
        finally:
            consumer.stop()
            await task

    def test_the_read_model_equals_the_store(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            url, store, target = self.make_url(), self._store(tmp_path), self._target(tmp_path)
            source = source_for_url(url, group=_group())
            await source.open()  # the group exists before the relay publishes
            await source.close()
            consumer = Consumer(source, target, self._apply, name="balances")
            await Relay(store, sink_for_url(url), name="r").run(until_caught_up=True)
            await self._consume_until(consumer, target, self.streams * self.events_per_stream)
            assert self._balances(target) == self._expected(store)

        self.run(scenario())

    def test_effects_are_exactly_once_when_the_relay_publishes_a_batch_twice(
        self, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            url, store, target = self.make_url(), self._store(tmp_path), self._target(tmp_path)
            source = source_for_url(url, group=_group())
            await source.open()
            await source.close()
            await Relay(store, sink_for_url(url), name="r", batch_size=64).run(
                until_caught_up=True)
            # Rewind the checkpoint, as after a crash between confirm and checkpoint.
            older = list(store.read_all())[70].position
            checkpoints = checkpoints_for(store)
            await checkpoints.set_position("r", older)
            await checkpoints.close()
            await Relay(store, sink_for_url(url), name="r", batch_size=64).run(
                until_caught_up=True)
            consumer = Consumer(source, target, self._apply, name="balances")
            await self._consume_until(consumer, target, self.streams * self.events_per_stream)
            assert self._balances(target) == self._expected(store)
            assert consumer.applied == self.streams * self.events_per_stream

        self.run(scenario())

    def test_effects_are_exactly_once_when_a_handler_fails_once(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            url, store, target = self.make_url(), self._store(tmp_path), self._target(tmp_path)
            source = source_for_url(url, group=_group())
            await source.open()
            await source.close()
            victims = {e.event_id for e in list(store.read_all())[::17]}

            def flaky(event: Event, conn: Any) -> None:
                self._apply(event, conn)  # its effects must be rolled back
                if event.event_id in victims:
                    victims.discard(event.event_id)
                    raise RuntimeError("transient failure")

            consumer = Consumer(source, target, flaky, name="balances", backoff=(0.01, 0.05))
            await Relay(store, sink_for_url(url), name="r").run(until_caught_up=True)
            await self._consume_until(consumer, target, self.streams * self.events_per_stream)
            assert self._balances(target) == self._expected(store)
            assert not victims
            assert consumer.retried >= 1
            assert consumer.dead_lettered == 0

        self.run(scenario())

    def test_a_poison_message_is_dead_lettered_and_applied_once_replayed(
        self, tmp_path: Path
    ) -> None:
        async def scenario() -> None:
            url, store, target = self.make_url(), self._store(tmp_path), self._target(tmp_path)
            group = _group()
            source = source_for_url(url, group=group)
            await source.open()
            await source.close()
            poison = list(store.read_all())[3].event_id
            broken = [True]

            def handler(event: Event, conn: Any) -> None:
                if event.event_id == poison and broken[0]:
                    raise ValueError("cannot apply this one")
                self._apply(event, conn)

            total = self.streams * self.events_per_stream
            consumer = Consumer(source, target, handler, name="balances", max_attempts=2,
                                backoff=(0.01, 0.02))
            await Relay(store, sink_for_url(url), name="r").run(until_caught_up=True)
            await self._consume_until(consumer, target, total - 1)
            assert consumer.dead_lettered == 1
            inspector = source_for_url(url, group=group)
            await inspector.open()
            try:
                dead = await inspector.dead_letters()
                while not dead:
                    await asyncio.sleep(0.05)
                    dead = await inspector.dead_letters()
                assert [from_cloudevent(d.body).event_id for d in dead] == [poison]
                assert "cannot apply this one" in dead[0].reason
                broken[0] = False
                assert await inspector.replay_dead_letters() == 1
            finally:
                await inspector.close()
            again = Consumer(source_for_url(url, group=group), target, handler, name="balances")
            await self._consume_until(again, target, total)
            assert self._balances(target) == self._expected(store)

        self.run(scenario())
