"""Racing enrolments never oversubscribe a course nor exceed a student's limit.

Threads (every store) and spawned processes (SQLite file, PostgreSQL) enrol at
random through read -> decide -> conditional append. A deterministic control
case shows the same race oversubscribes without the condition, so these tests
can see the bug they guard against.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    AppendCondition,
    AppendConditionFailed,
    EventStore,
    InMemoryEventStore,
    NewEvent,
    SQLiteEventStore,
)
from tests.conftest import new_schema_name
from tests.dcb.enrolment import (
    CAPACITY,
    decide,
    enrolled_count,
    enrolment_query,
    run_worker,
    violations,
)

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], EventStore]]:
    """A function opening (another handle on) one fresh store."""
    if request.param == "memory":
        store = InMemoryEventStore()
        yield lambda: store
        return
    if request.param == "sqlite":
        path = tmp_path / "events.db"
        SQLiteEventStore(path).close()
        yield lambda: SQLiteEventStore(path)
        return
    dsn = request.getfixturevalue("postgres_dsn")
    from eskit.stores.postgres import PostgresEventStore

    schema = new_schema_name()
    PostgresEventStore(dsn, schema=schema).close()
    yield lambda: PostgresEventStore(dsn, schema=schema, pool_size=4)


def _threads(store: EventStore, count: int, tries: int, seed: int) -> Counter[str]:
    totals: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            outcome = run_worker(store, seed + n, tries)
        except BaseException as exc:
            errors.append(exc)
            return
        with lock:
            totals.update(outcome)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return totals


def test_racing_threads_never_oversubscribe(opener: Callable[[], EventStore]) -> None:
    store = opener()
    try:
        outcomes = _threads(store, count=8, tries=25, seed=1)
        assert violations(store) == []
        assert outcomes["gave up"] == 0
        # The limits were reached, so the race was real: 30 seats, 36 places.
        assert outcomes["full"] + outcomes["limit"] > 0
        assert enrolled_count(store) == outcomes["enrolled"] >= 2 * CAPACITY
    finally:
        store.close()


def _process_worker(kind: str, target: str, schema: str, seed: int, results: Any) -> None:
    try:
        if kind == "sqlite":
            store: EventStore = SQLiteEventStore(target)
        else:
            from eskit.stores.postgres import PostgresEventStore

            store = PostgresEventStore(target, schema=schema, setup=False, pool_size=2)
        with store:
            results.put(("ok", dict(_threads(store, count=2, tries=10, seed=seed))))
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_racing_processes_never_oversubscribe(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        target, schema = str(tmp_path / "events.db"), ""
        store: EventStore = SQLiteEventStore(target)
    else:
        from eskit.stores.postgres import PostgresEventStore

        target, schema = request.getfixturevalue("postgres_dsn"), new_schema_name()
        store = PostgresEventStore(target, schema=schema)
    results = SPAWN.Queue()
    workers = [SPAWN.Process(target=_process_worker, args=(kind, target, schema, 100 + n * 10,
                                                           results)) for n in range(3)]
    for w in workers:
        w.start()
    try:
        mine = _threads(store, count=2, tries=10, seed=7)  # and the parent races too
        reports = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(30)
        assert [r for r in reports if r[0] != "ok"] == []
        enrolled = mine["enrolled"] + sum(r[1].get("enrolled", 0) for r in reports)
        assert violations(store) == []
        assert enrolled_count(store) == enrolled >= 2 * CAPACITY
    finally:
        store.close()


@pytest.mark.parametrize("conditional", [True, False])
def test_the_last_seat_goes_to_exactly_one_of_the_racers(
    opener: Callable[[], EventStore], conditional: bool
) -> None:
    """Everyone reads first (a barrier), then everyone appends: the worst interleaving.

    Without the condition every racer takes the last seat: the control case that
    shows the race tests can see an oversubscription.
    """
    store = opener()
    try:
        for n in range(CAPACITY - 1):
            store.append(f"e{n}", [NewEvent("Enrolled", {"course": "c", "student": f"x{n}"},
                                            tags=("course:c", f"student:x{n}"))])
        racers = 5
        barrier = threading.Barrier(racers)
        wins: list[str] = []

        def race(student: str) -> None:
            query = enrolment_query("c", student)
            read = store.read_events(query)
            assert decide(read.events, "c", student) is None
            barrier.wait()
            try:
                store.append(f"enrolment-{uuid.uuid4()}", [
                    NewEvent("Enrolled", {"course": "c", "student": student},
                             tags=("course:c", f"student:{student}"))
                ], condition=AppendCondition(query, read.position) if conditional else None)
                wins.append(student)
            except AppendConditionFailed:
                pass

        threads = [threading.Thread(target=race, args=(f"r{n}",)) for n in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if conditional:
            assert len(wins) == 1
            assert violations(store) == []
        else:
            assert len(wins) == racers
            assert violations(store) == [f"course c has {CAPACITY - 1 + racers} > {CAPACITY}"]
    finally:
        store.close()
