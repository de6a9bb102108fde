"""Dropped PostgreSQL connections, fork() and monitoring rights, against the real server.

Every test names its connections with an application_name of its own and kills
only those backends: other test sessions share the server.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from eskit import NewEvent, StoreError, StoreUnavailableError
from eskit.aio.postgres import AsyncPostgresEventStore
from eskit.projections import PostgresTarget, Projection, ProjectionRunner, RetryPolicy, Tx
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_connection import connection_lost
from tests.conftest import new_schema_name


def _named(dsn: str) -> tuple[str, str]:
    app = f"eskit-test-{uuid.uuid4().hex[:10]}"
    return make_conninfo(dsn, application_name=app), app


def _terminate(dsn: str, app: str, *, waiting_on_lock: bool = False) -> int:
    """Terminate this test's backends (by application_name); how many were killed."""
    extra = " AND wait_event_type = 'Lock'" if waiting_on_lock else ""
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
            "FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
            + extra,
            (app,),
        ).fetchone()
    return int(row[0])


def _eventually(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def named(postgres_dsn: str) -> tuple[str, str]:
    return _named(postgres_dsn)


# ----------------------------------------------------------------- the store's pool


def test_the_first_calls_after_the_server_terminates_pooled_connections_succeed(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, app = named
    store = PostgresEventStore(dsn, schema=new_schema_name(), pool_size=4)
    try:
        store.append("s", [NewEvent("E")], 0)
        assert _terminate(postgres_dsn, app) >= 1
        # Every kind of call, each on what would be a dead pooled connection.
        assert store.head_version("s") == 1
        store.append("s", [NewEvent("E")], 1)
        assert [e.version for e in store.read_stream("s")] == [1, 2]
        assert _terminate(postgres_dsn, app) >= 1
        _eventually(lambda: len(list(store.read_all())) == 2)
        assert store.list_streams()[0].version == 2
    finally:
        store.close()


def test_a_snapshot_store_read_after_terminated_connections_succeeds(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    from eskit import PostgresSnapshotStore

    dsn, app = named
    store = PostgresEventStore(dsn, schema=new_schema_name())
    try:
        store.append("s", [NewEvent("E")], 0)
        assert _terminate(postgres_dsn, app) >= 1
        PostgresSnapshotStore(store)  # its first query runs on the dead connection
    finally:
        store.close()


def test_an_append_killed_while_it_waits_is_retried_and_stored_exactly_once(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, app = named
    store = PostgresEventStore(dsn, schema=new_schema_name())
    result: list[Any] = []
    try:
        with psycopg.connect(postgres_dsn) as blocker:
            # The append's INSERT waits on this lock; its backend is killed while it waits.
            blocker.execute(f'LOCK TABLE "{store.schema}".eskit_events IN EXCLUSIVE MODE')
            writer = threading.Thread(
                target=lambda: result.append(store.append("s", [NewEvent("E")] * 1, 0))
            )
            writer.start()
            _eventually(lambda: _terminate(postgres_dsn, app, waiting_on_lock=True) == 1)
            time.sleep(0.2)  # the retry now waits on the lock too
        writer.join(timeout=15)
        assert not writer.is_alive()
        assert len(result) == 1
        assert not result[0].duplicate
        assert [e.event_id for e in store.read_stream("s")] == [result[0].events[0].event_id]
    finally:
        store.close()


class _DropAfterCommit:
    """A pool whose first append commits, then loses its connection before the reply."""

    def __init__(self, store: PostgresEventStore, admin_dsn: str) -> None:
        self._pool = store.pool
        self._sql = store.sql.append
        self._admin_dsn = admin_dsn
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._pool.connection() as conn:
            yield _Conn(conn, self)


class _Conn:
    def __init__(self, conn: psycopg.Connection[Any], owner: _DropAfterCommit) -> None:
        self._conn, self._owner = conn, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, query: Any, params: Any = None) -> Any:
        cursor = self._conn.execute(query, params)
        if query is self._owner._sql and not self._owner.dropped:
            self._owner.dropped += 1
            cursor.fetchall()  # committed (autocommit): only the acknowledgement is lost
            with psycopg.connect(self._owner._admin_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(%s, 5000)", (self._conn.info.backend_pid,)
                )
            return self._conn.execute("SELECT 1")  # raises: the connection is gone
        return cursor


def test_an_append_whose_acknowledgement_was_lost_is_not_stored_twice(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    store = PostgresEventStore(named[0], schema=new_schema_name())
    try:
        store.append("s", [NewEvent("First")], 0)
        flaky = _DropAfterCommit(store, postgres_dsn)
        store.pool = flaky  # type: ignore[assignment]
        result = store.append("s", [NewEvent("A"), NewEvent("B")], 1)
        assert flaky.dropped == 1
        # The retry met its own event ids: the stored batch is returned, once.
        assert result.duplicate
        assert [e.event_type for e in store.read_stream("s")] == ["First", "A", "B"]
        assert [e.version for e in result.events] == [2, 3]
    finally:
        store.pool = flaky._pool
        store.close()


def test_an_unreachable_server_is_a_store_unavailable_error() -> None:
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        PostgresEventStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1)


def test_a_server_error_that_is_not_a_lost_connection_is_not_retried() -> None:
    assert connection_lost(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert connection_lost(psycopg.errors.AdminShutdown("terminating connection"))
    assert not connection_lost(psycopg.errors.QueryCanceled("canceling statement"))
    assert not connection_lost(psycopg.errors.UniqueViolation("duplicate key"))
    assert not connection_lost(StoreError("x"))


def test_the_async_store_retries_after_the_server_terminates_its_connections(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, app = named

    async def run() -> None:
        async with AsyncPostgresEventStore(dsn, schema=new_schema_name()) as store:
            await store.append("s", [NewEvent("E")], 0)
            assert _terminate(postgres_dsn, app) >= 1
            assert await store.head_version("s") == 1
            await store.append("s", [NewEvent("E")], 1)
            assert _terminate(postgres_dsn, app) >= 1
            assert [e.version for e in await store.read_stream("s")] == [1, 2]

    asyncio.run(run())


# ----------------------------------------------------------------- subscriptions


def test_a_subscription_resumes_and_listens_again_after_its_connections_are_killed(
    postgres_dsn: str, named: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    dsn, app = named
    store = PostgresEventStore(dsn, schema=new_schema_name())
    writer = PostgresEventStore(postgres_dsn, schema=store.schema, setup=False)
    # A 30 s poll: every wake-up within the test must come from LISTEN/NOTIFY, so
    # delivery after the kill proves the subscription listens again.
    subscription = store.subscribe(poll_interval=30.0)
    received: list[int] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for event in subscription:
                received.append(event.event_data["n"])
                if len(received) == 6:
                    subscription.stop()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    caplog.set_level(logging.INFO, logger="eskit.subscription")
    follower = threading.Thread(target=follow)
    follower.start()
    try:
        for n in range(3):
            writer.append("s", [NewEvent("E", {"n": n})], n)
        _eventually(lambda: len(received) == 3)
        assert _terminate(postgres_dsn, app) >= 2  # the pool's and the LISTEN connection
        _eventually(lambda: any(r.levelno == logging.INFO for r in caplog.records))
        for n in range(3, 6):
            writer.append("s", [NewEvent("E", {"n": n})], n)
        follower.join(timeout=15)
        assert not follower.is_alive(), "the subscription stopped listening"
        assert not errors
        assert received == [0, 1, 2, 3, 4, 5]  # nothing lost, nothing twice
        ours = [r for r in caplog.records if r.name == "eskit.subscription"]
        assert any(r.levelno == logging.WARNING for r in ours)
        assert any(r.levelno == logging.INFO for r in ours)
        assert len(ours) < 6  # reconnects are logged, events are not
    finally:
        subscription.stop()
        follower.join(timeout=5)
        writer.close()
        store.close()


def test_a_subscription_waits_out_an_unreachable_store_and_misses_nothing(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=new_schema_name())
    store.append("s", [NewEvent("E", {"n": 0})], 0)
    real = store._read_all_rows
    outage = threading.Event()
    outage.set()
    failures = []

    def flaky(after: int, limit: int) -> list[Any]:
        if outage.is_set() and after != 0:
            failures.append(after)
            if len(failures) == 3:
                outage.clear()
            raise StoreUnavailableError("the server is away")
        return real(after, limit)

    store._read_all_rows = flaky  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="eskit.subscription")
    subscription = store.subscribe(poll_interval=0.05)
    got = []
    try:
        for event in subscription:
            got.append(event.event_data["n"])
            if len(got) == 1:
                store.append("s", [NewEvent("E", {"n": 1}), NewEvent("E", {"n": 2})], 1)
            if len(got) == 3:
                break
        assert got == [0, 1, 2]
        assert len(failures) == 3
        levels = [r.levelno for r in caplog.records if r.name == "eskit.subscription"]
        assert levels == [logging.WARNING, logging.INFO]  # one each per outage
    finally:
        store.close()


# ----------------------------------------------------------------- PostgresTarget


class _Count(Projection):
    name = "conn_count"

    def setup(self, tx: Tx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS conn_count (stream TEXT PRIMARY KEY, n INT)")

    def handle_E(self, event: Any, tx: Tx) -> None:
        tx.execute(
            "INSERT INTO conn_count VALUES (%s, 1) ON CONFLICT (stream) "
            "DO UPDATE SET n = conn_count.n + 1",
            (str(event.aggregate_id),),
        )


def _count(target: PostgresTarget) -> int:
    with target.transaction() as conn:
        row = conn.execute("SELECT coalesce(sum(n), 0) FROM conn_count").fetchone()
    return int(row[0])


def test_a_postgres_target_reconnects_after_its_connection_is_terminated(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, app = named
    schema = new_schema_name()
    store = PostgresEventStore(postgres_dsn, schema=schema)
    target = PostgresTarget(dsn, schema=schema)
    try:
        store.append("s", [NewEvent("E")], 0)
        _eventually(lambda: ProjectionRunner(store, _Count(), target).run_until_caught_up() == 1)
        assert _terminate(postgres_dsn, app) == 1
        store.append("s", [NewEvent("E"), NewEvent("E")], 1)
        handled = 0

        def caught_up() -> bool:
            nonlocal handled
            handled += ProjectionRunner(store, _Count(), target).run_until_caught_up()
            return handled == 2

        _eventually(caught_up)
        assert _count(target) == 3  # every event exactly once
        assert target.states("conn_count")[0].events_handled == 3
    finally:
        target.close()
        store.close()


class _DropsOnce(_Count):
    """Its handler loses the target's connection at the second event, twice.

    Twice: the runner first retries a failing batch event by event, and only a
    failure of the lone event counts as an attempt.
    """

    name = "conn_drops_once"

    def __init__(self, admin_dsn: str) -> None:
        super().__init__()
        self.admin_dsn = admin_dsn
        self.dropped = 0

    def handle_E(self, event: Any, tx: Tx) -> None:
        if event.version == 2 and self.dropped < 2:
            self.dropped += 1
            with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(%s, 5000)", (tx.connection.info.backend_pid,)
                )
        super().handle_E(event, tx)


def test_a_dropped_target_connection_is_not_blamed_on_the_event_and_a_live_runner_resumes(
    postgres_dsn: str,
) -> None:
    schema = new_schema_name()
    store = PostgresEventStore(postgres_dsn, schema=schema)
    target = PostgresTarget(postgres_dsn, schema=schema)
    projection = _DropsOnce(postgres_dsn)
    # One attempt, then park: were the drop taken for the handler's failure, the
    # innocent event would be parked at once.
    runner = ProjectionRunner(store, projection, target, on_failure="park",
                              retry=RetryPolicy(max_attempts=1), poll_interval=0.05)
    try:
        store.append("s", [NewEvent("E") for _ in range(3)], 0)
        runner.setup()
        worker = threading.Thread(target=runner.run)
        worker.start()
        _eventually(lambda: _count(target) == 3)
        runner.stop()
        worker.join(timeout=10)
        assert not worker.is_alive()
        assert projection.dropped == 2
        assert target.dead_letters() == []
        (state,) = target.states("conn_drops_once")
        assert state.events_handled == 3
        assert state.last_error is None
    finally:
        runner.stop()
        target.close()
        store.close()


def test_a_target_transaction_whose_connection_drops_is_not_replayed(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, app = named
    target = PostgresTarget(dsn, schema=new_schema_name())
    runs = 0
    try:
        def drop_mid_transaction() -> None:
            nonlocal runs
            with target.transaction() as conn:
                runs += 1
                conn.execute("CREATE TABLE once (n INT)")
                _terminate(postgres_dsn, app)
                conn.execute("INSERT INTO once VALUES (1)")

        with pytest.raises(StoreUnavailableError):
            drop_mid_transaction()
        assert runs == 1
        with target.transaction() as conn:  # the next transaction has a new connection
            assert conn.execute("SELECT to_regclass('once')").fetchone() == (None,)
    finally:
        target.close()


# ----------------------------------------------------------------- fork()


def _child_appends(store: PostgresEventStore, stream: str, ids: list[str], done: Any) -> None:
    # Runs in a forked child with the parent's store object.
    acked = []
    for event_id in ids:
        store.append(stream, [NewEvent("E", {"by": os.getpid()}, event_id=uuid.UUID(event_id))])
        store.append("shared", [NewEvent("E", {"by": os.getpid()})])
        acked.append(event_id)
    store.close()  # a gunicorn worker shutting down: must not end the parent's sessions
    done.put((stream, acked))


def test_forked_children_and_the_parent_append_through_one_store_and_lose_nothing(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, app = named
    store = PostgresEventStore(dsn, schema=new_schema_name(), pool_size=4)
    store.append("shared", [NewEvent("E")])  # the pool holds an open connection now
    parent_pid_backends = _backend_pids(postgres_dsn, app)
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    per_child = 15
    children = [
        ctx.Process(
            target=_child_appends,
            args=(store, f"child-{c}", [str(uuid.uuid4()) for _ in range(per_child)], done),
        )
        for c in range(3)
    ]
    try:
        for child in children:
            child.start()
        parent_acked = []
        for _ in range(per_child):  # the parent keeps appending meanwhile
            parent_acked.append(store.append("parent", [NewEvent("E")]).events[0].event_id)
            store.append("shared", [NewEvent("E")])
        acked = dict(done.get(timeout=60) for _ in children)
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
        # The parent's own sessions survived the children (and their close()).
        store.append("parent", [NewEvent("E")])
        assert set(parent_pid_backends) <= set(_backend_pids(postgres_dsn, app))
        assert len(acked) == len(children)
        for stream, ids in acked.items():
            assert [str(e.event_id) for e in store.read_stream(stream)] == ids
        assert [e.event_id for e in store.read_stream("parent")][:per_child] == parent_acked
        shared = store.read_stream("shared")
        assert len(shared) == 1 + per_child + 3 * per_child
        assert [e.version for e in shared] == list(range(1, len(shared) + 1))
        assert len({e.event_id for e in shared}) == len(shared)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
        store.close()


def _child_uses_target(target: PostgresTarget, done: Any) -> None:
    with target.transaction() as conn:
        pid = conn.info.backend_pid
        conn.execute("INSERT INTO forked VALUES (%s)", (os.getpid(),))
    target.close()
    done.put(pid)


def test_a_postgres_target_used_in_a_forked_child_connects_afresh(postgres_dsn: str) -> None:
    target = PostgresTarget(postgres_dsn, schema=new_schema_name())
    with target.transaction() as conn:
        conn.execute("CREATE TABLE forked (pid INT)")
        parent_backend = conn.info.backend_pid
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    child = ctx.Process(target=_child_uses_target, args=(target, done))
    try:
        child.start()
        assert done.get(timeout=30) != parent_backend
        child.join(timeout=10)
        assert child.exitcode == 0
        with target.transaction() as conn:  # the parent's session survived the child's close()
            assert conn.info.backend_pid == parent_backend
            assert conn.execute("SELECT count(*) FROM forked").fetchone() == (1,)
    finally:
        target.close()


def _backend_pids(dsn: str, app: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return [r[0] for r in rows]


def _child_uses_given_pool(store: PostgresEventStore, done: Any) -> None:
    try:
        store.append("s", [NewEvent("E")])
    except StoreError as exc:
        done.put(str(exc))
    else:
        done.put("no error")


def test_a_store_given_a_pool_refuses_to_run_in_a_forked_child(postgres_dsn: str) -> None:
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[Any] = ConnectionPool(
        postgres_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=True
    )
    store = PostgresEventStore(pool=pool, schema=new_schema_name())
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    child = ctx.Process(target=_child_uses_given_pool, args=(store, done))
    try:
        child.start()
        message = done.get(timeout=30)
        child.join(timeout=10)
        assert "fork()" in message
        assert "create the pool" in message
        store.append("s", [NewEvent("E")])  # the parent is unaffected
    finally:
        store.close()
        pool.close()


def _async_child(store: AsyncPostgresEventStore, ids: list[str], done: Any) -> None:
    async def run() -> list[str]:
        for event_id in ids:
            await store.append("child", [NewEvent("E", event_id=uuid.UUID(event_id))])
        await store.close()
        return ids

    done.put(asyncio.run(run()))


def test_a_forked_child_of_an_async_store_gets_its_own_connections(
    postgres_dsn: str, named: tuple[str, str]
) -> None:
    dsn, _ = named
    ctx = multiprocessing.get_context("fork")
    done = ctx.Queue()
    ids = [str(uuid.uuid4()) for _ in range(10)]

    async def run() -> None:
        async with AsyncPostgresEventStore(dsn, schema=new_schema_name()) as store:
            await store.append("parent", [NewEvent("E")])
            child = ctx.Process(target=_async_child, args=(store, ids, done))
            child.start()
            for n in range(10):
                await store.append("parent", [NewEvent("E")], n + 1)
                await asyncio.sleep(0.005)
            assert await asyncio.to_thread(done.get, timeout=60) == ids
            await asyncio.to_thread(child.join, 30)
            assert child.exitcode == 0
            assert [str(e.event_id) for e in await store.read_stream("child")] == ids
            assert await store.head_version("parent") == 11

    asyncio.run(run())


# ----------------------------------------------------------------- monitoring rights


def test_oldest_transaction_age_needs_pg_read_all_stats_and_says_so(postgres_dsn: str) -> None:
    role = f"eskit_test_role_{uuid.uuid4().hex[:8]}"
    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()  # created by the owner
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        try:
            role_dsn = make_conninfo(postgres_dsn, user=role)
            store = PostgresEventStore(role_dsn, schema=schema, setup=False)
            try:
                with psycopg.connect(postgres_dsn) as holder:
                    # An append of another role's, left open: it holds readers back.
                    holder.execute(
                        f'INSERT INTO "{schema}".eskit_events (event_id, stream_id, version,'
                        " event_type, schema_version, recorded_at, data, metadata)"
                        " VALUES (gen_random_uuid(), 's', 1, 'E', 1, now(), '{}', '{}')"
                    )
                    time.sleep(0.1)
                    with pytest.raises(StoreError, match="pg_read_all_stats"):
                        store.oldest_transaction_age()
                    admin.execute(f'GRANT pg_read_all_stats TO "{role}"')
                    assert store.oldest_transaction_age() >= 0.1
                    holder.rollback()
                assert store.oldest_transaction_age() == 0
            finally:
                store.close()
        finally:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


# ----------------------------------------------------------------- a server restart


def _restart_server() -> None:
    cluster = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"],
        check=True, timeout=60, capture_output=True,
    )


@pytest.mark.slow
def test_store_subscription_and_target_resume_after_a_server_restart(
    postgres_dsn: str,
) -> None:
    """Restarts the shared server once (a few seconds): it disturbs other sessions."""
    if not os.path.isdir("/etc/postgresql") or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the restart test needs pg_ctlcluster as root")
        pytest.skip("the restart test needs pg_ctlcluster as root")
    schema = new_schema_name()
    store = PostgresEventStore(postgres_dsn, schema=schema)
    target = PostgresTarget(postgres_dsn, schema=schema)
    subscription = store.subscribe(poll_interval=0.5)
    received: list[int] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for event in subscription:
                received.append(event.event_data["n"])
                if len(received) == 4:
                    subscription.stop()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        for n in range(2):
            store.append("s", [NewEvent("E", {"n": n})], n)
        assert ProjectionRunner(store, _Count(), target).run_until_caught_up() >= 0
        _eventually(lambda: len(received) == 2)
        _restart_server()
        for n in range(2, 4):
            store.append("s", [NewEvent("E", {"n": n})], n)
        follower.join(timeout=30)
        assert not follower.is_alive()
        assert not errors
        assert received == [0, 1, 2, 3]
        _eventually(lambda: ProjectionRunner(store, _Count(), target).run_until_caught_up() >= 0
                    and _count(target) == 4, timeout=30)
    finally:
        subscription.stop()
        follower.join(timeout=5)
        target.close()
        store.close()
