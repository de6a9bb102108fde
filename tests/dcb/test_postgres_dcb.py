"""PostgreSQL's DCB locking: conditional appends wait only for appends they could
conflict with, and never miss one that is in flight.

A raw connection runs eskit's own append statement in a transaction it keeps
open: an append in flight, its row not yet visible to anybody.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from eskit import ANY, AppendCondition, AppendConditionFailed, NewEvent, Query
from eskit.stores.arguments import prepare_batch
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_schema import append_params
from tests.conftest import new_schema_name

WAIT = 0.5  # seconds a blocked append is given to show that it waits


@pytest.fixture
def store(postgres_dsn: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore(postgres_dsn, schema=new_schema_name()) as store:
        yield store


@pytest.fixture
def in_flight(store: PostgresEventStore, postgres_dsn: str) -> Iterator[Any]:
    """``start(stream, tags)``: an append of one event, left uncommitted; commit with
    ``.commit()`` on the returned connection."""
    conns: list[psycopg.Connection[Any]] = []

    def start(stream: str, tags: tuple[str, ...], event_type: str = "Enrolled"
              ) -> psycopg.Connection[Any]:
        conn = psycopg.connect(postgres_dsn)
        conns.append(conn)
        batch = prepare_batch(stream, [NewEvent(event_type, tags=tags)],
                              registry=store.registry, max_event_bytes=store.max_event_bytes)
        conn.execute(store.sql.append, append_params(stream, ANY, batch))
        return conn

    yield start
    for conn in conns:
        conn.close()


def _in_thread(action: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_conditional_append_waits_for_a_matching_append_in_flight_then_fails(
    store: PostgresEventStore, in_flight: Any
) -> None:
    query = Query.of(types=["Enrolled"], tags=["course:c1"])
    read = store.read_events(query)
    writer = in_flight("w", ("course:c1", "student:s1"))
    thread, outcome = _in_thread(lambda: store.append(
        "c", [NewEvent("Enrolled", tags=("course:c1", "student:s2"))],
        condition=AppendCondition(query, read.position),
    ))
    thread.join(WAIT)
    assert thread.is_alive(), "the conditional append did not wait for the one in flight"
    writer.commit()
    thread.join(30)
    assert isinstance(outcome[0], AppendConditionFailed)
    assert [e.aggregate_id for e in store.read_events(query).events] == ["w"]


def test_conditional_append_passes_once_a_matching_append_in_flight_rolls_back(
    store: PostgresEventStore, in_flight: Any
) -> None:
    query = Query.of(tags=["course:c1"])
    read = store.read_events(query)
    writer = in_flight("w", ("course:c1",))
    thread, outcome = _in_thread(lambda: store.append(
        "c", [NewEvent("Enrolled", tags=("course:c1",))],
        condition=AppendCondition(query, read.position),
    ))
    thread.join(WAIT)
    assert thread.is_alive()
    writer.rollback()
    thread.join(30)
    assert not isinstance(outcome[0], BaseException), outcome
    assert [e.aggregate_id for e in store.read_events(query).events] == ["c"]


def test_non_overlapping_appends_do_not_wait_for_each_other(
    store: PostgresEventStore, in_flight: Any
) -> None:
    writer = in_flight("w", ("course:c1", "student:s1"))
    started = time.monotonic()
    # Another course and another student: a conditional append goes straight through.
    query = Query.of(types=["Enrolled"], tags=["course:c2"])
    store.append("c", [NewEvent("Enrolled", tags=("course:c2", "student:s2"))],
                 condition=AppendCondition(query, store.read_events(query).position))
    # Plain appends never wait for each other, not even on the same tags.
    store.append("p", [NewEvent("Enrolled", tags=("course:c1", "student:s1"))])
    assert time.monotonic() - started < WAIT
    writer.commit()


def test_a_type_only_condition_waits_for_an_untagged_append_in_flight(
    store: PostgresEventStore, in_flight: Any
) -> None:
    query = Query.of(types=["Closed"])
    read = store.read_events(query)
    writer = in_flight("w", (), event_type="Closed")
    thread, outcome = _in_thread(lambda: store.append(
        "c", [NewEvent("Other")], condition=AppendCondition(query, read.position),
    ))
    thread.join(WAIT)
    assert thread.is_alive()
    writer.commit()
    thread.join(30)
    assert isinstance(outcome[0], AppendConditionFailed)


def test_hard_delete_removes_the_tags_of_the_stream(
    store: PostgresEventStore, postgres_dsn: str
) -> None:
    store.append("gone", [NewEvent("E", tags=("person:ada", "x"))])
    store.append("kept", [NewEvent("E", tags=("x",))])
    store.delete_stream("gone", hard=True)
    with psycopg.connect(postgres_dsn) as conn:
        tags = conn.execute(
            f'SELECT tag FROM "{store.schema}".eskit_event_tags ORDER BY tag'
        ).fetchall()
    assert tags == [("x",)]
    assert [e.aggregate_id for e in store.read_events(Query.of(tags=["x"])).events] == ["kept"]


def test_a_read_is_not_held_back_by_an_append_in_flight_it_cannot_match(
    store: PostgresEventStore, in_flight: Any
) -> None:
    # The append in flight has the lower transaction id: the read horizon stops below
    # it, but the query's keys are not its keys, so the read sees past it.
    writer = in_flight("w", ("course:c1",))
    mine = store.append("m", [NewEvent("Enrolled", tags=("course:c2",))])
    query = Query.of(types=["Enrolled"], tags=["course:c2"])
    assert store.head_position() < mine.position  # what the horizon alone would give
    read = store.read_events(query)
    assert read.position >= mine.position
    assert [e.aggregate_id for e in read.events] == ["m"]
    store.append("n", [NewEvent("Enrolled", tags=("course:c2",))],
                 condition=AppendCondition(query, read.position))  # no spurious failure
    # A query the append in flight could match stays below it.
    other = Query.of(tags=["course:c1"])
    held = store.read_events(other)
    assert held.position < mine.position
    writer.commit()
    with pytest.raises(AppendConditionFailed):
        store.append("x", [NewEvent("Enrolled", tags=("course:c1",))],
                     condition=AppendCondition(other, held.position))
