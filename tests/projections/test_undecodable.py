"""One undecodable event: readers that ask pass it in order; projections apply their policy.

A bad row is written with raw SQL (SQLite, PostgreSQL) or into the log (memory): a
payload naming a codec tag that does not exist, which is valid JSON to both databases
but cannot be decoded. An event that a broken upcaster cannot upcast is the other kind.
"""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from eskit import EventRegistry, InMemoryEventStore, NewEvent, SQLiteEventStore
from eskit.errors import DecodingError, InvalidInputError
from eskit.projections import (
    InMemoryTarget,
    PostgresTarget,
    Projection,
    ProjectionFailed,
    ProjectionRunner,
    RetryPolicy,
    SQLiteTarget,
    retry_parked,
)
from eskit.stores.rows import UndecodableEvent
from tests.conftest import new_schema_name
from tests.projections.helpers import Counter, added, counts, wait_visible

BAD = '{"x": {"__eskit__": "no-such-tag", "v": 1}}'
FAST = RetryPolicy(max_attempts=2, backoff=0.001)


class World:
    """A store of one kind with three events on stream "s"; the second is unreadable."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.registry = EventRegistry()
        if kind == "memory":
            self.store = InMemoryEventStore(registry=self.registry)
        elif kind == "sqlite":
            self.path = tmp_path / "events.db"
            self.store = SQLiteEventStore(self.path)
        else:
            from eskit.stores.postgres import PostgresEventStore

            self.dsn = request.getfixturevalue("postgres_dsn")
            self.schema = new_schema_name()
            self.store = PostgresEventStore(self.dsn, schema=self.schema)
        self.store.registry = self.registry
        self.store.append("s", [added(1), NewEvent("Poison", {"fail": False, "amount": 10}),
                                added(2)])
        wait_visible(self.store, 3)
        self.events = self.store.read_stream("s")

    def corrupt(self, index: int = 1) -> None:
        """Overwrite the stored payload of the stream's ``index``-th event."""
        event_id = self.events[index].event_id
        if self.kind == "memory":
            log = self.store._log
            i = next(i for i, row in enumerate(log) if row.event_id == event_id)
            log[i] = log[i]._replace(data=BAD)
            self.store._streams["s"][index] = log[i]
        elif self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:  # our own file: lift append-only
                conn.execute("DROP TRIGGER eskit_events_no_update")
                conn.execute("UPDATE eskit_events SET data = ? WHERE event_id = ?",
                             (BAD, event_id.bytes))
        else:
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:  # our own schema
                conn.execute("SET session_replication_role = replica")  # no triggers
                conn.execute(f'UPDATE "{self.schema}".eskit_events SET data = %s '
                             "WHERE event_id = %s", (BAD, event_id))

    def break_upcasting(self) -> dict:
        """An upcaster of Poison that fails until ``switch["fixed"]`` is set."""
        switch = {"fixed": False}

        @self.registry.upcaster("Poison", from_version=1)
        def upcast(data: dict) -> dict:
            if not switch["fixed"]:
                raise KeyError("amount_cents")
            return data

        return switch

    def target(self):
        if self.kind == "memory":
            return InMemoryTarget()
        if self.kind == "sqlite":
            return SQLiteTarget(self.path)
        return PostgresTarget(self.dsn, schema=self.schema)

    def async_store(self):
        """An asyncio store over the same data (awaited inside the test's loop)."""
        from eskit.aio import AsyncInMemoryEventStore, AsyncSQLiteEventStore

        if self.kind == "memory":
            async def same() -> AsyncInMemoryEventStore:
                return AsyncInMemoryEventStore.from_sync(self.store)

            return same()
        if self.kind == "sqlite":
            return AsyncSQLiteEventStore.open(self.path, registry=self.registry)
        from eskit.aio import AsyncPostgresEventStore

        return AsyncPostgresEventStore.open(self.dsn, schema=self.schema, registry=self.registry)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def world(request, tmp_path):
    w = World(request.param, tmp_path, request)
    yield w
    w.store.close()


def _check_placeholder(world: World, item: object) -> None:
    bad = world.events[1]
    assert isinstance(item, UndecodableEvent)
    assert (item.event_id, item.stream_id, item.version, item.event_type, item.position) == (
        bad.event_id, "s", 2, "Poison", bad.position)
    assert isinstance(item.error, DecodingError)


@pytest.mark.parametrize("damage", ["corrupt", "break_upcasting"])
def test_read_all_raises_by_default_naming_stream_version_type_and_position(
    world, damage
) -> None:
    getattr(world, damage)()
    with pytest.raises(DecodingError) as failed:
        list(world.store.read_all())
    assert "'Poison'" in str(failed.value)
    assert "version 2 of stream 's'" in str(failed.value)
    if damage == "corrupt":
        assert failed.value.position == world.events[1].position
        assert f"position {world.events[1].position}" in str(failed.value)


@pytest.mark.parametrize("damage", ["corrupt", "break_upcasting"])
def test_read_all_on_request_yields_an_undecodable_event_in_its_place_and_goes_on(
    world, damage
) -> None:
    getattr(world, damage)()
    items = list(world.store.read_all(on_undecodable="yield"))
    assert [i.event_id for i in items] == [e.event_id for e in world.events]
    _check_placeholder(world, items[1])
    # Page by page too (limit 1 at a time), continuing from each position.
    after, seen = 0, []
    while page := list(world.store.read_all(after, limit=1, on_undecodable="yield")):
        seen += page
        after = page[-1].position
    assert [type(i).__name__ for i in seen] == ["Event", "UndecodableEvent", "Event"]


def test_read_all_with_a_callback_reports_the_undecodable_event_and_passes_it(world) -> None:
    world.corrupt()
    reported: list[UndecodableEvent] = []
    events = list(world.store.read_all(on_undecodable=reported.append))
    assert [e.version for e in events] == [1, 3]
    (item,) = reported
    _check_placeholder(world, item)


def test_read_all_refuses_a_bad_on_undecodable_before_reading(world) -> None:
    with pytest.raises(InvalidInputError):
        world.store.read_all(on_undecodable="skip")


def test_an_async_reader_passes_an_undecodable_event_the_same_way(world) -> None:
    world.corrupt()

    async def read() -> tuple[list, list]:
        store = await world.async_store()
        try:
            with pytest.raises(DecodingError):
                [e async for e in store.read_all()]
            items = [e async for e in store.read_all(on_undecodable="yield")]
            reported: list = []
            first = world.events[0].position
            events = [e async for e in store.read_all(first, on_undecodable=reported.append)]
            return items, [*events, *reported]
        finally:
            if world.kind != "memory":
                await store.close()

    items, rest = asyncio.run(read())
    assert [type(i).__name__ for i in items] == ["Event", "UndecodableEvent", "Event"]
    _check_placeholder(world, items[1])
    assert [e.version for e in rest] == [3, 2]


def test_a_subscription_reports_an_undecodable_event_and_keeps_its_place(world) -> None:
    world.corrupt()
    reported: list = []
    subscription = world.store.subscribe(on_undecodable=reported.append, poll_interval=0.01)
    got = []
    for event in subscription:
        got.append(event.version)
        if len(got) == 2:
            subscription.stop()
    assert got == [1, 3]
    _check_placeholder(world, reported[0])
    assert subscription.position == world.events[2].position


def test_a_parking_projection_parks_an_undecodable_event_and_goes_on(world) -> None:
    world.corrupt()
    world.store.append("t", [added(5)])
    wait_visible(world.store, 4)
    target = world.target()
    try:
        runner = ProjectionRunner(world.store, Tally(), target, retry=FAST, on_failure="park")
        runner.run_until_caught_up()
        assert runner.projection.seen == [("s", 1), ("s", 3), ("t", 1)]
        (letter,) = target.dead_letters(Tally.name)
        assert (letter.stream_id, letter.event_type, letter.attempts) == ("s", "Poison", 2)
        assert letter.error.startswith("DecodingError: ")
        assert "version 2 of stream 's'" in letter.error
        (state,) = target.states(Tally.name)
        assert state.position == world.store.head_position()
        # Still undecodable: the retry raises and the event stays parked.
        with pytest.raises(DecodingError):
            retry_parked(world.store, Tally(), target)
        assert len(target.dead_letters(Tally.name)) == 1
    finally:
        target.close()


def test_an_event_parked_for_a_failing_upcaster_is_retried_once_the_upcaster_is_fixed(
    world,
) -> None:
    switch = world.break_upcasting()
    target = world.target()
    try:
        tally = Tally()
        ProjectionRunner(world.store, tally, target, retry=FAST,
                         on_failure="park").run_until_caught_up()
        assert tally.seen == [("s", 1), ("s", 3)]
        (letter,) = target.dead_letters(Tally.name)
        assert "KeyError" in letter.error
        switch["fixed"] = True                    # the corrected upcaster is deployed
        assert retry_parked(world.store, tally, target) == [letter.event_id]
        assert tally.seen == [("s", 1), ("s", 3), ("s", 2)]
    finally:
        target.close()


def test_a_stopping_projection_stops_at_an_undecodable_event_with_the_decoding_error(
    world,
) -> None:
    world.corrupt()
    target = world.target()
    try:
        tally = Tally()
        with pytest.raises(ProjectionFailed) as failed:
            ProjectionRunner(world.store, tally, target, retry=FAST).run_until_caught_up()
        assert isinstance(failed.value.__cause__, DecodingError)
        assert isinstance(failed.value.event, UndecodableEvent)
        assert tally.seen == [("s", 1)]
        (state,) = target.states(Tally.name)
        assert state.position == world.events[0].position  # just before the bad event
        assert "DecodingError" in state.last_error
    finally:
        target.close()


def test_an_undecodable_event_of_a_type_the_projection_ignores_does_not_stop_it(world) -> None:
    world.corrupt()
    target = world.target()
    try:
        only_added = OnlyAdded()
        ProjectionRunner(world.store, only_added, target).run_until_caught_up()
        assert only_added.seen == [("s", 1), ("s", 3)]
    finally:
        target.close()


class Tally(Projection):  # a Projection: in-memory read model, any target
    name = "tally"
    transactional = False  # handlers write no SQL: the same on every target

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []

    def handle_Added(self, event, tx) -> None:
        self.seen.append((event.stream_id, event.version))

    def handle_Poison(self, event, tx) -> None:
        self.seen.append((event.stream_id, event.version))


class OnlyAdded(Projection):
    name = "only_added"
    transactional = False

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []

    def handle_Added(self, event, tx) -> None:
        self.seen.append((event.stream_id, event.version))


def test_sql_projection_on_sqlite_parks_an_undecodable_event_in_its_batch(tmp_path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    store.append("s", [added(1), NewEvent("Poison", {"fail": False, "amount": 10}), added(2)])
    w = World.__new__(World)
    w.kind, w.path, w.store, w.events = "sqlite", path, store, store.read_stream("s")
    w.corrupt()
    target = SQLiteTarget(path)
    try:
        ProjectionRunner(store, Counter(), target, retry=FAST,
                         on_failure="park").run_until_caught_up()
        with target.transaction() as conn:
            from eskit.projections import Tx

            assert counts(Tx("sqlite", conn)) == {"s": (2, 3)}
        assert len(target.dead_letters("counter")) == 1
    finally:
        target.close()
        store.close()


def test_an_async_subscription_reports_an_undecodable_event_and_keeps_its_place(world) -> None:
    world.corrupt()
    reported: list = []

    async def follow() -> tuple[list, int]:
        store = await world.async_store()
        try:
            subscription = store.subscribe(on_undecodable=reported.append, poll_interval=0.01)
            got = []
            async for event in subscription:
                got.append(event.version)
                if len(got) == 2:
                    subscription.stop()
            return got, subscription.position
        finally:
            if world.kind != "memory":
                await store.close()

    got, position = asyncio.run(follow())
    assert got == [1, 3]
    _check_placeholder(world, reported[0])
    assert position == world.events[2].position


def test_an_async_parking_projection_parks_an_undecodable_event_and_goes_on(world) -> None:
    from eskit.aio import AsyncProjectionRunner

    world.corrupt()
    world.store.append("t", [added(5)])
    wait_visible(world.store, 4)
    target = world.target()

    async def run() -> list:
        store = await world.async_store()
        try:
            runner = AsyncProjectionRunner(store, Tally(), target, retry=FAST,
                                           on_failure="park")
            await runner.run_until_caught_up()
            return runner.projection.seen
        finally:
            if world.kind != "memory":
                await store.close()

    try:
        assert asyncio.run(run()) == [("s", 1), ("s", 3), ("t", 1)]
        (letter,) = target.dead_letters(Tally.name)
        assert (letter.stream_id, letter.event_type, letter.attempts) == ("s", "Poison", 2)
        assert letter.error.startswith("DecodingError: ")
        (state,) = target.states(Tally.name)
        assert state.position == world.store.head_position()
    finally:
        target.close()
