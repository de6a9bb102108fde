"""Appending inside the caller's transaction (schema 4), against the real server.

The application writes its own tables, then appends, in one transaction: both
commit or roll back together, and the global order still holds. The ordering
tests follow tests/stores/test_postgres.py: *late* appenders (transactions that
wrote elsewhere first) commit in the opposite order of their ids, readers poll
throughout, and a naive "sequence > last seen" reader proves the workload is out
of order.
"""

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eskit import (
    AppendNotFirstWriteError,
    ConcurrencyError,
    InvalidInputError,
    NewEvent,
)
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from eskit.stores.postgres_schema import Statements
from tests.conftest import new_schema_name


@pytest.fixture
def store(postgres_dsn: str) -> Iterator[PostgresEventStore]:
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{store.schema}".orders (id text PRIMARY KEY, n int)')
    yield store
    store.close()


def _orders(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT id FROM "{schema}".orders ORDER BY id').fetchall()
    return [r[0] for r in rows]


def _xid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return int(row[0])


def test_own_write_then_append_commit_together(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o-1",))
        with store.in_transaction(conn) as tx:
            result = tx.append("order-o-1", [NewEvent("OrderPlaced", {"n": 1})], 0)
        # Nothing is visible before the caller commits: eskit did not commit.
        assert store.read_stream("order-o-1") == []
        assert _orders(postgres_dsn, store.schema) == []
        conn.commit()
    (event,) = store.read_stream("order-o-1")
    assert event.position == result.position
    assert [e.event_id for e in store.read_all()] == [event.event_id]
    assert store.wait_for(result.position, timeout=5)
    assert _orders(postgres_dsn, store.schema) == ["o-1"]


def test_rollback_removes_both(store: PostgresEventStore, postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o-2",))
        store.in_transaction(conn).append("order-o-2", [NewEvent("OrderPlaced")], 0)
        conn.rollback()
    assert store.read_stream("order-o-2") == []
    assert list(store.read_all()) == []
    assert _orders(postgres_dsn, store.schema) == []
    # The rolled-back transaction holds no reader back.
    after = store.append("after", [NewEvent("After")], 0)
    assert store.head_position() == after.position


def test_a_conflict_rolls_back_only_the_append(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    store.append("order-o-3", [NewEvent("OrderPlaced")], 0)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o-3",))
        tx = store.in_transaction(conn)
        with pytest.raises(ConcurrencyError):
            tx.append("order-o-3", [NewEvent("Stale")], 0)
        # A unique violation (another writer took version 2 meanwhile) is rolled
        # back to the savepoint too: the transaction is still usable.
        events = [NewEvent("Shipped")]
        with psycopg.connect(postgres_dsn) as other:
            other.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 2)', ("x",))
            store.in_transaction(other).append("order-o-3", [NewEvent("Rival")], 1)
            failures: list[BaseException] = []

            def race() -> None:
                try:
                    tx.append("order-o-3", events, 1)
                except BaseException as exc:
                    failures.append(exc)

            racer = threading.Thread(target=race)
            racer.start()
            time.sleep(0.2)  # it waits on the rival's uncommitted version 2
            other.commit()
            racer.join(timeout=10)
        assert len(failures) == 1
        assert isinstance(failures[0], ConcurrencyError)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        retried = tx.append("order-o-3", events, 2)
        assert retried.version == 3
        # The same events again in the same transaction: found, not stored twice.
        assert tx.append("order-o-3", events, 2).duplicate
        conn.commit()
    assert [e.event_type for e in store.read_stream("order-o-3")] == [
        "OrderPlaced", "Rival", "Shipped"
    ]
    assert _orders(postgres_dsn, store.schema) == ["o-3", "x"]


def test_a_savepoint_rolled_back_then_a_late_append_again(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o-4",))
        tx = store.in_transaction(conn)
        with conn.transaction(force_rollback=True):  # the caller's savepoints
            tx.append("undone", [NewEvent("Undone")], 0)
        with conn.transaction() as savepoint:
            tx.append("undone-too", [NewEvent("Undone")], 0)
            raise psycopg.Rollback(savepoint)
        # The rollbacks released the lock: readers pass this transaction again.
        passed = store.append("passed", [NewEvent("Passed")], 0)
        assert store.head_position() == passed.position
        with conn.transaction():  # released: kept
            again = tx.append("again", [NewEvent("Again")], 0)
        assert (again.position or 0) > (passed.position or 0), "stamped above what readers saw"
        more = tx.append("again", [NewEvent("More")], 1)
        assert (more.position or 0) >> 64 == (again.position or 0) >> 64, "the stamp is reused"
        later = store.append("later", [NewEvent("Later")], 0)
        assert store.wait_for(later.position or 0, timeout=0.05) is False, "it holds readers"
        conn.commit()
    assert [e.event_type for e in store.read_all()] == ["Passed", "Again", "More", "Later"]


def test_a_late_append_under_repeatable_read_is_refused_and_the_transaction_survives(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o-5",))
        with pytest.raises(AppendNotFirstWriteError, match="under repeatable read") as raised:
            store.in_transaction(conn).append("rr", [NewEvent("Refused")], 0)
        assert "READ COMMITTED" in str(raised.value)
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 2)', ("o-6",))
        conn.commit()
    assert _orders(postgres_dsn, store.schema) == ["o-5", "o-6"]
    assert list(store.read_all()) == []
    # As the first write of a REPEATABLE READ transaction, an append is fine.
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        store.in_transaction(conn).append("rr", [NewEvent("First")], 0)
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 3)', ("o-7",))
        conn.commit()
    assert [e.event_type for e in store.read_stream("rr")] == ["First"]


def test_the_horizon_finds_a_late_append_that_committed_after_the_snapshot(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # The third lookup: a late appender holding the lock at the reader's snapshot
    # commits before the lock lookup. Its rows are stamped above its id, so only
    # their writer_xid lets the horizon find them and stop.
    with psycopg.connect(postgres_dsn) as late, psycopg.connect(
        postgres_dsn, autocommit=True
    ) as reader:
        x = _xid(late)
        for _ in range(3):
            reader.execute("SELECT pg_current_xact_id()")  # later ids end first
        stamp = (store.in_transaction(late).append("late", [NewEvent("Late")], 0).position
                 or 0) >> 64
        assert stamp > x
        fast = store.append("fast", [NewEvent("Fast")], 0)
        row = reader.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert row is not None
        late.commit()
        horizon = reader.execute(
            sql.SQL("SELECT {}.eskit_read_horizon(%s::pg_snapshot)::text").format(
                sql.Identifier(store.schema)
            ),
            (row[0],),
        ).fetchone()
    assert horizon is not None
    assert int(horizon[0]) <= stamp
    assert (fast.position or 0) >> 64 > stamp
    assert [e.aggregate_id for e in store.read_all()] == ["late", "fast"]


def test_a_late_append_is_ordered_after_events_of_older_open_appends_readers_returned(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # An early appender A (smaller id) appends again after the late L appended,
    # and commits first. A reader returns A's events; L's must still come later.
    with psycopg.connect(postgres_dsn) as a, psycopg.connect(postgres_dsn) as late:
        store.in_transaction(a).append("a", [NewEvent("A1")], 0)
        late.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("late",))
        store.in_transaction(late).append("late", [NewEvent("L")], 0)
        store.in_transaction(a).append("a", [NewEvent("A2")], 1)
        a.commit()
        seen = list(store.read_all())
        checkpoint = seen[-1].position if seen else 0
        late.commit()
    rest = list(store.read_all(checkpoint))
    assert sorted(e.event_type for e in seen + rest) == ["A1", "A2", "L"]
    assert [e.event_type for e in store.read_all()] == [e.event_type for e in seen + rest]


def test_late_appenders_committing_out_of_order_lose_nothing(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    committed: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def late_writer(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(postgres_dsn) as conn:
            tx = store.in_transaction(conn)
            for i in range(30):
                stream = f"w{n}-{i}"
                if n % 4 != 3:  # most write their own table first: late appenders
                    conn.execute(
                        f'INSERT INTO "{store.schema}".orders VALUES (%s, %s)', (stream, i)
                    )
                time.sleep(rng.random() * 0.004)  # ids taken in one order ...
                tx.append(stream, [NewEvent("E", {"i": i}), NewEvent("F")], 0)
                if rng.random() < 0.3:
                    tx.append(stream, [NewEvent("G")], 2)  # a second append reuses the stamp
                time.sleep(rng.random() * 0.01)  # ... committed in another
                if rng.random() < 0.1:
                    conn.rollback()
                    continue
                conn.commit()
                with lock:
                    committed.append(stream)

    delivered: list[tuple[int, str]] = []
    subscribed: list[int] = []
    naive_seen: set[int] = set()
    heads: list[int] = []

    def eskit_reader() -> None:
        checkpoint = 0
        while True:
            finished = done.is_set()
            heads.append(store.head_position())
            for event in store.read_all(checkpoint):
                assert event.position is not None
                delivered.append((event.position, str(event.aggregate_id)))
                checkpoint = event.position
            if finished:
                return
            time.sleep(0.002)

    subscription = store.subscribe(poll_interval=0.01)

    def follow() -> None:
        for event in subscription:
            subscribed.append(event.position or 0)

    def naive_reader() -> None:
        last = 0
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            while not done.is_set():
                rows = conn.execute(
                    f'SELECT seq FROM "{store.schema}".eskit_events WHERE seq > %s ORDER BY seq',
                    (last,),
                ).fetchall()
                for (seq,) in rows:
                    naive_seen.add(seq)
                    last = seq
                time.sleep(0.002)

    writers = [threading.Thread(target=late_writer, args=(n,)) for n in range(4)]
    readers = [threading.Thread(target=eskit_reader), threading.Thread(target=naive_reader)]
    follower = threading.Thread(target=follow)
    for t in [*readers, follower, *writers]:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    final = [(e.position, str(e.aggregate_id)) for e in store.read_all()]
    deadline = time.monotonic() + 10
    while len(subscribed) < len(final) and time.monotonic() < deadline:
        time.sleep(0.01)
    subscription.stop()
    follower.join(timeout=10)

    assert delivered == final, "the polling reader got exactly the final order"
    assert subscribed == [p for p, _ in final], "the subscription too, nothing twice"
    assert sorted(set(s for _, s in delivered)) == sorted(committed)
    # head_position may step back while a late append is open (see the test below),
    # but it only ever reports committed events.
    assert set(heads) - {0} <= {p for p, _ in final}
    final_seqs = {(p or 0) & (2**64 - 1) for p, _ in final}
    missed = len(final_seqs - naive_seen)
    assert missed > 0, "the naive reader missed nothing: the workload is not out of order"
    print(f"naive reader missed {missed} of {len(final)} events")


def test_a_store_on_the_callers_connection_joins_its_transaction(postgres_dsn: str) -> None:
    schema = new_schema_name()
    with psycopg.connect(postgres_dsn) as conn:
        store = PostgresEventStore(connection=conn, schema=schema)  # setup joins the tx
        conn.commit()
        conn.execute(f'CREATE TABLE "{schema}".orders (id text)')
        conn.execute(f"INSERT INTO \"{schema}\".orders VALUES ('o-1')")
        store.append("order-1", [NewEvent("OrderPlaced")], 0)
        # read_stream on the connection sees its transaction's own writes (read_all
        # may or may not: its horizon is the snapshot's, which excludes itself).
        assert [e.event_type for e in store.read_stream("order-1")] == ["OrderPlaced"]
        with PostgresEventStore(postgres_dsn, schema=schema) as outside:
            assert outside.read_stream("order-1") == []
            conn.commit()
            assert [e.event_type for e in outside.read_stream("order-1")] == ["OrderPlaced"]
        store.append("order-2", [NewEvent("OrderPlaced")], 0)
        conn.rollback()
        assert [e.aggregate_id for e in store.read_all()] == ["order-1"]
        store.close()
        assert not conn.closed, "eskit never closes the caller's connection"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        with PostgresEventStore(connection=conn, schema=schema) as store:
            store.append("order-3", [NewEvent("OrderPlaced")], 0)  # its own transaction
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_bad_connections_are_refused_before_any_io(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        PostgresEventStore(postgres_dsn, connection=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"psycopg\.Connection"):
        store.in_transaction(object())
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        with pytest.raises(InvalidInputError, match="no open transaction"):
            store.in_transaction(conn).append("s", [NewEvent("E")], 0)
        with conn.transaction():
            store.in_transaction(conn).append("s", [NewEvent("E")], 0)
    with psycopg.connect(postgres_dsn) as conn:
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT 1/0")
        with pytest.raises(InvalidInputError, match="roll it back"):
            store.in_transaction(conn).append("t", [NewEvent("E")], 0)
    conn.close()
    with pytest.raises(InvalidInputError, match="closed"):
        store.in_transaction(conn)
    assert [e.aggregate_id for e in store.read_all()] == ["s"]


def test_a_schema_3_store_migrates_to_4_and_keeps_its_rows(postgres_dsn: str) -> None:
    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for statement in [s for m in statements.migrations[:3] for s in m]:
            conn.execute(statement)
        conn.execute(statements.write_schema_version, ("3",))
    table = f'"{schema}".eskit_events'
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old:
        assert old.schema_version() == 3
        old.append("before", [NewEvent("Before")], 0)
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute("SELECT pg_current_xact_id()")
            with pytest.raises(AppendNotFirstWriteError):  # schema 3 refuses late appends
                old.in_transaction(conn).append("late", [NewEvent("Late")], 0)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            before = conn.execute(f"SELECT tx_id::text, seq FROM {table}").fetchall()
        with PostgresEventStore(postgres_dsn, schema=schema) as store:  # migrates
            assert store.schema_version() == POSTGRES_SCHEMA_VERSION
            # The store opened on schema 3 keeps working after the migration.
            old.append("during", [NewEvent("During")], 0)
            with psycopg.connect(postgres_dsn) as conn:
                conn.execute("SELECT pg_current_xact_id()")
                store.in_transaction(conn).append("late", [NewEvent("Late")], 0)
                conn.commit()
            assert [e.aggregate_id for e in old.read_all()] == ["before", "during", "late"]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT tx_id::text, seq, writer_xid FROM {table} WHERE stream_id = 'before'"
        ).fetchall()
    assert rows == [(*before[0], None)], "old rows are untouched"


def test_head_position_may_step_back_while_a_late_append_is_open_and_nothing_is_skipped(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # Documented caveat: a late appender bounds readers at its id from its first
    # append on, below events committed after its first write and already reported.
    with psycopg.connect(postgres_dsn) as late:
        late.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("late",))
        before = store.append("before", [NewEvent("Before")], 0)
        assert store.head_position() == before.position
        checkpoint = before.position or 0
        store.in_transaction(late).append("late", [NewEvent("Late")], 0)
        assert store.head_position() < checkpoint, "bounded at the late appender's id"
        assert list(store.read_all(checkpoint)) == []
        late.commit()
    assert [e.aggregate_id for e in store.read_all(checkpoint)] == ["late"]
    assert [e.aggregate_id for e in store.read_all()] == ["before", "late"]


def test_a_stamp_set_by_hand_never_applies(store: PostgresEventStore, postgres_dsn: str) -> None:
    # The defaults read eskit.late_stamp; the trigger sets it on every insert, so a
    # value planted in the session (to stamp events below readers) is overwritten.
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SET eskit.late_stamp = '3'")  # session-wide
        conn.commit()
        early = store.in_transaction(conn).append("early", [NewEvent("E")], 0)  # first write
        conn.commit()
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o",))
        conn.execute("SET LOCAL eskit.late_stamp = '3'")
        late = store.in_transaction(conn).append("late", [NewEvent("L")], 0)
        conn.commit()
    assert (early.position or 0) >> 64 > 3
    assert (late.position or 0) > (early.position or 0)
    assert [e.aggregate_id for e in store.read_all()] == ["early", "late"]


def test_a_dropped_connection_in_the_callers_transaction_is_not_retried(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    from eskit import StoreUnavailableError

    with psycopg.connect(postgres_dsn) as conn, psycopg.connect(
        postgres_dsn, autocommit=True
    ) as admin:
        conn.execute(f'INSERT INTO "{store.schema}".orders VALUES (%s, 1)', ("o",))
        tx = store.in_transaction(conn)
        tx.append("lost", [NewEvent("Lost")], 0)
        # Only this test's own connection is terminated, by its backend pid.
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(StoreUnavailableError):
            tx.append("lost", [NewEvent("More")], 1)
    assert store.read_stream("lost") == []
    assert _orders(postgres_dsn, store.schema) == []
    after = store.append("after", [NewEvent("After")], 0)
    assert store.head_position() == after.position, "the dead transaction holds nobody back"


def test_eskit_migrate_takes_a_schema_3_store_to_4(postgres_dsn: str) -> None:
    from tests.cli.helpers import eskit_cli

    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for statement in [s for m in statements.migrations[:3] for s in m]:
            conn.execute(statement)
        conn.execute(statements.write_schema_version, ("3",))
    done = eskit_cli("migrate", postgres_dsn, "--schema", schema)
    assert done.returncode == 0, done.stderr
    assert f"version {POSTGRES_SCHEMA_VERSION} (migrated from 3)" in done.stdout
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as store:
        assert store.schema_version() == POSTGRES_SCHEMA_VERSION
