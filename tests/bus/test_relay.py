"""The outbox relay: checkpoint after confirm, recovery, filters, lease, status, store kinds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    BrokerUnavailableError,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    PublishRejectedError,
    SQLiteEventStore,
)
from eskit.aio import AsyncInMemoryEventStore, AsyncSQLiteEventStore
from eskit.bus.checkpoints import checkpoints_for
from eskit.bus.cloudevents import from_cloudevent
from eskit.bus.memory import MemoryBroker, MemorySink
from eskit.bus.relay import Relay, relay_status, relay_status_async
from tests.bus.conftest import unique_name
from tests.conftest import new_schema_name


def _fill(store: Any, streams: int = 4, per_stream: int = 10, kind: str = "Deposited") -> None:
    for version in range(per_stream):
        for n in range(streams):
            store.append(f"account-{n}", [NewEvent(kind, {"n": version})],
                         expected_version=version)


@pytest.fixture
def sink() -> Iterator[MemorySink]:
    name = unique_name("relay")
    yield MemorySink(name)
    MemoryBroker.forget(name)


def _published(sink: MemorySink) -> list[Any]:
    return [from_cloudevent(body) for body in sink.broker.published]


def _assert_every_event_once_in_order(store: Any, sink: MemorySink) -> None:
    events = list(store.read_all())
    assert _published(sink) == events


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def sync_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        store: Any = InMemoryEventStore()
    elif request.param == "sqlite":
        store = SQLiteEventStore(tmp_path / "events.db")
    else:
        from eskit.stores.postgres import PostgresEventStore

        dsn = request.getfixturevalue("postgres_dsn")
        store = PostgresEventStore(dsn, schema=new_schema_name(), pool_size=2)
    yield store
    store.close()


def test_relay_publishes_every_event_in_global_order_and_checkpoints_it(
    sync_store: Any, sink: MemorySink
) -> None:
    _fill(sync_store)
    relay = Relay(sync_store, sink, name="to-broker", batch_size=7)
    relay.run_sync(until_caught_up=True)
    _assert_every_event_once_in_order(sync_store, sink)
    [status] = relay_status(sync_store)
    assert status.name == "to-broker"
    assert status.destination == sink.destination
    assert status.position == status.head_position == sync_store.head_position()
    assert status.lag_events == 0
    assert status.published == 40
    assert status.lease_owner is None  # released on a clean stop
    # A second run starts from the checkpoint: nothing is published again.
    Relay(sync_store, sink, name="to-broker").run_sync(until_caught_up=True)
    assert len(sink.broker.published) == 40


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_relay_reads_async_stores(kind: str, tmp_path: Path, sink: MemorySink) -> None:
    async def scenario() -> None:
        store: Any = (AsyncInMemoryEventStore() if kind == "memory"
                      else AsyncSQLiteEventStore(tmp_path / "events.db"))
        for version in range(5):
            await store.append("account-1", [NewEvent("Deposited", {"n": version})],
                               expected_version=version)
        await Relay(store, sink, name="r", batch_size=2).run(until_caught_up=True)
        events = [e async for e in store.read_all()]
        assert _published(sink) == events
        [status] = await relay_status_async(store)
        assert status.position == events[-1].position
        await store.close()

    asyncio.run(scenario())


def test_relay_reads_an_async_postgres_store(postgres_dsn: str, sink: MemorySink) -> None:
    from eskit.aio.postgres import AsyncPostgresEventStore

    async def scenario() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        try:
            for version in range(5):
                await store.append("account-1", [NewEvent("Deposited", {"n": version})],
                                   expected_version=version)
            await Relay(store, sink, name="r", batch_size=2).run(until_caught_up=True)
            events = [e async for e in store.read_all()]
            assert _published(sink) == events
            [status] = await relay_status_async(store)
            assert status.position == events[-1].position
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_rejected_publish_stops_the_relay_without_moving_the_checkpoint(
    tmp_path: Path, sink: MemorySink
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store)
    sink.broker.fail_publish(after=3, error=PublishRejectedError("nack (test)"))
    with pytest.raises(PublishRejectedError):
        Relay(store, sink, name="r", batch_size=10).run_sync(until_caught_up=True)
    [status] = relay_status(store)
    assert status.position == 0  # 3 of the batch reached the broker, none is checkpointed
    assert status.lag_events == 40
    assert status.lag_seconds > 0
    assert status.last_error is not None
    assert "nack" in status.last_error
    assert len(sink.broker.published) == 3
    # Restarted, it publishes the whole batch again: at least once, nothing lost.
    Relay(store, sink, name="r", batch_size=10).run_sync(until_caught_up=True)
    assert _published(sink)[3:] == list(store.read_all())


def test_a_lost_broker_connection_is_retried_and_the_batch_published_again(
    tmp_path: Path, sink: MemorySink
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store)
    sink.broker.fail_publish(times=3, after=2)  # three drops, each mid-batch
    relay = Relay(store, sink, name="r", batch_size=8)
    relay.run_sync(until_caught_up=True)
    events = list(store.read_all())
    published = _published(sink)
    assert len(published) == 40 + 3 * 2
    assert {e.event_id for e in published} == {e.event_id for e in events}
    # The repeats are the prefix of the batch they belonged to: per-stream order holds
    # in what a consumer that drops repeats (the inbox) sees.
    first_seen: list[Any] = []
    for event in published:
        if event not in first_seen:
            first_seen.append(event)
    assert first_seen == events
    [status] = relay_status(store)
    assert status.last_error is None  # cleared once the broker confirmed again
    assert status.position == events[-1].position


def test_filters_publish_only_matching_events_and_still_move_the_checkpoint(
    sync_store: Any, sink: MemorySink
) -> None:
    _fill(sync_store, streams=2, per_stream=3)
    sync_store.append("order-1", [NewEvent("OrderPlaced", {}), NewEvent("Deposited", {})],
                      expected_version=0)
    Relay(sync_store, sink, name="r", event_types=["Deposited"], stream_prefixes=["order-"],
          batch_size=3).run_sync(until_caught_up=True)
    assert [(e.stream_id, e.event_type) for e in _published(sink)] == [("order-1", "Deposited")]
    [status] = relay_status(sync_store)
    assert status.position == sync_store.head_position()
    assert status.published == 1


def test_each_relay_name_keeps_its_own_checkpoint(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store, streams=1, per_stream=4)
    sinks = [MemorySink(unique_name("a")), MemorySink(unique_name("b"))]
    Relay(store, sinks[0], name="a").run_sync(until_caught_up=True)
    store.append("account-0", [NewEvent("Deposited", {})], expected_version=4)
    Relay(store, sinks[1], name="b").run_sync(until_caught_up=True)
    assert len(sinks[0].broker.published) == 4
    assert len(sinks[1].broker.published) == 5
    statuses = {s.name: s for s in relay_status(store)}
    assert statuses["a"].lag_events == 1
    assert statuses["b"].lag_events == 0


def test_the_lease_is_fenced(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")

    async def scenario() -> None:
        cps = checkpoints_for(store)
        assert await cps.acquire("r", "one", 60.0, "d") == 0
        assert await cps.acquire("r", "two", 60.0, "d") is None  # leased
        assert not await cps.advance("r", "two", 5, 1, None, 60.0)
        assert not await cps.renew("r", "two", 60.0)
        assert await cps.advance("r", "one", 5, 1, None, 0.001)  # renewed to expire at once
        await asyncio.sleep(0.01)
        assert await cps.acquire("r", "two", 60.0, "d") == 5  # expired: taken over
        assert not await cps.advance("r", "one", 9, 1, None, 60.0)  # the old owner is fenced
        assert not await cps.renew("r", "one", 60.0)
        await cps.release("r", "one")  # not the owner: no effect
        assert (await cps.rows())[0].owner == "two"
        await cps.release("r", "two")
        assert await cps.acquire("r", "one", 60.0, "d") == 5
        await cps.close()

    asyncio.run(scenario())


def test_a_second_relay_of_the_same_name_waits_for_the_lease(
    tmp_path: Path, sink: MemorySink
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store)
    other = MemorySink(unique_name("other"))

    async def scenario() -> None:
        first = Relay(store, sink, name="r", poll_interval=0.01)
        running = asyncio.create_task(first.run())
        while first.position < store.head_position():
            await asyncio.sleep(0.01)
        second = Relay(store, other, name="r", poll_interval=0.01, lease_seconds=0.5)
        waiting = asyncio.create_task(second.run(until_caught_up=True))
        store.append("account-0", [NewEvent("Deposited", {})], expected_version=10)
        while first.position < store.head_position():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert other.broker.published == []  # the second relay published nothing
        first.stop()
        await running
        await asyncio.wait_for(waiting, 30)  # the lease was released: it takes over
        assert other.broker.published == []  # ... from the first one's checkpoint
        assert second.position == store.head_position()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert len(sink.broker.published) == 41


def test_stop_ends_an_idle_relay(tmp_path: Path, sink: MemorySink) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")

    async def scenario() -> None:
        relay = Relay(store, sink, name="r", poll_interval=5.0)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.1)
        relay.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    [status] = relay_status(store)
    assert status.lease_owner is None


class _DownSink(MemorySink):
    """A broker that stays unreachable: open fails."""

    async def open(self) -> None:
        raise BrokerUnavailableError("down (test)")


def test_an_unreachable_broker_is_recorded_and_the_relay_keeps_trying(
    tmp_path: Path
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store, streams=1, per_stream=1)
    sink = _DownSink(unique_name("down"))

    async def scenario() -> None:
        relay = Relay(store, sink, name="r")
        task = asyncio.create_task(relay.run())
        while not [s for s in await relay_status_async(store) if s.last_error]:
            await asyncio.sleep(0.02)
        assert not task.done()
        relay.stop()
        await asyncio.wait_for(task, 10)  # a clean stop, though the broker never came

    asyncio.run(scenario())
    [status] = relay_status(store)
    assert status.last_error == "down (test)"
    assert status.position == 0


@pytest.mark.parametrize("bad", [
    {"name": ""}, {"name": "a\nb"}, {"name": "x" * 201}, {"batch_size": 0},
    {"batch_size": True}, {"lease_seconds": 0}, {"poll_interval": -1}, {"source": ""},
    {"event_types": "Deposited"}, {"max_batch_bytes": 0},
])
def test_bad_arguments_are_invalid_input(bad: dict[str, Any], sink: MemorySink) -> None:
    kwargs: dict[str, Any] = {"name": "r", **bad}
    with pytest.raises(InvalidInputError):
        Relay(InMemoryEventStore(), sink, **kwargs)


def test_not_a_store_or_not_a_sink_is_invalid_input(sink: MemorySink) -> None:
    with pytest.raises(InvalidInputError):
        Relay(object(), sink, name="r")
    with pytest.raises(InvalidInputError):
        Relay(InMemoryEventStore(), object(), name="r")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        Relay(SQLiteEventStore(":memory:"), sink, name="r")




def test_an_undecodable_event_stops_the_relay_before_it_and_is_reported(
    tmp_path: Path, sink: MemorySink
) -> None:
    import sqlite3

    from eskit import DecodingError

    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store, streams=1, per_stream=3)
    first = next(iter(store.read_all()))
    with sqlite3.connect(tmp_path / "events.db") as conn:  # our own file: lift append-only
        conn.execute("DROP TRIGGER eskit_events_no_update")
        conn.execute("UPDATE eskit_events SET data = '{\"__eskit__\": \"nope\"}' "
                     "WHERE version = 2")
    with pytest.raises(DecodingError):
        Relay(store, sink, name="r", batch_size=1).run_sync(until_caught_up=True)
    [status] = relay_status(store)
    assert status.position == first.position
    assert status.lag_events == 2  # the undecodable event counts
    assert status.last_error is not None
    assert "cannot decode event 'Deposited' at version 2" in status.last_error
    assert len(sink.broker.published) == 1


class _CountingSink(MemorySink):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.batches: list[int] = []

    async def publish(self, messages: Any) -> None:
        self.batches.append(sum(len(m.body) for m in messages))
        await super().publish(messages)


def test_a_page_is_cut_into_batches_of_at_most_max_batch_bytes(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.append("account-1", [NewEvent("Deposited", {"blob": "x" * 1000}) for _ in range(20)])
    store.append("account-2", [NewEvent("Deposited", {"blob": "y" * 50_000})])  # over the cap
    sink = _CountingSink(unique_name("cut"))
    Relay(store, sink, name="r", max_batch_bytes=5_000).run_sync(until_caught_up=True)
    assert _published(sink) == list(store.read_all())
    assert len(sink.batches) > 4
    assert all(size <= 5_000 for size in sink.batches[:-1])
    assert sink.batches[-1] > 50_000  # an event larger than the cap goes alone
    [status] = relay_status(store)
    assert status.position == store.head_position()


def test_relays_starting_together_on_a_new_postgres_schema_all_get_their_table(
    postgres_dsn: str,
) -> None:
    from eskit.stores.postgres import PostgresEventStore

    store = PostgresEventStore(postgres_dsn, schema=new_schema_name(), pool_size=2)
    _fill(store, streams=1, per_stream=3)

    async def scenario() -> None:
        sinks = [MemorySink(unique_name("pg")) for _ in range(4)]
        await asyncio.gather(*(
            Relay(store, sink, name=f"r{n}").run(until_caught_up=True)
            for n, sink in enumerate(sinks)
        ))
        assert [len(s.broker.published) for s in sinks] == [3, 3, 3, 3]

    try:
        asyncio.run(scenario())
        assert sorted(s.name for s in relay_status(store)) == ["r0", "r1", "r2", "r3"]
    finally:
        store.close()
