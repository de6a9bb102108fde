"""Partitioning a PostgreSQL store that already holds events (eskit.maintenance.partitioning).

The contract suite runs on a partitioned store too (tests/stores/test_contract.py,
``TestPostgresPartitioned*``); here: the migration keeps every stored byte and
position, appends racing it are neither lost nor doubled, the keys stay unique
across partitions, empty partitions are dropped, and the append-only protection
holds on every partition.
"""

import threading
import uuid

import psycopg
import pytest

from eskit import NewEvent, PostgresEventStore, SQLiteEventStore
from eskit.archive import LocalDirectoryStorage, archive_streams, restore_streams
from eskit.errors import ConcurrencyError, DuplicateEventError, InvalidInputError, StoreError
from eskit.maintenance.partitioning import (
    drop_empty_partitions,
    ensure_partitions,
    list_partitions,
    partition_events,
    partition_size,
)
from eskit.maintenance.stats import stats
from eskit.stores.verify import verify_store
from tests.conftest import new_schema_name

RAW = ("SELECT tx_id::text, seq, event_id, stream_id, version, event_type, schema_version, "
       "recorded_at, data::text, data_zstd, metadata::text, hash, stream_hash, writer_xid::text "
       'FROM "{s}".eskit_events ORDER BY seq')
TAGS = 'SELECT tag, tx_id::text, seq, ord, event_type FROM "{s}".eskit_event_tags ORDER BY 2, 3, 4'


def _raw(dsn: str, schema: str) -> tuple[list, list]:
    with psycopg.connect(dsn) as conn:
        return (conn.execute(RAW.format(s=schema)).fetchall(),
                conn.execute(TAGS.format(s=schema)).fetchall())


def _fill(store: PostgresEventStore, dsn: str) -> None:
    for n in range(30):
        store.append(f"order-{n % 6}", [NewEvent("Placed", {"n": n, "pad": "x" * (n * 40)},
                                                 tags=[f"order:{n % 6}", f"n:{n % 2}"])])
    store.append("big-1", [NewEvent("Blob", {"text": "y" * 20_000})])  # stored compressed
    store.truncate_stream("order-0", 4, force=True)
    store.delete_stream("order-1")                   # soft: hidden, restorable
    store.delete_stream("order-2", hard=True)        # a tombstone
    with psycopg.connect(dsn) as conn, store.in_transaction(conn) as tx:
        conn.execute("SELECT 1")
        tx.append("late-1", [NewEvent("Late", {"n": 1})])  # in the caller's transaction


@pytest.fixture
def filled(postgres_dsn: str, tmp_path):
    schema = new_schema_name()
    store = PostgresEventStore(postgres_dsn, schema=schema)
    _fill(store, postgres_dsn)
    archive_streams(store, LocalDirectoryStorage(tmp_path / "archive"), ["order-3"])
    yield store, schema
    store.close()


def test_partitioning_keeps_every_stored_byte_position_and_tag(filled, postgres_dsn) -> None:
    store, schema = filled
    before = _raw(postgres_dsn, schema)
    events = [(e.event_id, e.position, e.version, e.tags) for e in store.read_all()]
    steps: list[str] = []
    assert partition_events(store, size=4, ahead=1, progress=steps.append) == len(before[0])
    assert steps[0] == "creating partitions"
    assert steps[-1] == "indexing"
    assert _raw(postgres_dsn, schema) == before
    assert [(e.event_id, e.position, e.version, e.tags) for e in store.read_all()] == events
    assert partition_size(store) == 4
    parts = list_partitions(store)
    assert parts[-1].name == "eskit_events_default"
    filled_parts = [p for p in parts if p.first_seq is not None]
    assert [p.first_seq for p in filled_parts] == sorted(p.first_seq for p in filled_parts)
    assert len(filled_parts) >= len(before[0]) // 4
    report = verify_store(store)
    assert report.ok, report.problems
    assert stats(store).storage_bytes > sum(p.bytes for p in parts) // 2
    with psycopg.connect(postgres_dsn) as conn:
        (kind,) = conn.execute(
            "SELECT relkind::text FROM pg_class WHERE oid = %s::regclass",
            (f'"{schema}".eskit_events',)).fetchone()
    assert kind == "p"


def test_after_partitioning_appends_go_on_and_the_keys_stay_unique(filled, postgres_dsn,
                                                                   tmp_path) -> None:
    store, _schema = filled
    last = store.head_position()
    partition_events(store, size=4, ahead=0)
    result = store.append("order-4", [NewEvent("Placed", {"n": 99})], 5)
    assert result.version == 6
    assert result.position > last
    existing = store.read_stream("order-5")[0]
    with pytest.raises(DuplicateEventError):  # an id used in another stream, any partition
        store.append("order-9", [NewEvent("Placed", {"n": 1}, event_id=existing.event_id)])
    again = store.append("order-4", [NewEvent("Placed", {"n": 99}, event_id=result.events[0]
                                              .event_id)], 5)
    assert again.version == 6  # an idempotent retry, found through the keys
    assert store.read_stream("order-4")[-1].event_data == {"n": 99}
    assert len(store.read_stream("order-4")) == 6
    restore_streams(store, LocalDirectoryStorage(tmp_path / "archive"))
    assert [e.version for e in store.read_stream("order-3")] == [1, 2, 3, 4, 5]
    report = verify_store(store)
    assert report.ok, report.problems


def test_racing_writers_of_one_stream_never_store_a_version_twice(postgres_dsn) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        partition_events(store, size=3, ahead=1)  # the race crosses partitions and the default
        wins: list[int] = []
        others: list[BaseException] = []
        start = threading.Barrier(6)

        def writer() -> None:
            start.wait()
            for _ in range(15):
                head = len(store.read_stream("hot"))
                try:
                    wins.append(store.append("hot", [NewEvent("Hit")], head).version)
                except ConcurrencyError:
                    pass  # lost the race: the only failure allowed
                except Exception as exc:  # anything else fails the test below
                    others.append(exc)

        threads = [threading.Thread(target=writer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        versions = [e.version for e in store.read_stream("hot")]
        assert versions == list(range(1, len(versions) + 1))
        assert sorted(wins) == versions
        assert others == []


def test_appends_racing_the_migration_wait_for_it_and_are_kept(postgres_dsn) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        for n in range(300):
            store.append(f"s-{n % 10}", [NewEvent("E", {"n": n})])
        stop = threading.Event()
        appended: list[uuid.UUID] = []
        errors: list[BaseException] = []

        def append_all_along() -> None:
            n = 0
            while not stop.is_set() or n < 20:
                try:
                    event = NewEvent("Racing", {"n": n})
                    store.append(f"race-{n % 3}", [event])
                    appended.append(event.event_id)
                except BaseException as exc:
                    errors.append(exc)
                n += 1

        racer = threading.Thread(target=append_all_along)
        racer.start()
        while len(appended) < 5:  # appending already, and all along the migration
            threading.Event().wait(0.005)
        partition_events(store, size=50, ahead=1)
        stop.set()
        racer.join(60)
        assert errors == []
        stored = [e.event_id for e in store.read_all(event_types=["Racing"])]
        assert stored == appended  # each once, in order
        assert len(list(store.read_all())) == 300 + len(appended)


def test_empty_partitions_are_dropped_and_their_space_returned(postgres_dsn) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        for n in range(12):
            store.append("old-1", [NewEvent("E", {"n": n})])
        for n in range(12):
            store.append("new-1", [NewEvent("E", {"n": n})])
        partition_events(store, size=6, ahead=1)
        names = [p.name for p in list_partitions(store)]
        assert drop_empty_partitions(store) == []  # nothing is empty yet
        store.delete_stream("old-1", hard=True)    # seq 1..12: partitions 0, 1 and 2 in part
        dropped = drop_empty_partitions(store)
        assert dropped == ["eskit_events_p0", "eskit_events_p1"]
        assert [p.name for p in list_partitions(store)] == [n for n in names if n not in dropped]
        assert [e.event_data["n"] for e in store.read_stream("new-1")] == list(range(12))
        with psycopg.connect(postgres_dsn) as conn:
            (keys,) = conn.execute(f'SELECT count(*) FROM "{schema}".eskit_event_keys').fetchone()
        assert keys == 12  # the deleted events' keys went with them
        assert verify_store(store).ok


def test_ensure_makes_partitions_ahead_and_leaves_rows_of_the_default_alone(
    postgres_dsn,
) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        partition_events(store, size=4, ahead=0)  # p0 only: seq 4.. go to the default
        for n in range(10):
            store.append("s", [NewEvent("E", {"n": n})])
        made = ensure_partitions(store, ahead=2)
        # seq 1..10: p1 and p2 would cover rows in the default, so they are not made.
        assert made == ["eskit_events_p3", "eskit_events_p4"]
        assert ensure_partitions(store, ahead=2) == []
        store.append("s", [NewEvent("E", {"n": 10})], 10)
        store.append("s", [NewEvent("E", {"n": 11})], 11)  # seq 12: into p3
        assert [e.version for e in store.read_stream("s")] == list(range(1, 13))
        with psycopg.connect(postgres_dsn) as conn:
            (in_p3,) = conn.execute(
                f'SELECT count(*) FROM "{schema}".eskit_events_p3').fetchone()
            (in_default,) = conn.execute(
                f'SELECT count(*) FROM "{schema}".eskit_events_default').fetchone()
        assert (in_p3, in_default) == (1, 8)  # seq 4..11 stay in the default

        results: list[object] = []

        def ensure() -> None:
            results.append(ensure_partitions(store, ahead=4))

        threads = [threading.Thread(target=ensure) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        made_by_all = [name for r in results if isinstance(r, list) for name in r]
        assert sorted(made_by_all) == ["eskit_events_p5", "eskit_events_p6", "eskit_events_p7"]


@pytest.mark.parametrize("target", ["eskit_events", "eskit_events_p0", "eskit_events_default"])
def test_every_partition_refuses_update_and_delete(postgres_dsn, target) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        partition_events(store, size=100, ahead=0)
        store.append("s", [NewEvent("E")])
        for statement in (f'DELETE FROM "{schema}".{target}',
                          f'UPDATE "{schema}".{target} SET event_type = \'X\''):
            with psycopg.connect(postgres_dsn) as conn, pytest.raises(psycopg.Error,
                                                                      match="append-only"):
                conn.execute(statement)
        assert len(store.read_stream("s")) == 1


def test_bad_calls_are_refused_before_any_io(postgres_dsn, tmp_path) -> None:
    with SQLiteEventStore(tmp_path / "x.db") as sqlite_store, pytest.raises(InvalidInputError):
        partition_events(sqlite_store)
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    try:
        for bad in (0, -1, 2**41, 1.5, True, "10"):
            with pytest.raises(InvalidInputError):
                partition_events(store, size=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            partition_events(store, size=10, ahead=-1)
        with pytest.raises(InvalidInputError):
            ensure_partitions(store)  # not partitioned
        assert list_partitions(store) == []
        assert partition_size(store) is None
        partition_events(store, size=10)
        with pytest.raises(StoreError):
            partition_events(store, size=10)  # once only
    finally:
        store.close()


def test_two_operators_enabling_at_once_partition_once(postgres_dsn) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        for n in range(50):
            store.append(f"s-{n % 5}", [NewEvent("E", {"n": n})])
        outcomes: list[object] = []

        def enable() -> None:
            try:
                outcomes.append(partition_events(store, size=10))
            except StoreError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=enable) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(map(type, outcomes), key=str) == sorted([int, StoreError], key=str)
        assert 50 in outcomes
        assert len(list(store.read_all())) == 50


def test_a_stream_restored_into_a_dropped_range_lands_in_the_default(postgres_dsn,
                                                                     tmp_path) -> None:
    schema = new_schema_name()
    archive = LocalDirectoryStorage(tmp_path / "archive")
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        for n in range(8):
            store.append("cold-1", [NewEvent("E", {"n": n})])
        store.append("hot-1", [NewEvent("E", {"n": 8})])
        partition_events(store, size=4, ahead=1)
        positions = [e.position for e in store.read_stream("cold-1")]
        archive_streams(store, archive, ["cold-1"])
        assert drop_empty_partitions(store) == ["eskit_events_p0", "eskit_events_p1"]
        restore_streams(store, archive)
        back = store.read_stream("cold-1")
        assert [e.position for e in back] == positions
        assert [e.event_data["n"] for e in back] == list(range(8))
        with psycopg.connect(postgres_dsn) as conn:
            (in_default,) = conn.execute(
                f'SELECT count(*) FROM "{schema}".eskit_events_default').fetchone()
        assert in_default == 7  # seq 1..7; seq 8 is in p2, which is still there
        assert verify_store(store).ok


def test_the_async_store_works_on_a_partitioned_schema(postgres_dsn) -> None:
    # The async store shares the sync store's statements; the whole sync contract runs
    # partitioned (tests/stores/test_contract.py). Here: its own paths, end to end.
    import asyncio

    from eskit.aio import AsyncPostgresEventStore

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        partition_events(store, size=3, ahead=1)

    async def main() -> None:
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=schema)
        try:
            for n in range(10):  # past the partitions made, into the default
                await store.append("a-1", [NewEvent("E", {"n": n}, tags=["t:1"])], n)
            with pytest.raises(ConcurrencyError):
                await store.append("a-1", [NewEvent("E")], 3)
            first = (await store.read_stream("a-1"))[0]
            with pytest.raises(DuplicateEventError):
                await store.append("b-1", [NewEvent("E", event_id=first.event_id)])
            assert [e.event_data["n"] for e in await store.read_stream("a-1")] == list(range(10))
            assert len([e async for e in store.read_all()]) == 10
            await store.truncate_stream("a-1", 5, force=True)
            assert [e.version for e in await store.read_stream("a-1")] == [5, 6, 7, 8, 9, 10]
        finally:
            await store.close()

    asyncio.run(main())
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert drop_empty_partitions(store) == ["eskit_events_p0"]  # seq 1, 2 truncated away
        assert verify_store(store).ok
