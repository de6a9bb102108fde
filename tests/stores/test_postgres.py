"""What only the PostgreSQL store promises, tested against the real server.

The ordering tests follow RELIABILITY.md: transactions are made to take their ids
in one order and commit in the other, and a naive "sequence > last seen" reader
runs beside eskit's to prove the test can see the bug it guards against.
"""

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from eskit import (
    ANY,
    STREAM_EXISTS,
    AppendNotFirstWriteError,
    ConcurrencyError,
    InvalidInputError,
    NewEvent,
    StoreError,
)
from eskit.events import MAX_NAME_BYTES
from eskit.stores.arguments import prepare_batch
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_schema import APPEND_NOT_FIRST_WRITE, Statements, append_params
from eskit.stores.postgres_schema import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from tests.conftest import new_schema_name


@pytest.fixture
def store(postgres_dsn: str) -> Iterator[PostgresEventStore]:
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    yield store
    store.close()


def _open_append(store: PostgresEventStore, conn: psycopg.Connection[Any], stream: str) -> None:
    """Run eskit's append statement inside a transaction the test controls."""
    batch = prepare_batch(
        stream, [NewEvent("Slow", {"stream": stream})], registry=store.registry,
        max_event_bytes=store.max_event_bytes,
    )
    conn.execute(store.sql.append, append_params(stream, 0, batch))


def _naive_read(conn: psycopg.Connection[Any], schema: str, after_seq: int) -> list[int]:
    rows = conn.execute(
        f'SELECT seq FROM "{schema}".eskit_events WHERE seq > %s ORDER BY seq', (after_seq,)
    ).fetchall()
    return [r[0] for r in rows]


def test_reader_does_not_skip_an_event_whose_transaction_commits_late(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as slow, psycopg.connect(
        postgres_dsn, autocommit=True
    ) as naive:
        _open_append(store, slow, "slow")  # takes its transaction id (and sequence) first
        store.append("fast", [NewEvent("Fast")], 0)  # later id, commits first

        # The naive reader sees the fast event and moves its checkpoint past it.
        naive_seen = _naive_read(naive, store.schema, 0)
        assert len(naive_seen) == 1
        # eskit's reader holds back: an older transaction is still open.
        assert list(store.read_all()) == []
        assert store.head_position() == 0

        slow.commit()

        everything = list(store.read_all())
        assert [e.aggregate_id for e in everything] == ["slow", "fast"]
        # The naive reader resumes after its checkpoint and never sees the slow event.
        assert _naive_read(naive, store.schema, naive_seen[-1]) == []
        # eskit's order is stable from now on.
        assert [e.event_id for e in store.read_all()] == [e.event_id for e in everything]


def test_a_rolled_back_append_leaves_a_hole_the_reader_does_not_wait_for(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as doomed:
        _open_append(store, doomed, "doomed")
        doomed.rollback()
    store.append("kept", [NewEvent("Kept")], 0)
    assert [e.aggregate_id for e in store.read_all()] == ["kept"]


def test_an_open_append_delays_readers_and_is_reported(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as appending:
        _open_append(store, appending, "slow")
        time.sleep(0.05)
        late = store.append("s", [NewEvent("During")], 0)
        assert list(store.read_all()) == [], "events after an open append wait for it"
        assert store.wait_for(late.position, timeout=0.05) is False
        assert store.oldest_transaction_age() >= 0.05
        appending.commit()
    assert [e.event_type for e in store.read_all()] == ["Slow", "During"]
    assert store.wait_for(late.position, timeout=0) is True
    assert store.oldest_transaction_age() == 0


def _snapshot_xip(conn: psycopg.Connection[Any]) -> set[int]:
    rows = conn.execute("SELECT pg_snapshot_xip(pg_current_snapshot())::text").fetchall()
    return {int(r[0]) for r in rows}


def _xid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return int(row[0])


def _assert_visible_at_once_despite(
    store: PostgresEventStore, postgres_dsn: str, holder: psycopg.Connection[Any]
) -> None:
    """``holder`` has an id and is idle: an append after it is visible at once."""
    held = _xid(holder)
    result = store.append("after", [NewEvent("After")], 0)
    with psycopg.connect(postgres_dsn, autocommit=True) as probe:
        # The proof that the test exercises the case: the idle transaction is in
        # progress in the reader's snapshot, so the old horizon (the xmin) was below it.
        assert held in _snapshot_xip(probe)
    assert [e.aggregate_id for e in store.read_all()] == ["after"]
    assert store.head_position() == result.position
    assert store.wait_for(result.position, timeout=0) is True
    assert store.oldest_transaction_age() == 0


def test_a_transaction_writing_another_table_first_does_not_delay_readers(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as other:
        other.execute(f'CREATE TABLE "{store.schema}".side (n int)')
        other.commit()
        other.execute(f'INSERT INTO "{store.schema}".side VALUES (1)')  # takes an id
        _assert_visible_at_once_despite(store, postgres_dsn, other)
        # It even reads the events table: a reader, not an appender.
        other.execute(f'SELECT count(*) FROM "{store.schema}".eskit_events')
        second = store.append("after", [NewEvent("After")], 1)
        assert store.head_position() == second.position
        other.commit()


def test_an_idle_transaction_in_another_database_does_not_delay_readers(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    elsewhere = psycopg.conninfo.make_conninfo(postgres_dsn, dbname="postgres")
    with psycopg.connect(elsewhere) as other:
        _assert_visible_at_once_despite(store, postgres_dsn, other)
        other.rollback()


def test_a_projection_batch_into_a_postgres_target_does_not_delay_readers(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    from eskit import PostgresTarget

    target = PostgresTarget(postgres_dsn, schema=store.schema)
    try:
        with target.transaction() as conn:
            conn.execute("CREATE TABLE read_model (n int)")
            conn.execute("INSERT INTO read_model VALUES (1)")
            _assert_visible_at_once_despite(store, postgres_dsn, conn)
    finally:
        target.close()


def test_a_late_append_is_stamped_above_its_id_and_refused_under_repeatable_read(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    batch = prepare_batch(
        "late", [NewEvent("Late")], registry=store.registry, max_event_bytes=store.max_event_bytes
    )
    with psycopg.connect(postgres_dsn) as conn, psycopg.connect(
        postgres_dsn, autocommit=True
    ) as other:
        x = _xid(conn)  # any write, or an explicit id: the append comes late
        for _ in range(3):
            other.execute("SELECT pg_current_xact_id()")  # later ids end first
        rows = conn.execute(store.sql.append, append_params("late", 0, batch)).fetchall()
        stamp = int(rows[0][2])
        assert stamp > x, "stamped above every id that ended before its lock"
        row = conn.execute(
            f'SELECT tx_id::text, writer_xid::text FROM "{store.schema}".eskit_events'
        ).fetchone()
        assert row == (str(stamp), str(x))
        conn.commit()
    assert [e.position >> 64 for e in store.read_all() if e.position] == [stamp]
    # Under REPEATABLE READ the trigger has no fresh snapshot to stamp with: refused.
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT pg_current_xact_id()")
        with pytest.raises(psycopg.Error, match="under repeatable read an append") as raised:
            conn.execute(store.sql.append, append_params("rr", 0, batch))
        assert raised.value.sqlstate == APPEND_NOT_FIRST_WRITE
    # Through the store's connections the refusal is a typed eskit error.
    def write_then_append() -> None:
        with store._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            conn.execute(f'CREATE TABLE "{store.schema}".side (n int)')
            conn.execute(store.sql.append, append_params("rr", 0, batch))

    with pytest.raises(AppendNotFirstWriteError, match="first write of its transaction"):
        write_then_append()
    assert store.read_stream("rr") == []
    assert [e.aggregate_id for e in store.read_all()] == ["late"]


def test_an_append_may_write_more_after_its_first_insert(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # Events first, then anything else, then more events: the transaction took the
    # table's lock before its id, so readers wait for it, and nothing is skipped.
    with psycopg.connect(postgres_dsn) as conn:
        _open_append(store, conn, "first")
        conn.execute(f'CREATE TABLE "{store.schema}".side (n int)')
        _open_append(store, conn, "second")
        later = store.append("later", [NewEvent("Later")], 0)
        assert list(store.read_all()) == []
        assert store.wait_for(later.position, timeout=0.02) is False
        conn.commit()
    assert [e.aggregate_id for e in store.read_all()] == ["first", "second", "later"]


def test_an_append_rolled_back_to_a_savepoint_releases_readers_and_may_append_again(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SAVEPOINT s")
        _open_append(store, conn, "undone")  # the top-level id is taken here
        conn.execute("ROLLBACK TO SAVEPOINT s")  # ... and outlives the savepoint
        held = _xid(conn)
        # The rollback released the table lock: this transaction holds nobody back.
        _assert_visible_at_once_despite(store, postgres_dsn, conn)
        # It may append again, late: stamped above "after", which readers returned.
        _open_append(store, conn, "again")
        later = store.append("later", [NewEvent("Later")], 0)
        assert store.wait_for(later.position or 0, timeout=0.02) is False, "it holds readers"
        conn.commit()
    assert held > 0
    assert [e.aggregate_id for e in store.read_all()] == ["after", "again", "later"]


def test_the_horizon_stops_at_an_append_that_committed_after_the_snapshot(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # The window between a reader's snapshot and its lock lookup: an appender that
    # held the lock at the snapshot and committed before the lookup is no longer
    # in pg_locks; the status check (run after the lookup) must still stop there.
    with psycopg.connect(postgres_dsn) as slow, psycopg.connect(
        postgres_dsn, autocommit=True
    ) as reader:
        _open_append(store, slow, "slow")
        slow_xid = _xid(slow)
        fast = store.append("fast", [NewEvent("Fast")], 0)
        row = reader.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert row is not None
        snapshot = row[0]
        slow.commit()
        horizon = reader.execute(
            psycopg.sql.SQL("SELECT {}.eskit_read_horizon(%s::pg_snapshot)::text").format(
                psycopg.sql.Identifier(store.schema)
            ),
            (snapshot,),
        ).fetchone()
    assert horizon is not None
    assert int(horizon[0]) == slow_xid
    assert (fast.position or 0) >> 64 > slow_xid
    assert [e.aggregate_id for e in store.read_all()] == ["slow", "fast"]


def test_live_reader_sees_every_committed_event_exactly_once_with_slow_writers(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    committed: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def slow_writer(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(postgres_dsn) as conn:
            for i in range(40):
                stream = f"w{n}-{i}"
                _open_append(store, conn, stream)
                time.sleep(rng.random() * 0.01)  # commit order != transaction id order
                if rng.random() < 0.1:
                    conn.rollback()
                    continue
                conn.commit()
                with lock:
                    committed.append(stream)

    delivered: list[tuple[int, str]] = []
    naive_seen: set[int] = set()

    def eskit_reader() -> None:
        checkpoint = 0
        while True:
            finished = done.is_set()
            for event in store.read_all(checkpoint):
                assert event.position is not None
                delivered.append((event.position, str(event.aggregate_id)))
                checkpoint = event.position
            if finished:
                return
            time.sleep(0.002)

    def naive_reader() -> None:
        last = 0
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            while not done.is_set():
                for seq in _naive_read(conn, store.schema, last):
                    naive_seen.add(seq)
                    last = seq
                time.sleep(0.002)

    writers = [threading.Thread(target=slow_writer, args=(n,)) for n in range(4)]
    readers = [threading.Thread(target=eskit_reader), threading.Thread(target=naive_reader)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()

    final = [(e.position, str(e.aggregate_id)) for e in store.read_all()]
    assert delivered == final, "the live reader got exactly the final order, nothing more or less"
    assert sorted(s for _, s in delivered) == sorted(committed)
    assert len({p for p, _ in delivered}) == len(delivered), "no event delivered twice"
    # The naive reader, run against the same writers, must lose events: that proves
    # this workload really commits out of order (it missed about a third when written).
    final_seqs = {e.position & (2**64 - 1) for e in store.read_all() if e.position}
    missed = len(final_seqs - naive_seen)
    assert missed > 0, "the naive reader missed nothing: the workload is not out of order"
    print(f"naive reader missed {missed} of {len(committed)} events")


def test_subscription_wakes_on_notify_and_catches_up_first(
    store: PostgresEventStore,
) -> None:
    store.append("history", [NewEvent("Old", {"n": n}) for n in range(3)], 0)
    subscription = store.subscribe(poll_interval=30.0)  # a wake-up must come from NOTIFY
    received: list[Any] = []

    def follow() -> None:
        for event in subscription:
            received.append(event)
            if len(received) == 5:
                subscription.stop()

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)
    store.append("live", [NewEvent("New", {"n": 3})], 0)
    time.sleep(0.1)
    store.append("live", [NewEvent("New", {"n": 4})], 1)
    follower.join(timeout=10)
    assert not follower.is_alive(), "the subscription did not wake up on NOTIFY"
    assert [e.event_data["n"] for e in received] == [0, 1, 2, 3, 4]
    assert subscription.position == received[-1].position


def test_subscription_stop_ends_a_waiting_iteration_promptly(
    store: PostgresEventStore,
) -> None:
    subscription = store.subscribe(poll_interval=30.0)
    follower = threading.Thread(target=lambda: list(subscription))
    follower.start()
    time.sleep(0.3)
    started = time.monotonic()
    subscription.stop()
    follower.join(timeout=10)
    assert not follower.is_alive()
    assert time.monotonic() - started < 5


def test_the_horizon_passes_an_unrelated_transaction_that_ended_after_the_snapshot(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # A transaction of another database (or table) in the snapshot that ends before
    # the lookup stored no events here: it must not hold the reader back either.
    elsewhere = psycopg.conninfo.make_conninfo(postgres_dsn, dbname="postgres")
    with psycopg.connect(elsewhere) as other, psycopg.connect(
        postgres_dsn, autocommit=True
    ) as reader:
        other_xid = _xid(other)
        store.append("fast", [NewEvent("Fast")], 0)
        row = reader.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert row is not None
        snapshot = row[0]
        assert other_xid in _snapshot_xip(reader)
        other.commit()
        query = psycopg.sql.SQL("SELECT {}.eskit_read_horizon(%s::pg_snapshot)::text").format(
            psycopg.sql.Identifier(store.schema)
        )
        horizon = reader.execute(query, (snapshot,)).fetchone()
        # Under REPEATABLE READ the function cannot look with a newer snapshot, so
        # it stays conservative: an ended transaction counts.
        with reader.transaction():
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conservative = reader.execute(query, (snapshot,)).fetchone()
    assert horizon is not None
    assert int(horizon[0]) == int(snapshot.split(":")[1]), "the horizon is the snapshot xmax"
    assert conservative == (str(other_xid),)


# -- ANY and STREAM_EXISTS under contention --------------------------------------------


@pytest.mark.parametrize("expected", [ANY, STREAM_EXISTS], ids=["ANY", "STREAM_EXISTS"])
def test_unconditional_appends_never_conflict_with_24_threads_on_one_stream(
    postgres_dsn: str, expected: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A retry after a lost race holds the stream's lock, so no other eskit append
    # can beat it: one retry is always enough. With the bound cut to two attempts,
    # a second loss would surface as StoreBusyError (the old unlocked retries lost
    # again and again: about 70% of appends failed with two attempts).
    import eskit.stores.postgres as module

    monkeypatch.setattr(module, "MAX_APPEND_ATTEMPTS", 2)
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name(), pool_size=24)
    store.append("race", [NewEvent("First")], 0)
    errors: list[BaseException] = []
    exact = {"won": 0, "conflict": 0}
    lock = threading.Lock()

    def unconditional() -> None:
        for _ in range(25):
            try:
                store.append("race", [NewEvent("Any"), NewEvent("Any")], expected)
            except BaseException as exc:
                with lock:
                    errors.append(exc)

    def exact_version() -> None:
        for _ in range(25):
            head = store.head_version("race")
            try:
                store.append("race", [NewEvent("Exact")], head)
            except ConcurrencyError as exc:
                outcome = "conflict" if exc.expected_version == head else "wrong error"
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                continue
            else:
                outcome = "won"
            with lock:
                exact[outcome] = exact.get(outcome, 0) + 1

    threads = [threading.Thread(target=unconditional) for _ in range(20)]
    threads += [threading.Thread(target=exact_version) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "the writers did not finish in time"
        assert errors == []
        assert set(exact) <= {"won", "conflict"}, exact
        assert exact["won"] + exact["conflict"] == 100
        versions = [e.version for e in store.read_stream("race")]
        assert versions == list(range(1, 2 + 20 * 25 * 2 + exact["won"]))
    finally:
        store.close()


# -- processes -------------------------------------------------------------------------


def _race_on_one_stream(dsn: str, schema: str, attempts: int) -> dict[str, int]:
    outcome = {"won": 0, "conflict": 0}
    with PostgresEventStore(dsn, schema=schema, pool_size=2) as store:
        for _ in range(attempts):
            head = store.head_version("race")
            try:
                store.append("race", [NewEvent("Raced")], head)
                outcome["won"] += 1
            except ConcurrencyError:
                outcome["conflict"] += 1
            except Exception as exc:  # reported, and fails the test
                outcome[f"{type(exc).__name__}: {exc}"] = outcome.get(str(exc), 0) + 1
    return outcome


def _append_own_streams(dsn: str, schema: str, writer: int) -> int:
    with PostgresEventStore(dsn, schema=schema, pool_size=2) as store:
        for i in range(50):
            store.append(f"p{writer}", [NewEvent("Batch", {"i": i, "k": k}) for k in range(4)],
                         i * 4)
    return 200


@pytest.mark.slow
def test_processes_racing_on_one_stream_get_exactly_one_winner_per_version(
    postgres_dsn: str,
) -> None:
    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.starmap(_race_on_one_stream, [(postgres_dsn, schema, 40)] * 4)
    assert all(set(o) == {"won", "conflict"} for o in outcomes), outcomes
    wins = sum(o["won"] for o in outcomes)
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        versions = [e.version for e in store.read_stream("race")]
    assert versions == list(range(1, wins + 1))
    assert wins + sum(o["conflict"] for o in outcomes) == 160


@pytest.mark.slow
def test_processes_on_different_streams_lose_nothing_while_a_live_reader_follows(
    postgres_dsn: str,
) -> None:
    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()
    reader_store = PostgresEventStore(postgres_dsn, schema=schema)
    subscription = reader_store.subscribe(poll_interval=0.2)
    delivered: list[tuple[int, uuid.UUID]] = []

    def follow() -> None:
        for event in subscription:
            delivered.append((event.position or 0, event.event_id))
            if len(delivered) == 600:
                subscription.stop()

    follower = threading.Thread(target=follow)
    follower.start()
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        counts = pool.starmap(_append_own_streams, [(postgres_dsn, schema, w) for w in range(3)])
    follower.join(timeout=30)
    subscription.stop()
    reader_store.close()
    assert not follower.is_alive()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        everything = list(store.read_all())
        assert delivered == [(e.position, e.event_id) for e in everything], (
            "the live reader saw every event exactly once, in the final order"
        )
        assert len(everything) == sum(counts) == 600
        for w in range(3):
            assert [e.version for e in store.read_stream(f"p{w}")] == list(range(1, 201))
        positions = [e.position or 0 for e in everything]
        assert positions == sorted(positions)
        assert len(set(positions)) == 600


def _append_big_batches_forever(dsn: str, schema: str, writer: int) -> None:
    with PostgresEventStore(dsn, schema=schema, pool_size=1) as store:
        n = 0
        while True:
            n += 1
            size = 500 + n % 500
            store.append(
                f"k{writer}-{n % 3}",
                [NewEvent("Filled", {"i": i, "pad": "x" * 200}, {"batch": f"{writer}-{n}",
                                                                "size": size})
                 for i in range(size)],
            )


@pytest.mark.slow
def test_killing_writers_mid_batch_never_leaves_a_partial_batch(postgres_dsn: str) -> None:
    schema = new_schema_name()
    watcher = PostgresEventStore(postgres_dsn, schema=schema)
    context = multiprocessing.get_context("spawn")
    for round_ in range(3):
        writers = [
            context.Process(target=_append_big_batches_forever,
                            args=(postgres_dsn, schema, round_ * 10 + w))
            for w in range(2)
        ]
        before = watcher.head_position()
        for p in writers:
            p.start()
        # A spawned writer needs a second or more to start on a loaded machine: kill
        # at a random moment after this round's first batch committed, not on a clock.
        assert watcher.wait_for(before + 1, timeout=60), "no writer appended within 60 s"
        time.sleep(0.2 + random.random() / 2)
        for p in writers:
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
        for p in writers:
            p.join()
    watcher.close()
    time.sleep(0.2)  # let the server notice the dead connections and roll them back
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        everything = list(store.read_all())
        assert len(everything) > 1000, "the writers appended too little before being killed"
        sizes: dict[str, int] = {}
        counts: dict[str, int] = {}
        for event in everything:
            batch = event.metadata["batch"]
            sizes[batch] = event.metadata["size"]
            counts[batch] = counts.get(batch, 0) + 1
        assert counts == sizes, "a batch is stored partially"
        for info in store.list_streams():
            assert [e.version for e in store.read_stream(info.stream_id)] == list(
                range(1, info.version + 1)
            )


# -- schema, setup and hostile input ---------------------------------------------------


@pytest.mark.parametrize(
    "schema", ["", "x; DROP TABLE y", 'quote"d', "1starts_with_digit", "a" * 64, "sp ace", None]
)
def test_invalid_schema_names_are_refused_before_connecting(schema: Any) -> None:
    with pytest.raises(InvalidInputError):
        PostgresEventStore("postgresql://nobody@127.0.0.1:1/none", schema=schema)


def test_setup_is_idempotent_and_safe_from_several_threads(postgres_dsn: str) -> None:
    schema = new_schema_name()
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            PostgresEventStore(postgres_dsn, schema=schema, pool_size=1).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.setup()
        store.append("s", [NewEvent("A")], 0)
        assert store.head_version("s") == 1


def test_a_schema_from_a_newer_eskit_is_refused(postgres_dsn: str) -> None:
    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE \"{schema}\".eskit_meta SET value = '99' WHERE key = 'schema_version'"
        )
    with pytest.raises(StoreError, match="upgrade eskit"):
        PostgresEventStore(postgres_dsn, schema=schema)


def test_two_schemas_in_one_database_are_separate_stores(postgres_dsn: str) -> None:
    with PostgresEventStore(postgres_dsn, schema=new_schema_name()) as a, PostgresEventStore(
        postgres_dsn, schema=new_schema_name()
    ) as b:
        a.append("s", [NewEvent("InA")], 0)
        assert b.read_stream("s") == []
        assert b.head_position() == 0


def test_events_cannot_be_updated_or_deleted_even_with_raw_sql(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    store.append("s", [NewEvent("A", {"n": 1})], 0)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for statement in ("UPDATE {}.eskit_events SET event_type = 'B'",
                          "DELETE FROM {}.eskit_events"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement.format(f'"{store.schema}"'))
    assert store.read_stream("s")[0].event_data == {"n": 1}


def test_hostile_names_do_not_change_the_table_list(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    def tables() -> set[str]:
        # This store's schema and public only: other test sessions create and drop
        # schemas of their own on the same server meanwhile.
        with psycopg.connect(postgres_dsn) as conn:
            rows = conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables "
                "WHERE schemaname IN (%s, 'public')", (store.schema,),
            ).fetchall()
        return {r[0] for r in rows}

    before = tables()
    assert f"{store.schema}.eskit_events" in before
    hostile = [
        "x'); DROP TABLE eskit_events; --", "$$; DROP SCHEMA public; $$", "\\'\\\"",
        "é" * (MAX_NAME_BYTES // 2),  # the longest name, in two-byte characters
    ]
    for name in hostile:
        store.append(name, [NewEvent(name, {name: name}, {name: name})], 0)
        (event,) = store.read_stream(name)
        assert (event.aggregate_id, event.event_type, event.event_data) == (
            name, name, {name: name}
        )
    with pytest.raises(InvalidInputError):
        store.append("nul\x00id", [NewEvent("E")], 0)
    with pytest.raises(InvalidInputError):
        store.append("s", [NewEvent("nul\x00type")], 0)
    assert tables() == before


def test_nul_characters_inside_payload_values_round_trip(store: PostgresEventStore) -> None:
    # jsonb would reject "\\u0000"; eskit stores json, which keeps it.
    store.append("s", [NewEvent("E", {"text": "a\x00b", "big": 1e20})], 0)
    data = store.read_stream("s")[0].event_data
    assert data == {"text": "a\x00b", "big": 1e20}
    assert type(data["big"]) is float


def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresEventStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)


def test_positions_are_one_value_users_pass_back_unchanged(store: PostgresEventStore) -> None:
    first = store.append("a", [NewEvent("A")], 0).events[0]
    store.append("b", [NewEvent("B")], 0)
    assert isinstance(first.position, int)
    assert [e.aggregate_id for e in store.read_all(first.position)] == ["b"]
    assert uuid.UUID(int=0) != first.event_id


def test_order_follows_transaction_ids_numerically_when_they_gain_a_digit(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # As text, "10" sorts before "9": a query that ordered by a text cast of the
    # transaction id read the later transaction first and skipped the earlier one.
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for tx, stream in (("9", "earlier"), ("10", "later")):
            for version in (1, 2):
                conn.execute(
                    f'INSERT INTO "{store.schema}".eskit_events (tx_id, event_id, stream_id,'
                    " version, event_type, schema_version, recorded_at, data, metadata)"
                    " VALUES (%s::xid8, %s, %s, %s, 'E', 1, now(), '{}', '{}')",
                    (tx, uuid.uuid4(), stream, version),
                )
    everything = list(store.read_all())
    assert [(e.aggregate_id, e.version) for e in everything] == [
        ("earlier", 1), ("earlier", 2), ("later", 1), ("later", 2),
    ]
    assert store.head_position() == everything[-1].position
    assert [e.aggregate_id for e in store.read_all(everything[1].position or 0)] == [
        "later", "later",
    ]
    assert [s.stream_id for s in store.list_streams()] == ["earlier", "later"]


def _max_rows_of_any_plan_node(plan: dict[str, Any]) -> int:
    rows = int(plan.get("Actual Rows", 0))
    return max([rows, *(_max_rows_of_any_plan_node(p) for p in plan.get("Plans", []))])


def test_a_read_all_page_touches_only_a_page_of_rows_even_without_statistics(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    # With the position and the xmin cut in one WHERE, a table that had not been
    # analyzed yet was read by a bitmap scan plus a sort of every row after the
    # position, for every page: reading a log grew with the square of its length.
    for n in range(6):
        store.append(f"s-{n}", [NewEvent("E") for _ in range(500)], 0)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        analyzed = conn.execute(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables"
            " WHERE schemaname = %s AND relname = 'eskit_events'", (store.schema,),
        ).fetchone()
        assert analyzed == (None, None), "the test needs a table without statistics"
        explain = psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + store.sql.read_all_page
        ((plan,),) = conn.execute(explain, ("0", 0, 100)).fetchall()
    assert _max_rows_of_any_plan_node(plan[0]["Plan"]) <= 100
    assert len(store._read_all_page(0, 100)) == 100


def test_read_all_reading_ahead_gives_the_same_pages_and_stops_cleanly(
    store: PostgresEventStore,
) -> None:
    from eskit.stores.model import READ_ALL_PAGE_SIZE

    total = 2 * READ_ALL_PAGE_SIZE + 7
    store.append("long", [NewEvent("E", {"n": n}) for n in range(total)], 0)
    everything = list(store.read_all())
    assert [e.event_data["n"] for e in everything] == list(range(total))
    for limit in (READ_ALL_PAGE_SIZE - 1, READ_ALL_PAGE_SIZE, READ_ALL_PAGE_SIZE + 1, total + 5):
        assert list(store.read_all(limit=limit)) == everything[:limit]
    middle = everything[READ_ALL_PAGE_SIZE - 3].position or 0
    assert list(store.read_all(middle)) == everything[READ_ALL_PAGE_SIZE - 2 :]
    # Abandoning the iteration after the first event waits for the page read ahead
    # and leaves no helper thread behind.
    reader = store.read_all()
    next(reader)
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("eskit-read-ahead")]


def test_read_all_reads_page_by_page_when_no_thread_can_be_started(
    store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once the interpreter begins to shut down, executors refuse new work; a
    # non-daemon thread still reading must get every event all the same.
    from concurrent.futures import ThreadPoolExecutor

    from eskit.stores.model import READ_ALL_PAGE_SIZE

    total = 2 * READ_ALL_PAGE_SIZE + 3
    store.append("long", [NewEvent("E", {"n": n}) for n in range(total)], 0)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(ThreadPoolExecutor, "submit", refuse)
    assert [e.event_data["n"] for e in store.read_all()] == list(range(total))
    assert len(list(store.read_all(limit=READ_ALL_PAGE_SIZE + 1))) == READ_ALL_PAGE_SIZE + 1


# -- schema version 3: the read horizon ------------------------------------------------


def test_a_version_2_store_gets_the_new_horizon_when_opened(postgres_dsn: str) -> None:
    schema = new_schema_name()
    statements = Statements(schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(statements.create_schema)
        conn.execute(statements.create_meta)
        for statement in statements.migrations[0] + statements.migrations[1]:
            conn.execute(statement)
        conn.execute(statements.write_schema_version, ("2",))
    with PostgresEventStore(postgres_dsn, schema=schema, setup=False) as old, psycopg.connect(
        postgres_dsn
    ) as other:
        assert old.schema_version() == 2
        old.append("before", [NewEvent("Before")], 0)
        # Not migrated yet: reads keep the version 2 horizon (the xmin), which is
        # sound but held back by any transaction with an id.
        other.execute("SELECT pg_current_xact_id()")
        held_back = old.append("held", [NewEvent("Held")], 0)
        assert old.head_position() < (held_back.position or 0)
        other.rollback()
    with PostgresEventStore(postgres_dsn, schema=schema) as store, psycopg.connect(
        postgres_dsn
    ) as other:
        assert store.schema_version() == POSTGRES_SCHEMA_VERSION
        assert [e.aggregate_id for e in store.read_all()] == ["before", "held"]
        other.execute("SELECT pg_current_xact_id()")
        after = store.append("after", [NewEvent("After")], 0)
        assert store.head_position() == after.position
        _open_append(store, other, "late")  # schema 4: a late append is stamped
        other.rollback()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        trigger = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
            (f'"{schema}".eskit_events', "eskit_events_append_first"),
        ).fetchone()
    assert trigger is not None
