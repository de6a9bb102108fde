"""DCB conditions and tags on appends inside the caller's transaction (``in_transaction``).

One set of cases, run against every store that has ``in_transaction`` through the
``backend`` fixture: SQLite, PostgreSQL (sync) and PostgreSQL (async, its coroutines
run on a loop thread). Reads and store-owned appends go through a sync store on the
same file or schema; the caller's transactions through the backend.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    NO_STREAM,
    AppendCondition,
    AppendConditionFailed,
    AppendNotFirstWriteError,
    AppendResult,
    ConcurrencyError,
    EventStore,
    InvalidInputError,
    NewEvent,
    Query,
    SQLiteEventStore,
)
from tests.aio.test_async_contract import LoopThread, loop_thread
from tests.conftest import new_schema_name

__all__ = ["loop_thread"]  # a fixture, imported for pytest to find

COURSE = Query.of(types=["Enrolled"], tags=["course:c1"])


def _enrol(student: str, event_id: uuid.UUID | None = None) -> NewEvent:
    kwargs: dict[str, Any] = {} if event_id is None else {"event_id": event_id}
    return NewEvent("Enrolled", {"student": student},
                    tags=("course:c1", f"student:{student}"), **kwargs)


class Tx:
    """The caller's open transaction: ``append`` goes through ``in_transaction``."""

    def __init__(self, append: Callable[..., AppendResult]) -> None:
        self.append = append


class Backend:
    """A store with ``in_transaction`` and a way to open a caller's transaction."""

    store: EventStore  # sync: reads and store-owned appends

    def transaction(self) -> AbstractContextManager[Tx]:
        """Commits on a clean exit, rolls back if the block raises."""
        raise NotImplementedError

    def close(self) -> None:
        self.store.close()


class SQLiteBackend(Backend):
    def __init__(self, path: Path, begin: str = "BEGIN IMMEDIATE") -> None:
        self.store = SQLiteEventStore(path)
        self.begin = begin  # "BEGIN": deferred, the append's insert takes the write lock

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        assert isinstance(self.store, SQLiteEventStore)
        conn = sqlite3.connect(self.store.path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(self.begin)
            tx = self.store.in_transaction(conn)
            try:
                yield Tx(tx.append)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()


class PostgresBackend(Backend):
    def __init__(self, dsn: str) -> None:
        from eskit.stores.postgres import PostgresEventStore

        self.dsn = dsn
        self.store = PostgresEventStore(dsn, schema=new_schema_name())

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        import psycopg

        with psycopg.connect(self.dsn) as conn, conn.transaction():
            yield Tx(self.store.in_transaction(conn).append)  # type: ignore[attr-defined]


class AsyncPostgresBackend(PostgresBackend):
    def __init__(self, dsn: str, loop: LoopThread) -> None:
        super().__init__(dsn)
        self.loop = loop
        from eskit.aio import AsyncPostgresEventStore

        self.inner = loop.run(AsyncPostgresEventStore.open(dsn, schema=self.store.schema))  # type: ignore[attr-defined]

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        import psycopg

        loop = self.loop
        conn = loop.run(psycopg.AsyncConnection.connect(self.dsn))
        try:
            tx = self.inner.in_transaction(conn)

            def append(*args: Any, **kwargs: Any) -> AppendResult:
                return loop.run(tx.append(*args, **kwargs))

            try:
                yield Tx(append)
            except BaseException:
                loop.run(conn.rollback())
                raise
            loop.run(conn.commit())
        finally:
            loop.run(conn.close())

    def close(self) -> None:
        self.loop.run(self.inner.close())
        super().close()


@pytest.fixture(params=["sqlite", "sqlite-deferred", "postgres", "postgres-async"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made: Backend
    if request.param == "sqlite":
        made = SQLiteBackend(tmp_path / "events.db")
    elif request.param == "sqlite-deferred":
        made = SQLiteBackend(tmp_path / "events.db", "BEGIN")
    elif request.param == "postgres":
        made = PostgresBackend(request.getfixturevalue("postgres_dsn"))
    else:
        made = AsyncPostgresBackend(request.getfixturevalue("postgres_dsn"),
                                    request.getfixturevalue("loop_thread"))
    try:
        yield made
    finally:
        made.close()


def test_a_condition_that_holds_commits_the_events_with_their_tags(backend: Backend) -> None:
    store = backend.store
    store.append("noise", [NewEvent("Other", tags=("course:c1",))])  # not Enrolled
    read = store.read_events(COURSE)
    with backend.transaction() as tx:
        result = tx.append("enrolment-1", [_enrol("s1")],
                           condition=AppendCondition(COURSE, read.position))
        tx.append("audit", [NewEvent("Logged", tags=("audit:1",))])
        assert store.read_stream("enrolment-1") == []  # not committed yet
    assert [e.tags for e in result.events] == [("course:c1", "student:s1")]
    assert [e.tags for e in store.read_stream("enrolment-1")] == [("course:c1", "student:s1")]
    assert [e.tags for e in store.read_all()] == [
        ("course:c1",), ("course:c1", "student:s1"), ("audit:1",)]
    assert [e.event_id for e in store.read_events(COURSE).events] == [result.events[0].event_id]


def test_conditional_appends_in_a_transaction_keep_the_hash_chain(backend: Backend) -> None:
    from eskit.stores.verify import verify_store

    store = backend.store
    store.append("enrolment-1", [_enrol("s0")])
    for n in (1, 2):
        read = store.read_events(COURSE)
        with backend.transaction() as tx:
            tx.append("enrolment-1", [_enrol(f"s{n}")],
                      condition=AppendCondition(COURSE, read.position))
            tx.append("audit", [NewEvent("Logged", {"n": n})])
    report = verify_store(store)  # type: ignore[arg-type]
    assert report.ok, report.problems
    assert (report.events, report.unchained) == (5, 0)


def test_a_failed_condition_raises_the_same_error_and_the_transaction_writes_nothing(
    backend: Backend,
) -> None:
    store = backend.store
    read = store.read_events(COURSE)
    store.append("enrolment-0", [_enrol("s0")])  # matches: came after the read
    before = list(store.read_all())
    condition = AppendCondition(COURSE, read.position)

    def transaction() -> None:
        with backend.transaction() as tx:
            if not first_write:  # an earlier write of the transaction: dropped with it
                tx.append("audit", [NewEvent("Logged")])
            tx.append("enrolment-1", [_enrol("s1")], condition=condition)
            tx.append("audit", [NewEvent("Logged")])  # pragma: no cover - never reached

    first_write = isinstance(backend, PostgresBackend)  # there it must come first
    with pytest.raises(AppendConditionFailed) as caught:
        transaction()
    assert caught.value.condition is condition
    assert isinstance(caught.value, ConcurrencyError)
    assert list(store.read_all()) == before
    assert store.head_version("enrolment-1") == 0
    assert store.head_version("audit") == 0


def test_after_a_failed_condition_the_transaction_goes_on_without_that_append(
    backend: Backend,
) -> None:
    store = backend.store
    read = store.read_events(COURSE)
    store.append("enrolment-0", [_enrol("s0")])
    with backend.transaction() as tx:
        with pytest.raises(AppendConditionFailed):
            tx.append("enrolment-1", [_enrol("s1")],
                      condition=AppendCondition(COURSE, read.position))
        tx.append("audit", [NewEvent("Logged", tags=("why:full",))])
    assert store.head_version("enrolment-1") == 0
    assert [e.tags for e in store.read_stream("audit")] == [("why:full",)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL: see below
def test_the_condition_sees_the_transactions_own_earlier_appends(backend: Backend) -> None:
    store = backend.store
    read = store.read_events(COURSE)
    with backend.transaction() as tx:
        tx.append("enrolment-0", [_enrol("s0")])
        with pytest.raises(AppendConditionFailed):
            tx.append("enrolment-1", [_enrol("s1")],
                      condition=AppendCondition(COURSE, read.position))
    assert [e.aggregate_id for e in store.read_all()] == ["enrolment-0"]


@pytest.mark.parametrize("backend", ["postgres", "postgres-async"], indirect=True)
def test_postgres_refuses_a_conditional_append_that_is_not_the_first_write(
    backend: Backend,
) -> None:
    store = backend.store
    with backend.transaction() as tx:
        tx.append("audit", [NewEvent("Logged")])
        with pytest.raises(AppendNotFirstWriteError):
            tx.append("enrolment-1", [_enrol("s1")], condition=AppendCondition(COURSE))
    assert store.head_version("enrolment-1") == 0
    assert store.head_version("audit") == 1


def test_condition_and_expected_version_must_both_hold(backend: Backend) -> None:
    store = backend.store
    store.append("enrolment-1", [NewEvent("Opened")])
    with pytest.raises(ConcurrencyError) as caught, backend.transaction() as tx:
        tx.append("enrolment-1", [_enrol("s1")], NO_STREAM, condition=AppendCondition(COURSE))
    assert not isinstance(caught.value, AppendConditionFailed)
    with backend.transaction() as tx:
        result = tx.append("enrolment-1", [_enrol("s1")], 1, condition=AppendCondition(COURSE))
    assert result.version == 2


def test_a_retried_conditional_append_is_a_duplicate_not_a_failure(backend: Backend) -> None:
    store = backend.store
    event_id = uuid.uuid4()
    condition = AppendCondition(COURSE, store.read_events(COURSE).position)
    with backend.transaction() as tx:
        first = tx.append("enrolment-1", [_enrol("s1", event_id)], condition=condition)
    with backend.transaction() as tx:
        again = tx.append("enrolment-1", [_enrol("s1", event_id)], condition=condition)
    assert again.duplicate
    assert not first.duplicate
    assert again.position == first.position
    assert len(list(store.read_all())) == 1


def test_a_bad_condition_is_refused_before_the_connection_is_touched(backend: Backend) -> None:
    with backend.transaction() as tx:
        with pytest.raises(InvalidInputError):
            tx.append("s", [_enrol("s1")], condition="course:c1")
        with pytest.raises(InvalidInputError):
            tx.append("s", [NewEvent("E", tags=("",))])
    assert list(backend.store.read_all()) == []


def test_two_transactions_whose_conditions_overlap_let_exactly_one_win(
    backend: Backend,
) -> None:
    store = backend.store
    store.append("noise", [NewEvent("Other")])
    read = store.read_events(COURSE)
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def enrol(student: str) -> None:
        try:
            start.wait(10)
            with backend.transaction() as tx:
                tx.append(f"enrolment-{student}", [_enrol(student)],
                          condition=AppendCondition(COURSE, read.position))
                time.sleep(0.2)  # hold the transaction open: the other must wait or fail
            outcomes[student] = "won"
        except AppendConditionFailed as exc:
            outcomes[student] = exc
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            outcomes[student] = repr(exc)

    threads = [threading.Thread(target=enrol, args=(s,)) for s in ("s1", "s2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(str(type(v).__name__) if v != "won" else "won" for v in outcomes.values()) == [
        "AppendConditionFailed", "won"], outcomes
    assert len(store.read_events(COURSE).events) == 1
