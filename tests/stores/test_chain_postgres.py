"""Hash chains on PostgreSQL: the same tampering as on SQLite, against a real server.

The attacker here owns the schema: it disables the append-only triggers, then
changes rows with plain SQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest

from eskit import NewEvent, StoreError, StreamAppend
from eskit.aio.postgres import AsyncPostgresEventStore
from eskit.dcb import AppendCondition, Query
from eskit.integrity import event_bytes, link_hash
from eskit.stores.compact import compact
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_schema import SCHEMA_VERSION, Statements
from eskit.stores.rows import timestamp_to_micros
from eskit.stores.verify import VerifyReport, verify_store
from eskit.testing.compression_contract import large_payload
from tests.conftest import new_schema_name


def _events(count: int, start: int = 1) -> list[NewEvent]:
    return [NewEvent("Numbered", {"n": n}, {"by": f"user-{n}"})
            for n in range(start, start + count)]


@pytest.fixture
def schema(postgres_dsn: str) -> str:
    name = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=name) as store:
        store.append("order-1", _events(3))
        store.append("order-2", _events(1))
        store.append("order-1", _events(2, 4))
        store.append_many([StreamAppend("order-3", _events(2)),
                           StreamAppend("order-2", _events(1, 2))])
        store.append("order-1", [NewEvent("Tagged", {"n": 6}, tags=("customer:c1",))])
    return name


def _verify(dsn: str, schema: str, **kwargs: object) -> VerifyReport:
    with PostgresEventStore(dsn, schema=schema) as store:
        return verify_store(store, **kwargs)  # type: ignore[arg-type]


def _problems(report: VerifyReport) -> list[tuple[str, str, int]]:
    return [(p.kind, p.stream, p.version) for p in report.problems]


def _tamper(dsn: str, schema: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{schema}".eskit_events DISABLE TRIGGER USER')
        for statement in statements:
            conn.execute(statement.replace("EVENTS", f'"{schema}".eskit_events'))


def test_a_store_without_tampering_verifies_clean(postgres_dsn: str, schema: str) -> None:
    report = _verify(postgres_dsn, schema)
    assert report.ok, report.problems
    assert (report.events, report.streams, report.unchained) == (10, 3, 0)
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(
            f'SELECT version, event_id, event_type, schema_version, recorded_at, '
            f'data::text, metadata::text, hash FROM "{schema}".eskit_events '
            "WHERE stream_id = 'order-1' ORDER BY version").fetchall()
    previous = None
    for version, eid, etype, sv, at, data, meta, stored in rows:
        previous = link_hash(previous, event_bytes(
            "order-1", version, eid.bytes, etype, sv, timestamp_to_micros(at), data.encode(),
            meta.encode()))
        assert stored == previous  # PostgreSQL's sha256 links exactly as eskit.integrity


@pytest.mark.parametrize("batch_size", [1, 3])
def test_each_kind_of_tampering_is_reported(
    postgres_dsn: str, schema: str, batch_size: int
) -> None:
    _tamper(postgres_dsn, schema,
            # altered
            "UPDATE EVENTS SET data = '{\"n\":99}' WHERE stream_id = 'order-1' AND version = 2",
            # removed
            "DELETE FROM EVENTS WHERE stream_id = 'order-1' AND version = 5",
            # reordered
            "UPDATE EVENTS SET version = 100 WHERE stream_id = 'order-3' AND version = 1",
            "UPDATE EVENTS SET version = 1 WHERE stream_id = 'order-3' AND version = 2",
            "UPDATE EVENTS SET version = 2 WHERE stream_id = 'order-3' AND version = 100",
            # inserted (no hash after chained events)
            "INSERT INTO EVENTS (event_id, stream_id, version, event_type, schema_version, "
            "recorded_at, data, metadata) VALUES (gen_random_uuid(), 'order-2', 3, "
            "'Refunded', 1, now(), '{}', '{}')")
    report = _verify(postgres_dsn, schema, batch_size=batch_size)
    assert not report.ok
    assert sorted(_problems(report)) == [
        ("altered", "order-1", 2), ("inserted", "order-2", 3), ("removed", "order-1", 6),
        ("reordered", "order-3", 1)]


def test_an_insertion_with_renumbering_is_reported(postgres_dsn: str, schema: str) -> None:
    _tamper(postgres_dsn, schema,
            "UPDATE EVENTS SET version = version + 100 "
            "WHERE stream_id = 'order-1' AND version >= 3",
            "UPDATE EVENTS SET version = version - 99 "
            "WHERE stream_id = 'order-1' AND version >= 100",
            "INSERT INTO EVENTS (event_id, stream_id, version, event_type, schema_version, "
            "recorded_at, data, metadata, hash) VALUES (gen_random_uuid(), 'order-1', 3, "
            "'Refunded', 1, now(), '{}', '{}', sha256('x'))")
    assert _problems(_verify(postgres_dsn, schema)) == [("inserted", "order-1", 3)]


def test_a_stripped_hash_is_reported(postgres_dsn: str, schema: str) -> None:
    _tamper(postgres_dsn, schema, "UPDATE EVENTS SET hash = NULL WHERE stream_id = 'order-2'")
    assert _problems(_verify(postgres_dsn, schema)) == [
        ("altered", "order-2", 1), ("altered", "order-2", 2)]


def test_truncation_deletion_and_compaction_verify_clean(postgres_dsn: str, schema: str) -> None:
    with PostgresEventStore(postgres_dsn, schema=schema, compress_threshold=None) as store:
        store.append("big", [NewEvent("Placed", large_payload(n)) for n in range(3)])
        assert compact(store, older_than=timedelta(0)).compressed == 3
        store.truncate_stream("order-1", 3, force=True)
        store.truncate_stream("order-1", 5, force=True)
        store.delete_stream("order-2", hard=True)
        store.delete_stream("order-3")
        report = verify_store(store, batch_size=2)
    assert report.ok, report.problems
    assert (report.events, report.truncated_streams) == (7, 1)
    _tamper(postgres_dsn, schema,
            "DELETE FROM EVENTS WHERE stream_id = 'order-1' AND version = 5")
    assert _problems(_verify(postgres_dsn, schema)) == [("removed", "order-1", 6)]


def test_a_conditional_append_and_a_caller_transaction_chain_too(postgres_dsn: str) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("course-1", [NewEvent("Opened", {"n": 1}, tags=("course:1",))],
                     condition=AppendCondition(Query.of(tags=["course:1"])))
        with psycopg.connect(postgres_dsn) as conn, conn.transaction():
            store.in_transaction(conn).append("course-1", _events(2))

    async def appended() -> None:
        async with AsyncPostgresEventStore(postgres_dsn, schema=schema) as aio:
            await aio.append("course-1", _events(1, 3))
    asyncio.run(appended())
    report = _verify(postgres_dsn, schema)
    assert report.ok, report.problems
    assert report.events == 4


def test_a_schema_9_store_migrates_and_its_old_events_are_unchained(postgres_dsn: str) -> None:
    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for migration in statements.migrations[:9]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(statements.write_schema_version, ("9",))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        old.append("s", _events(2))
        with pytest.raises(StoreError, match="eskit migrate"):
            verify_store(old)
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.append("s", _events(1, 3))
        store.append("t", _events(1))
        report = verify_store(store)
    assert report.ok, report.problems
    assert report.unchained == 2
    _tamper(postgres_dsn, schema, "UPDATE EVENTS SET hash = NULL WHERE stream_id = 't'")
    assert _problems(_verify(postgres_dsn, schema)) == [("altered", "t", 1)]


def test_archive_and_restore_keep_the_chain(postgres_dsn: str, schema: str, tmp_path) -> None:
    from eskit.archive import LocalDirectoryStorage, archive_streams, restore_streams

    storage = LocalDirectoryStorage(tmp_path / "archive")
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        before = {(e.aggregate_id, e.version): e.event_id for e in store.read_all()}
        assert archive_streams(store, storage, ["order-2", "order-3"]) == 4
    archived = _verify(postgres_dsn, schema)
    assert archived.ok, archived.problems
    assert archived.events == 6
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert restore_streams(store, storage) == 4
        assert {(e.aggregate_id, e.version): e.event_id for e in store.read_all()} == before
    report = _verify(postgres_dsn, schema)
    assert report.ok, report.problems
    assert (report.events, report.unchained) == (10, 0)
    # The restored rows carry their hashes: an edit of one is still caught.
    _tamper(postgres_dsn, schema,
            """UPDATE EVENTS SET data = '{"n": 99}' WHERE stream_id = 'order-3' AND version = 2""")
    assert _problems(_verify(postgres_dsn, schema)) == [("altered", "order-3", 2)]
