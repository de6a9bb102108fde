"""Relay groups: members split the partitions, rebalance, take over a killed member.

Each member gets its own store object on one database (as separate processes
would), whose filtered reads are recorded, and its own sink, which records what it
published and which partitions the member held at that moment.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from eskit import InMemoryEventStore, InvalidInputError, NewEvent, SQLiteEventStore
from eskit.aio import AsyncSQLiteEventStore
from eskit.bus.checkpoints import checkpoints_for
from eskit.bus.relay import Relay, relay_status_async
from eskit.bus.relay_group import RelayGroup
from eskit.bus.sink import OutgoingMessage, Sink
from eskit.projections import partition_of
from tests.conftest import new_schema_name

LEASE = 1.0  # heartbeats every 0.25 s


class Recorder(Sink):
    """A sink that remembers each event and what its member held when publishing it."""

    scheme: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.member: RelayGroup | None = None
        self.published: list[tuple[Any, frozenset[int]]] = []

    @classmethod
    def from_url(cls, url: str) -> Self:  # pragma: no cover - not used by URL
        return cls()

    @property
    def destination(self) -> str:
        return "recorder://group-test"

    async def open(self) -> None:
        pass

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        held = self.member.held if self.member is not None else frozenset()
        self.published.extend((m.event, held) for m in messages)

    async def close(self) -> None:
        pass


def _record_reads(store: Any) -> list[tuple[frozenset[int] | None, list[Any]]]:
    """Wrap ``store``'s filtered page (and forbid unfiltered reads): the reads, recorded."""
    reads: list[tuple[frozenset[int] | None, list[Any]]] = []
    inner = store._filtered_page

    def filtered_page(after: int, limit: int, wanted: Any, tolerant: bool) -> Any:
        page = inner(after, limit, wanted, tolerant)
        reads.append((wanted.partitions, list(page[0])))
        return page

    def read_all(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a group member read the whole log")

    store._filtered_page = filtered_page
    store.read_all = read_all
    return reads


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """A factory of store objects on one database; all closed at the end."""
    opened: list[Any] = []
    if request.param == "sqlite":
        def make() -> Any:
            opened.append(SQLiteEventStore(tmp_path / "events.db"))
            return opened[-1]
    else:
        from eskit.stores.postgres import PostgresEventStore

        dsn = request.getfixturevalue("postgres_dsn")
        schema = new_schema_name()

        def make() -> Any:
            opened.append(PostgresEventStore(dsn, schema=schema, pool_size=2))
            return opened[-1]
    yield make
    for store in opened:
        store.close()


def _fill(store: Any, streams: int, per_stream: int, start: int = 0) -> None:
    for version in range(start, start + per_stream):
        for n in range(streams):
            store.append(f"account-{n}", [NewEvent("Deposited", {"n": version})],
                         expected_version=version)


async def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _member(store: Any, name: str, member: str, partitions: int = 6,
            **options: Any) -> tuple[RelayGroup, Recorder]:
    sink = Recorder()
    relay = RelayGroup(store, sink, name=name, partitions=partitions, member=member,
                       lease_seconds=LEASE, poll_interval=0.02, **options)
    sink.member = relay
    return relay, sink


def _assert_in_stream_order(events: list[Any]) -> None:
    last: dict[str, int] = {}
    for event in events:
        assert event.version > last.get(str(event.stream_id), -1), event
        last[str(event.stream_id)] = event.version


@pytest.mark.parametrize("count", [2, 3])
def test_members_split_the_partitions_and_publish_only_their_own(
    open_store: Callable[[], Any], count: int
) -> None:
    writer = open_store()

    async def scenario() -> None:
        stores = [open_store() for _ in range(count)]
        reads = [_record_reads(s) for s in stores]
        members = [_member(s, "out", f"m{i}", batch_size=7) for i, s in enumerate(stores)]
        tasks = [asyncio.ensure_future(m.run()) for m, _ in members]
        try:
            # Settle first: every member at its fair share, all six held, none twice.
            await _until(lambda: sorted(len(m.held) for m, _ in members) == [6 // count] * count
                         and set().union(*(m.held for m, _ in members)) == set(range(6)),
                         10, "the split")
            holdings = [m.held for m, _ in members]
            for read in reads:
                read.clear()  # the reads before the split (of nothing: no event yet)
            await asyncio.to_thread(_fill, writer, 12, 8)
            head = writer.head_position()
            await _until(lambda: all(m.positions.get(p) == head for m, _ in members
                                     for p in m.held), 20, "the members to catch up")
            # Caught up and idle: one head read a round, no partition read.
            await asyncio.sleep(0.05)
            idle = [len(read) for read in reads]
            await asyncio.sleep(0.3)
            assert [len(read) for read in reads] == idle
            statuses = await relay_status_async(writer)
            assert [s.name for s in statuses] == [f"out/{p}" for p in range(6)]
            for s in statuses:
                assert s.group == "out"
                assert s.partitions == 6
                assert s.lag_events == 0
                assert s.members == tuple(f"m{i}" for i in range(count))
                [owner] = [f"m{i}" for i, (m, _) in enumerate(members) if s.partition in m.held]
                assert s.lease_owner == owner
        finally:
            for m, _ in members:
                m.stop()
            await asyncio.gather(*tasks)
        events = list(writer.read_all())
        everything = [e for _, sink in members for e, _ in sink.published]
        assert sorted(e.event_id for e in everything) == sorted(e.event_id for e in events)
        for (m, sink), held, read in zip(members, holdings, reads, strict=True):
            assert m.held == frozenset()  # released on stop
            assert held <= m.history
            mine = [e for e, _ in sink.published]
            # Exactly its partitions' events: a member whose two partitions hold none of
            # the 12 streams (partitions 0 and 5 here) rightly publishes nothing.
            assert sorted(e.event_id for e in mine) == sorted(
                e.event_id for e in events if partition_of(e.aggregate_id, 6) in held)
            assert {partition_of(e.stream_id, 6) for e in mine} <= held
            for event, held_then in sink.published:
                assert held_then == held  # no partition changed hands after the split
                assert partition_of(event.stream_id, 6) in held_then
            _assert_in_stream_order(mine)
            # It read one held partition at a time, and got only that partition's rows.
            assert sum(len(page) for _, page in read) == len(mine)
            for partitions, page in read:
                assert partitions is not None
                assert len(partitions) == 1
                assert partitions <= held
                assert {partition_of(e.stream_id, 6) for e in page} <= partitions
        # The statuses once stopped: nobody holds a partition, the checkpoints are at the head.
        after = await relay_status_async(writer)
        for s in after:
            assert s.lease_owner is None
            assert s.position == writer.head_position()
            assert s.members == ()
        assert sum(s.published for s in after) == len(events)

    asyncio.run(scenario())


def test_a_joining_member_takes_a_share_and_a_leaving_one_releases_at_once(
    tmp_path: Path,
) -> None:
    writer = SQLiteEventStore(tmp_path / "events.db")

    async def scenario() -> None:
        a, sink_a = _member(SQLiteEventStore(tmp_path / "events.db"), "out", "a", 4)
        b, sink_b = _member(SQLiteEventStore(tmp_path / "events.db"), "out", "b", 4)
        run_a = asyncio.ensure_future(a.run())
        await _until(lambda: a.held == frozenset(range(4)), 5, "a to hold everything")
        await asyncio.to_thread(_fill, writer, 8, 5)
        run_b = asyncio.ensure_future(b.run())
        joined = await _until(lambda: len(a.held) == 2 and len(b.held) == 2, 5, "the split")
        assert joined < 4 * LEASE  # a released its extras at a heartbeat, b claimed them
        assert a.held.isdisjoint(b.held)
        await asyncio.to_thread(_fill, writer, 8, 5, 5)
        head = writer.head_position()
        await _until(lambda: all(a.positions.get(p) == head for p in a.held)
                     and all(b.positions.get(p) == head for p in b.held), 10, "catching up")
        given_back = b.held
        b.stop()
        await run_b
        # Released on return, before any lease expired: no owner now.
        owners = {s.partition: s.lease_owner for s in await relay_status_async(writer)}
        assert all(owners[p] is None for p in given_back)
        await asyncio.to_thread(_fill, writer, 8, 2, 10)
        head = writer.head_position()
        taken = await _until(lambda: a.held == frozenset(range(4)) and all(
            a.positions.get(p) == head for p in range(4)), 5, "a to take b's partitions")
        assert taken < 2 * LEASE  # far less than a lease: nothing had to expire
        a.stop()
        await run_a
        events = list(writer.read_all())
        published = [e for sink in (sink_a, sink_b) for e, _ in sink.published]
        assert len(published) == len(events) == 96  # each once: no crash, no repeat
        assert {e.event_id for e in published} == {e.event_id for e in events}
        from_b = [e for e, _ in sink_b.published]
        assert from_b
        assert {partition_of(e.stream_id, 4) for e in from_b} <= given_back
        _assert_in_stream_order([e for e, _ in sink_a.published])
        for stream in {str(e.stream_id) for e in events}:  # one stream's handover kept order
            assert [e.version for e in sorted(
                (e for e in published if str(e.stream_id) == stream),
                key=lambda e: e.position)] == list(range(1, 13))

    asyncio.run(scenario())
    writer.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_async_stores_split_too(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async def open_async() -> Any:
        if kind == "sqlite":
            return AsyncSQLiteEventStore(tmp_path / "events.db")
        from eskit.aio.postgres import AsyncPostgresEventStore

        return await AsyncPostgresEventStore.open(dsn, schema=schema)

    dsn = request.getfixturevalue("postgres_dsn") if kind == "postgres" else ""
    schema = new_schema_name()

    async def scenario() -> None:
        writer = await open_async()
        stores = [await open_async() for _ in range(2)]
        members = [_member(s, "orders", name, 3, stream_prefixes=["order-"], batch_size=3)
                   for s, name in zip(stores, ("a", "b"), strict=True)]
        tasks = [asyncio.ensure_future(m.run()) for m, _ in members]
        try:
            await _until(lambda: [len(m.held) for m, _ in members] == [2, 1], 10, "the split")
            for version in range(4):
                for n in range(5):
                    await writer.append(f"order-{n}", [NewEvent("Placed", {"v": version})],
                                        expected_version=version)
            await writer.append("other-1", [NewEvent("Placed", {"v": 0})])
            head = await writer.head_position()
            await _until(lambda: all(m.positions.get(p) == head for m, _ in members
                                     for p in m.held), 10, "catching up")
        finally:
            for m, _ in members:
                m.stop()
            await asyncio.gather(*tasks)
        events = [e async for e in writer.read_all() if str(e.stream_id).startswith("order-")]
        published = [e for _, sink in members for e, _ in sink.published]
        assert sorted(e.event_id for e in published) == sorted(e.event_id for e in events)
        for _, sink in members:
            assert sink.published
            for event, held in sink.published:
                assert partition_of(event.stream_id, 3) in held
            _assert_in_stream_order([e for e, _ in sink.published])
        statuses = await relay_status_async(writer)
        assert [(s.name, s.position, s.lease_owner) for s in statuses] == [
            (f"orders/{p}", head, None) for p in range(3)]
        for store in (writer, *stores):
            await store.close()

    asyncio.run(scenario())


def test_bad_arguments_are_refused_before_any_io(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    sink = Recorder()
    bad: list[dict[str, Any]] = [
        {"partitions": 0}, {"partitions": -1}, {"partitions": "4"}, {"partitions": True},
        {"partitions": 4097}, {"partitions": 2.0}, {"name": ""}, {"name": "x" * 196},
        {"name": 7}, {"member": ""}, {"member": 5}, {"member": "a\nb"},
        {"lease_seconds": 0}, {"batch_size": 0}, {"event_types": "Deposited"},
    ]
    for change in bad:
        arguments: dict[str, Any] = {"name": "g", "partitions": 4, **change}
        with pytest.raises(InvalidInputError):
            RelayGroup(store, sink, **arguments)
    with pytest.raises(InvalidInputError):
        RelayGroup(store, object(), name="g", partitions=4)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        RelayGroup(object(), sink, name="g", partitions=4)
    with sqlite3.connect(tmp_path / "events.db") as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'eskit_relay%'").fetchall()
    conn.close()
    assert tables == []  # nothing was created: the checks came before any I/O
    store.close()


def test_a_member_with_another_partition_count_is_refused(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store, 3, 2)
    first, sink = _member(store, "g", "a", 4)
    first.run_sync(until_caught_up=True)
    assert len(sink.published) == 6
    other, _ = _member(store, "g", "b", 5)
    with pytest.raises(InvalidInputError, match="has 4 partitions, not 5"):
        other.run_sync(until_caught_up=True)
    store.close()




def test_a_group_named_like_a_plain_relay_starts_at_its_checkpoint(
    open_store: Callable[[], Any],
) -> None:
    store = open_store()
    _fill(store, 4, 3)
    first = Recorder()
    Relay(store, first, name="out").run_sync(until_caught_up=True)
    assert len(first.published) == 12
    before = store.head_position()
    _fill(store, 4, 2, 3)

    async def scenario() -> None:
        holder = checkpoints_for(store)  # the plain relay, running again somewhere
        assert await holder.acquire("out", "elsewhere", 30.0, "x") == before
        relay, sink = _member(store, "out", "a", 3)
        task = asyncio.ensure_future(relay.run(until_caught_up=True))
        await asyncio.sleep(3 * relay.heartbeat_interval)
        assert not relay.held  # it waits: both would publish the same events
        assert not task.done()
        await holder.release("out", "elsewhere")
        await holder.close()
        await asyncio.wait_for(task, 10)
        # Only what the plain relay had not published, each once.
        published = [e for e, _ in sink.published]
        assert sorted(e.event_id for e in published) == sorted(
            e.event_id for e in store.read_all(before))
        assert len(published) == 8

    asyncio.run(scenario())


def test_in_memory_a_group_named_like_a_plain_relay_starts_at_its_checkpoint() -> None:
    store = InMemoryEventStore()
    _fill(store, 3, 2)
    Relay(store, Recorder(), name="out").run_sync(until_caught_up=True)
    before = store.head_position()
    _fill(store, 3, 2, 2)
    relay, sink = _member(store, "out", "a", 2)
    relay.run_sync(until_caught_up=True)
    assert sorted(e.event_id for e, _ in sink.published) == sorted(
        e.event_id for e in store.read_all(before))
