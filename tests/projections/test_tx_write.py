"""``tx.write``: a batch's writes commit with its checkpoint or not at all.

On PostgreSQL a runner's batch queues ``tx.write`` statements and sends them in
pipeline mode; on SQLite (and in a ``Tx`` made by hand) they run at once. Both
must keep every guarantee of ``tx.execute``: handlers read their own writes, a
failure rolls the whole batch back with its checkpoint, the failing event is the
one retried, parked or named, and the connection stays usable. Each case runs on
SQLite and PostgreSQL (the ``backend`` fixture) with the sync and the async runner.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading

import pytest

from eskit import InvalidInputError, NewEvent
from eskit.aio import AsyncProjectionRunner
from eskit.projections import (
    ProjectionFailed,
    ProjectionRunner,
    RetryPolicy,
    Tx,
    retry_parked,
    write_queue,
)
from eskit.projections.rebuild import rebuild
from eskit.projections.runner import BatchResult
from tests.projections.helpers import WriteCounter, added
from tests.projections.test_async_runner import _run

FAST = RetryPolicy(max_attempts=3, backoff=0.001)


@pytest.fixture(params=["sync", "async"])
def runner_kind(request) -> str:
    return request.param


def _catch_up(backend, projection, kind: str, **options) -> int:
    if kind == "sync":
        runner = ProjectionRunner(backend.store, projection, backend.target, **options)
        return runner.run_until_caught_up()

    async def body(store) -> int:
        runner = AsyncProjectionRunner(store, projection, backend.target, **options)
        return await runner.run_until_caught_up()

    return _run(backend, body)


def _one_batch(backend, projection, kind: str, **options) -> BatchResult:
    if kind == "sync":
        return ProjectionRunner(backend.store, projection, backend.target, **options).run_batch()

    async def body(store) -> BatchResult:
        return await AsyncProjectionRunner(store, projection, backend.target,
                                           **options).run_batch()

    return _run(backend, body)


def _state(backend):
    (state,) = backend.target.states("counter")
    return state


class ReadBack(WriteCounter):
    """Writes each event, then reads back how many rows the batch has written so far,
    through ``tx.execute`` and through the raw ``tx.connection``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def setup(self, tx: Tx) -> None:
        super().setup(tx)
        tx.execute("CREATE TABLE IF NOT EXISTS written (stream TEXT, amount INTEGER)")

    def handle_Added(self, event, tx: Tx) -> None:
        p = tx.placeholder
        tx.write(f"INSERT INTO written VALUES ({p}, {p})",
                 (str(event.aggregate_id), event.event_data["amount"]))
        (through_tx,) = tx.execute("SELECT count(*) FROM written")
        through_driver = tx.connection.execute("SELECT sum(amount) FROM written").fetchone()
        self.seen.append((int(through_tx[0]), int(through_driver[0])))


def test_a_handler_reads_its_own_writes_and_the_batchs_earlier_ones(backend, runner_kind) -> None:
    backend.store.append("a", [added(1), added(2), added(3)])
    projection = ReadBack()
    assert _catch_up(backend, projection, runner_kind) == 3
    assert projection.seen == [(1, 1), (2, 3), (3, 6)]


def test_a_failing_write_leaves_neither_the_batchs_rows_nor_its_checkpoint(
    backend, runner_kind
) -> None:
    backend.store.append("a", [added(1), added(2), added(3), NewEvent("Poison"), added(4)])
    result = _one_batch(backend, WriteCounter(), runner_kind, retry=FAST)
    assert (result.read, result.handled) == (0, 0)  # the batch failed
    assert backend.read_counts() == {}
    state = _state(backend)
    assert (state.position, state.events_handled) == (0, 0)
    _assert_out_of_pipeline_mode(backend)


def _assert_out_of_pipeline_mode(backend) -> None:
    if backend.kind == "postgres":  # the failed batch left pipeline mode as it rolled back
        from psycopg.pq import PipelineStatus

        assert backend.target.connection.info.pipeline_status == PipelineStatus.OFF


def test_a_failing_write_is_blamed_on_the_event_that_wrote_it(backend, runner_kind) -> None:
    backend.store.append("a", [added(1), added(2), added(3)])
    backend.store.append("b", [NewEvent("Poison"), added(4)])
    with pytest.raises(ProjectionFailed) as failed:
        _catch_up(backend, WriteCounter(), runner_kind, retry=FAST)
    # On PostgreSQL the refused row surfaces only when the batch's writes are sent;
    # going one event at a time still finds the event that wrote it.
    assert failed.value.event.event_type == "Poison"
    assert "poison" in str(failed.value)
    assert "attempt 3 of 3" in _state(backend).last_error
    assert backend.read_counts() == {"a": (3, 6)}  # the events before it, once each
    before = list(backend.store.read_all())[2]
    assert (_state(backend).position, _state(backend).events_handled) == (before.position, 3)


def test_a_failing_write_is_parked_and_the_rest_commit_once(backend, runner_kind) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    backend.store.append("b", [added(5)])
    handled = _catch_up(backend, WriteCounter(), runner_kind, retry=FAST, on_failure="park")
    assert handled == 3
    assert backend.read_counts() == {"a": (2, 3), "b": (1, 5)}
    (letter,) = backend.target.dead_letters("counter")
    assert (letter.stream_id, letter.event_type, letter.attempts) == ("a", "Poison", 3)
    assert "poison" in letter.error
    assert _state(backend).position == backend.store.head_position()


def test_with_parked_streams_wait_later_writes_of_the_stream_wait_too(
    backend, runner_kind
) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison"), added(2)])
    backend.store.append("b", [added(5)])
    _catch_up(backend, WriteCounter(), runner_kind, retry=FAST, on_failure="park",
              parked_streams="wait")
    assert backend.read_counts() == {"a": (1, 1), "b": (1, 5)}
    assert [d.event_type for d in backend.target.dead_letters("counter")] == ["Poison", "Added"]


def test_a_handler_error_with_writes_in_flight_rolls_back_and_the_runner_goes_on(
    backend, runner_kind
) -> None:
    # More writes than one pipeline chunk are on their way when 'Boom' raises.
    many = write_queue.CHUNK * 2 + 5
    backend.store.append("a", [added(1) for _ in range(many)])
    backend.store.append("b", [NewEvent("Boom"), added(2)])
    result = _one_batch(backend, WriteCounter(), runner_kind, retry=FAST, batch_size=500)
    assert result.read == 0
    assert backend.read_counts() == {}
    _assert_out_of_pipeline_mode(backend)
    handled = _catch_up(backend, WriteCounter(), runner_kind, retry=FAST, on_failure="park")
    assert handled == many + 1
    assert backend.read_counts() == {"a": (many, many), "b": (1, 2)}
    (letter,) = backend.target.dead_letters("counter")
    assert letter.event_type == "Boom"


class Swallowing(WriteCounter):
    """A 'Peek' handler only reads, and swallows whatever its read raises."""

    def handle_Peek(self, event, tx: Tx) -> None:
        with contextlib.suppress(Exception):
            tx.execute("SELECT 1")


def test_a_handler_that_swallows_an_earlier_writes_error_does_not_save_the_batch(
    backend, runner_kind
) -> None:
    # On PostgreSQL the Poison row's error is raised by the Peek's read, which swallows
    # it, and nothing is written after it; on SQLite the Poison handler's own write
    # raises. Either way the batch rolls back, and the Poison event is the one parked.
    backend.store.append("a", [added(1), NewEvent("Poison"), NewEvent("Peek")])
    result = _one_batch(backend, Swallowing(), runner_kind, retry=FAST)
    assert result.read == 0
    assert backend.read_counts() == {}
    assert _state(backend).position == 0
    assert _catch_up(backend, Swallowing(), runner_kind, retry=FAST, on_failure="park") == 2
    assert backend.read_counts() == {"a": (1, 1)}
    assert [d.event_type for d in backend.target.dead_letters("counter")] == ["Poison"]


class Ordered(WriteCounter):
    """Writes that depend on each other's order, with a mapping, no parameters and
    a literal ``%`` (no doubling without parameters), interleaved across events."""

    def setup(self, tx: Tx) -> None:
        super().setup(tx)
        tx.execute("CREATE TABLE IF NOT EXISTS parents (id INTEGER PRIMARY KEY)")
        tx.execute("CREATE TABLE IF NOT EXISTS children "
                   "(parent INTEGER NOT NULL REFERENCES parents (id), n INTEGER)")
        tx.execute("CREATE TABLE IF NOT EXISTS tally (n INTEGER, note TEXT)")
        tx.execute("INSERT INTO tally SELECT 0, '' WHERE NOT EXISTS (SELECT 1 FROM tally)")

    def handle_Added(self, event, tx: Tx) -> None:
        named = ":id" if tx.dialect == "sqlite" else "%(id)s"
        p = tx.placeholder
        tx.write(f"INSERT INTO parents VALUES ({named})", {"id": event.version})
        tx.write(f"INSERT INTO children VALUES ({p}, {p})", (event.version, event.version))
        tx.write("UPDATE tally SET n = n + 1, note = '100%'")


def test_writes_keep_their_order_across_statements_and_parameter_styles(
    backend, runner_kind
) -> None:
    backend.store.append("a", [added(1) for _ in range(150)])
    assert _catch_up(backend, Ordered(), runner_kind, batch_size=100) == 150
    with backend.target.transaction() as conn:
        tx = Tx(backend.target.dialect, conn)
        assert tx.execute("SELECT count(*) FROM parents") == [(150,)]
        assert tx.execute("SELECT count(*), sum(n) FROM children") == [(150, 150 * 151 // 2)]
        assert tx.execute("SELECT n, note FROM tally") == [(150, "100%")]


def test_a_write_outside_a_runners_batch_runs_at_once(backend) -> None:
    with backend.target.transaction() as conn:
        tx = Tx(backend.target.dialect, conn)
        tx.execute("CREATE TABLE IF NOT EXISTS plain (n INTEGER CHECK (n > 0))")
        tx.write(f"INSERT INTO plain VALUES ({tx.placeholder})", (1,))
        assert conn.execute("SELECT count(*) FROM plain").fetchone()[0] == 1
    with backend.target.transaction() as conn:
        tx = Tx(backend.target.dialect, conn)
        with pytest.raises(Exception, match=r"(?i)check"):
            tx.write(f"INSERT INTO plain VALUES ({tx.placeholder})", (0,))


def test_write_refuses_bad_parameters_and_the_in_memory_target_before_any_io(tmp_path) -> None:
    with pytest.raises(InvalidInputError):
        Tx("memory", None).write("INSERT INTO t VALUES (1)")
    conn = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(InvalidInputError):
        Tx("sqlite", conn).write("INSERT INTO t VALUES (?)", "a")
    conn.close()
    # In a runner's PostgreSQL batch a write is queued: checked when written, not sent.
    tx = Tx("postgres", object())
    with tx._deferring(), pytest.raises(InvalidInputError):
        tx.write("INSERT INTO t VALUES (%s)", b"raw")


def test_parked_writes_are_retried_and_a_rebuild_replays_writes(backend) -> None:
    backend.store.append("a", [added(1), NewEvent("Poison", {"amount": 7}), added(2)])
    ProjectionRunner(backend.store, WriteCounter(), backend.target, retry=FAST,
                     on_failure="park").run_until_caught_up()
    assert backend.read_counts() == {"a": (2, 3)}

    class Cured(WriteCounter):
        def handle_Poison(self, event, tx: Tx) -> None:
            self._count(event, tx)

    assert len(retry_parked(backend.store, Cured(), backend.target)) == 1
    assert backend.read_counts() == {"a": (3, 10)}
    for i in range(40):
        backend.store.append(f"s{i % 4}", [added(1) for _ in range(10)])
    assert rebuild(backend.store, Cured(), backend.target, batch_size=64) == 403
    assert backend.read_counts() == {"a": (3, 10), **{f"s{i}": (100, 100) for i in range(4)}}


# -- reading ahead (PostgreSQL) ----------------------------------------------------------


def _count_reads(store) -> list[str]:
    """Record the thread of every page read of the store."""
    threads: list[str] = []
    read = store._filtered_page

    def counted(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return read(*args, **kwargs)

    store._filtered_page = counted
    return threads


def test_postgres_runner_reads_each_next_page_ahead_once(postgres_backend) -> None:
    backend = postgres_backend
    for i in range(12):
        backend.store.append(f"s{i}", [added(1) for _ in range(100)])
    threads = _count_reads(backend.store)
    assert _catch_up(backend, WriteCounter(), "sync", batch_size=500) == 1200
    # 500, 500 (read ahead), 200 (read ahead), then the empty read that ends it.
    assert len(threads) == 4
    assert sum("read-ahead" in t for t in threads) == 2
    assert backend.read_counts() == {f"s{i}": (100, 100) for i in range(12)}


def test_a_page_read_ahead_is_not_used_once_another_runner_moved_the_checkpoint(
    postgres_backend, runner_kind
) -> None:
    backend = postgres_backend
    for i in range(10):
        backend.store.append(f"s{i}", [added(1) for _ in range(100)])
    other_target = backend.new_target()
    other = ProjectionRunner(backend.store, WriteCounter(), other_target, batch_size=150)
    moved = []

    def progress(result: BatchResult) -> None:
        if not moved:  # after our first batch, while our next page is read ahead
            moved.append(other.run_batch().handled)

    async def body(store) -> int:
        runner = AsyncProjectionRunner(store, WriteCounter(), backend.target, batch_size=200)
        return await runner.run_until_caught_up(progress)

    try:
        if runner_kind == "sync":
            runner = ProjectionRunner(backend.store, WriteCounter(), backend.target,
                                      batch_size=200)
            mine = runner.run_until_caught_up(progress)
        else:
            mine = _run(backend, body)
    finally:
        other_target.close()
    assert moved == [150]
    assert mine == 1000 - 150  # nothing handled twice, nothing skipped
    assert backend.read_counts() == {f"s{i}": (100, 100) for i in range(10)}
    assert _state(backend).events_handled == 1000


@pytest.fixture
def postgres_backend(postgres_dsn):
    from tests.conftest import new_schema_name
    from tests.projections.helpers import postgres_backend as open_backend

    with open_backend(postgres_dsn, new_schema_name()) as backend:
        yield backend
