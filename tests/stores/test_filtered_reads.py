"""Filtered reads beyond the contract: upcasting, query plans, migrations, PostgreSQL order."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eskit import EventRegistry, EventStore, InMemoryEventStore, NewEvent, SQLiteEventStore
from eskit.stores.arguments import prepare_batch
from eskit.stores.filtered import read_filter
from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from eskit.stores.postgres_schema import append_params
from eskit.stores.sqlite import _SELECT, MIGRATIONS
from eskit.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from eskit.stores.sqlite_deletion import VISIBLE
from eskit.stores.sqlite_filtered import MIGRATION as SQLITE_FILTERED_MIGRATION
from eskit.stores.sqlite_filtered import filtered_page_query
from tests.conftest import new_schema_name


def _registry() -> EventRegistry:
    registry = EventRegistry()
    registry.alias("AccountOpenedV0", "AccountOpened")
    return registry


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened: list[EventStore] = []

    def make(registry: EventRegistry | None = None) -> EventStore:
        store: EventStore
        if request.param == "memory":
            store = InMemoryEventStore(registry=registry)
        elif request.param == "sqlite":
            store = SQLiteEventStore(tmp_path / f"{len(opened)}.db", registry=registry)
        else:
            from eskit import PostgresEventStore

            dsn = request.getfixturevalue("postgres_dsn")
            store = PostgresEventStore(dsn, schema=new_schema_name(), registry=registry)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_a_type_filter_finds_events_stored_under_an_old_aliased_name(make_store: Any) -> None:
    store = make_store(_registry())
    store.append("account-1", [NewEvent("AccountOpenedV0", {"n": 1})])
    store.append("account-2", [NewEvent("AccountOpened", {"n": 2}), NewEvent("Closed")])
    got = list(store.read_all(event_types=["AccountOpened"]))
    assert [(e.event_type, e.event_data["n"]) for e in got] == [
        ("AccountOpened", 1), ("AccountOpened", 2),
    ]
    # The old name is what is stored, not what is read: nothing reads as it.
    assert list(store.read_all(event_types=["AccountOpenedV0"])) == []


def test_a_type_filter_applies_to_the_parts_of_a_split_event(make_store: Any) -> None:
    registry = EventRegistry()
    registry.split("Combined")(lambda data: [("Part1", {"n": data["n"]}),
                                             ("Part2", {"n": data["n"] + 100})])
    store = make_store(registry)
    store.append("s-1", [NewEvent("Combined", {"n": 1}), NewEvent("Other", {"n": 5})])
    got = list(store.read_all(event_types=["Part2"]))
    assert [(e.event_type, e.event_data["n"]) for e in got] == [("Part2", 101)]
    assert [e.event_type for e in store.read_all(event_types=["Other", "Part1"])] == [
        "Part1", "Other",
    ]


class _OnlyPages(InMemoryEventStore):
    """A store implementing only the plain page primitive: the base class's fallback."""

    _read_filtered_page = EventStore._read_filtered_page


def test_a_store_without_a_filtered_query_of_its_own_filters_its_plain_pages() -> None:
    store = _OnlyPages()
    for n in range(2500):
        store.append(f"{'ab'[n % 2]}-{n % 7}", [NewEvent(f"T{n % 3}", {"n": n})])
    got = [e.event_data["n"] for e in store.read_all(event_types=["T1"], stream_prefixes=["a-"])]
    assert got == [n for n in range(2500) if n % 3 == 1 and n % 2 == 0]
    assert [e.event_data["n"] for e in store.read_all(2400, event_types=["T0"])] == [
        n for n in range(2400, 2500) if n % 3 == 0
    ]


def test_read_filter_drops_prefixes_that_a_shorter_one_covers() -> None:
    wanted = read_filter(None, ["order-1", "order-", "acc", "account-"])
    assert wanted is not None
    assert wanted.prefixes == ("acc", "order-")
    assert read_filter(None, None) is None
    assert read_filter(iter(["A", "A"]), None) == read_filter(["A"], None)


# -- SQLite: the plans and the migration ------------------------------------------------


def _plan(conn: sqlite3.Connection, event_types: Any, prefixes: Any) -> str:
    wanted = read_filter(event_types, prefixes)
    assert wanted is not None
    sql, params = filtered_page_query(_SELECT, VISIBLE, wanted, 0, 10**6, 100)
    return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_sqlite_reads_a_type_on_its_index_and_a_category_on_the_stream_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plans.db"
    with SQLiteEventStore(path) as store:
        for n in range(20):
            store.append(f"s-{n}", [NewEvent("A"), NewEvent("B")])
    with closing(sqlite3.connect(path)) as conn:
        by_type = _plan(conn, ["A"], None)
        assert "USING INDEX eskit_events_type (event_type=? AND position>? AND position<?)" \
            in by_type
        assert "SCAN eskit_events" not in by_type
        assert _plan(conn, ["A", "B"], None).count("USING INDEX eskit_events_type") == 2
        by_category = _plan(conn, None, ["order-"])
        assert "(stream_id>? AND stream_id<?)" in by_category  # the (stream_id, version) key
        assert "INTEGER PRIMARY KEY" not in by_category  # not a walk of the whole window
        both = _plan(conn, ["A"], ["order-"])
        assert "USING INDEX eskit_events_type" in both


def test_a_sqlite_store_of_the_previous_schema_gains_the_type_index_on_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with SQLiteEventStore(path) as store:
        store.append("s-1", [NewEvent("A"), NewEvent("B")])
    before = MIGRATIONS.index(SQLITE_FILTERED_MIGRATION)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP INDEX eskit_events_type")
        conn.execute("UPDATE eskit_meta SET value = ? WHERE key = 'schema_version'",
                     (str(before),))
    with SQLiteEventStore(path, create=False) as old:  # reads without the index
        assert [e.event_type for e in old.read_all(event_types=["B"])] == ["B"]
    with SQLiteEventStore(path) as store:
        assert store.schema_version() == SQLITE_SCHEMA_VERSION
    with closing(sqlite3.connect(path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "eskit_events_type" in names


# -- PostgreSQL: the plans, the migration, and the order of commits ----------------------


@pytest.fixture
def pg_store(postgres_dsn: str) -> Iterator[Any]:
    from eskit import PostgresEventStore

    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    yield store
    store.close()


def _pg_plan(store: Any, event_types: Any, prefixes: Any) -> str:
    wanted = read_filter(event_types, prefixes)
    query, params = store.sql.filtered_page(wanted, 0, store.head_position(), 100)
    with store._connection() as conn:
        rows = conn.execute(b"EXPLAIN " + query.as_bytes(conn), params).fetchall()
    return "\n".join(r[0] for r in rows)


def test_postgres_reads_a_type_and_a_category_on_their_indexes(pg_store: Any) -> None:
    for n in range(40):
        pg_store.append(f"load-{n}", [NewEvent("Common", {"n": i}) for i in range(50)])
    pg_store.append("order-1", [NewEvent("Rare")])
    with pg_store._connection() as conn:
        conn.execute(f'ANALYZE "{pg_store.schema}".eskit_events')
    by_type = _pg_plan(pg_store, ["Rare"], None)
    assert "eskit_events_type" in by_type
    assert "Seq Scan" not in by_type
    assert "eskit_events_category" in _pg_plan(pg_store, None, ["order-"])
    two = _pg_plan(pg_store, ["Rare", "Other"], None)
    assert "Merge Append" in two
    assert two.count("eskit_events_type") == 2


def test_a_postgres_schema_of_the_previous_version_gains_the_indexes(
    postgres_dsn: str,
) -> None:
    from eskit import PostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("s-1", [NewEvent("A")])
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP INDEX "{schema}".eskit_events_type, "{schema}".eskit_events_category')
        conn.execute(f"UPDATE \"{schema}\".eskit_meta SET value = %s "
                     "WHERE key = 'schema_version'", (str(POSTGRES_SCHEMA_VERSION - 1),))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        assert [e.event_type for e in old.read_all(event_types=["A"])] == ["A"]
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == POSTGRES_SCHEMA_VERSION
    with psycopg.connect(postgres_dsn) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
    assert {"eskit_events_type", "eskit_events_category"} <= names


def test_a_postgres_filtered_read_never_passes_an_event_that_commits_late(
    pg_store: Any, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as slow:
        batch = prepare_batch("order-slow", [NewEvent("Rare", {"n": 1})],
                              registry=pg_store.registry, max_event_bytes=2**20)
        slow.execute(pg_store.sql.append, append_params("order-slow", 0, batch))
        pg_store.append("order-fast", [NewEvent("Rare", {"n": 2})], 0)  # commits first
        assert list(pg_store.read_all(event_types=["Rare"])) == []
        assert list(pg_store.read_all(stream_prefixes=["order-"])) == []
        wanted = read_filter(["Rare"], None)
        items, upto, more, _ = pg_store._filtered_page(0, 10, wanted, False)
        assert (items, more) == ([], False)
        assert upto == 0  # the checkpoint stays before the open append
        slow.commit()
    got = list(pg_store.read_all(event_types=["Rare"]))
    assert [e.event_data["n"] for e in got] == [1, 2]
    assert [e.event_data["n"] for e in pg_store.read_all(stream_prefixes=["order-"])] == [1, 2]


def test_an_undecodable_matching_event_raises_or_comes_as_a_placeholder_in_its_place(
    make_store: Any,
) -> None:
    from eskit import DecodingError
    from eskit.stores.rows import UndecodableEvent

    registry = EventRegistry()

    @registry.upcaster("Broken", from_version=1)
    def _fails(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("never")

    store = make_store(registry)
    store.append("s-1", [NewEvent("Fine", {"n": 1}), NewEvent("Broken", {"n": 2}),
                         NewEvent("Other", {"n": 3}), NewEvent("Fine", {"n": 4})])
    with pytest.raises(DecodingError):
        list(store.read_all(event_types=["Fine", "Broken"]))
    got = list(store.read_all(event_types=["Fine", "Broken"], on_undecodable="yield"))
    assert [type(e).__name__ for e in got] == ["Event", "UndecodableEvent", "Event"]
    assert isinstance(got[1], UndecodableEvent)
    reported: list[Any] = []
    passed = list(store.read_all(event_types=["Fine", "Broken"], on_undecodable=reported.append))
    assert [e.event_data["n"] for e in passed] == [1, 4]
    assert [e.event_type for e in reported] == ["Broken"]
    # Not asked for, an undecodable event of another type is never read.
    assert [e.event_data["n"] for e in store.read_all(event_types=["Fine"])] == [1, 4]
    # A subscription in "raise" mode delivers what precedes it, then raises there.
    subscription = store.subscribe(event_types=["Fine", "Broken"], poll_interval=0.01)
    seen: list[Any] = []

    def follow() -> None:
        for event in subscription:
            seen.append(event)

    with pytest.raises(DecodingError):
        follow()
    assert [e.event_data["n"] for e in seen] == [1]
    assert subscription.position == seen[0].position


def test_an_async_postgres_filtered_read_never_passes_an_event_that_commits_late(
    pg_store: Any, postgres_dsn: str
) -> None:
    import asyncio

    from eskit.aio import AsyncPostgresEventStore

    async def read(store: AsyncPostgresEventStore) -> list[int]:
        return [e.event_data["n"] async for e in store.read_all(event_types=["Rare"])]

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=pg_store.schema)
        try:
            with psycopg.connect(postgres_dsn) as slow:
                batch = prepare_batch("order-slow", [NewEvent("Rare", {"n": 1})],
                                      registry=pg_store.registry, max_event_bytes=2**20)
                slow.execute(pg_store.sql.append, append_params("order-slow", 0, batch))
                await store.append("order-fast", [NewEvent("Rare", {"n": 2})], 0)
                assert await read(store) == []
                wanted = read_filter(["Rare"], None)
                assert (await store._filtered_page(0, 10, wanted, False))[1] == 0
                slow.commit()
            assert await read(store) == [1, 2]
        finally:
            await store.close()

    asyncio.run(main())
