"""Reading from a hot standby: the global order holds there, and projections can use it.

A throwaway primary and a streaming hot standby (``benchmarks.replica.postgres_pair``,
from the server's own initdb and pg_basebackup). On a standby the primary's locks are
not visible, so the read horizon falls back to the snapshot xmin (see
``eskit.stores.postgres_schema``); these tests check that a reader tailing the standby
still sees every event, in the primary's order, while plain and late appenders write
concurrently on the primary, and that a transaction holding an id on the primary
holds standby readers back (the price of the fallback), never makes them skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from benchmarks.replica import PostgresPair, postgres_pair, server_binaries
from eskit import ConcurrencyError, Event, NewEvent, Projection
from eskit.aio import AsyncPostgresEventStore
from eskit.projections import PostgresTarget, ProjectionRunner, Tx
from eskit.stores.postgres import PostgresEventStore
from eskit.stores.postgres_listen import STANDBY_POLLS
from tests.conftest import new_schema_name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair() -> Iterator[PostgresPair]:
    if server_binaries() is None:
        problem = "no PostgreSQL server binaries to start a primary and a standby"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    with postgres_pair() as started:
        yield started


@pytest.fixture
def stores(pair: PostgresPair) -> Iterator[tuple[PostgresEventStore, PostgresEventStore]]:
    schema = new_schema_name()
    primary = PostgresEventStore(pair.primary, schema=schema)
    pair.wait_replayed()
    standby = PostgresEventStore(pair.standby, schema=schema, setup=False)
    yield primary, standby
    standby.close()
    primary.close()


def _append_plainly(store: PostgresEventStore, writer: int, count: int) -> None:
    for n in range(count):
        store.append(f"plain-{writer}", [NewEvent("Wrote", {"n": n})], expected_version=n)
        # Every writer also races on one shared stream: conflicts are part of the load.
        with contextlib.suppress(ConcurrencyError):
            store.append("shared-1", [NewEvent("Raced", {"writer": writer})],
                         expected_version=store.head_version("shared-1"))


def _append_late(store: PostgresEventStore, dsn: str, table: str, count: int) -> None:
    """Appends by transactions that wrote another table first (stamped late)."""
    with psycopg.connect(dsn) as conn:
        for n in range(count):
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} VALUES (%s)", (n,))
                time.sleep(0.002)  # the id is taken; let other appends commit meanwhile
                store.in_transaction(conn).append("late-1", [NewEvent("Late", {"n": n})], n)


def test_a_reader_tailing_the_standby_sees_every_event_in_the_primarys_order(
    pair: PostgresPair, stores: tuple[PostgresEventStore, PostgresEventStore]
) -> None:
    primary, standby = stores
    table = f"{primary.schema}.side_writes"
    with psycopg.connect(pair.primary, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n int)")
    writers = [threading.Thread(target=_append_plainly, args=(primary, w, 40)) for w in range(4)]
    writers.append(threading.Thread(target=_append_late,
                                    args=(primary, pair.primary, table, 40)))
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def tail() -> None:
        checkpoint = 0
        while True:
            finished = done.is_set()  # read once more after the writers are done
            for event in standby.read_all(checkpoint):
                seen.append((str(event.event_id), event.position))
                checkpoint = event.position
            if finished and checkpoint == primary.head_position():
                return
            time.sleep(0.001)

    tailer = threading.Thread(target=tail)
    tailer.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    pair.wait_replayed()
    done.set()
    tailer.join(timeout=60)
    assert not tailer.is_alive()
    expected = [(str(e.event_id), e.position) for e in primary.read_all()]
    assert len(expected) >= 4 * 40 + 40 + 40  # plain, late, and at least one shared per round
    assert seen == expected  # nothing skipped, nothing twice, the same order and positions


def test_a_transaction_holding_an_id_on_the_primary_holds_standby_readers_back(
    pair: PostgresPair, stores: tuple[PostgresEventStore, PostgresEventStore]
) -> None:
    primary, standby = stores
    primary.append("before-1", [NewEvent("Wrote")])
    with psycopg.connect(pair.primary) as holder:
        holder.execute("SELECT pg_current_xact_id()")  # an id, and no append
        after = primary.append("after-1", [NewEvent("Wrote")])
        pair.wait_replayed()
        # On the primary the horizon ignores the holder (it cannot append here: it
        # holds no lock on the events table); on the standby it cannot tell.
        assert [e.stream_id for e in primary.read_all()] == ["before-1", "after-1"]
        assert [e.stream_id for e in standby.read_all()] == ["before-1"]
        holder.rollback()
    deadline = time.monotonic() + 10
    while standby.head_position() != after.position:
        assert time.monotonic() < deadline, "the standby reader stayed held back"
        time.sleep(0.01)
    assert [e.stream_id for e in standby.read_all()] == ["before-1", "after-1"]


class _Counts(Projection):
    name = "standby.counts"

    def setup(self, tx: Tx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS standby_counts "
                   "(stream_id TEXT PRIMARY KEY, events BIGINT NOT NULL)")

    def handle_Wrote(self, event: Event, tx: Tx) -> None:
        tx.execute("INSERT INTO standby_counts AS c VALUES (%s, 1) ON CONFLICT (stream_id) "
                   "DO UPDATE SET events = c.events + 1", (event.stream_id,))


def test_a_projection_reads_the_standby_and_keeps_its_read_model_on_the_primary(
    pair: PostgresPair, stores: tuple[PostgresEventStore, PostgresEventStore]
) -> None:
    primary, standby = stores
    for n in range(30):
        primary.append(f"counted-{n % 3}", [NewEvent("Wrote", {"n": n})])
    pair.wait_replayed()
    target = PostgresTarget(pair.primary, schema=primary.schema)
    try:
        runner = ProjectionRunner(standby, _Counts(), target)
        assert runner.run_until_caught_up() == 30
        for n in range(30, 45):
            primary.append(f"counted-{n % 3}", [NewEvent("Wrote", {"n": n})])
        pair.wait_replayed()
        assert runner.run_until_caught_up() == 15  # from the checkpoint: none twice
        with psycopg.connect(pair.primary) as conn:
            rows = conn.execute(f"SELECT stream_id, events FROM {primary.schema}.standby_counts"
                                " ORDER BY stream_id").fetchall()
        assert rows == [("counted-0", 15), ("counted-1", 15), ("counted-2", 15)]
    finally:
        target.close()


def _append_soon(store: PostgresEventStore, stream: str) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(0.3),
                                              store.append(stream, [NewEvent("Wrote")])))
    thread.start()
    return thread


def test_a_subscription_on_the_standby_polls_for_new_events_instead_of_failing(
    stores: tuple[PostgresEventStore, PostgresEventStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A standby refuses LISTEN; the subscription then polls (once logged at INFO)."""
    primary, standby = stores
    primary.append("first-1", [NewEvent("Wrote")])
    caplog.set_level(logging.INFO, logger="eskit")
    writer = _append_soon(primary, "live-1")
    began = time.monotonic()
    got: list[str] = []
    events = iter(standby.subscribe(poll_interval=0.1))
    try:
        for event in events:
            got.append(event.stream_id)
            if len(got) == 2:
                break
    finally:
        events.close()  # type: ignore[attr-defined]  # a generator: closes its waiter
        writer.join()
    assert got == ["first-1", "live-1"]
    assert time.monotonic() - began < 10
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == [
        STANDBY_POLLS]


def test_an_async_subscription_on_the_standby_polls_too(
    pair: PostgresPair, stores: tuple[PostgresEventStore, PostgresEventStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, _ = stores
    primary.append("first-1", [NewEvent("Wrote")])
    caplog.set_level(logging.INFO, logger="eskit")

    async def follow() -> list[str]:
        store = await AsyncPostgresEventStore.open(pair.standby, schema=primary.schema,
                                                   setup=False)
        try:
            got: list[str] = []
            events = aiter(store.subscribe(poll_interval=0.1))
            try:
                async for event in events:
                    got.append(event.stream_id)
                    if len(got) == 2:
                        break
            finally:
                await events.aclose()  # type: ignore[attr-defined]  # an async generator
            return got
        finally:
            await store.close()

    writer = _append_soon(primary, "live-1")
    got = asyncio.run(asyncio.wait_for(follow(), 20))
    writer.join()
    assert got == ["first-1", "live-1"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == [
        STANDBY_POLLS]
