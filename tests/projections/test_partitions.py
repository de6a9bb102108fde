"""Partitioned projections: N runners, one checkpoint each, every stream in order."""

import multiprocessing
import threading

import pytest

from eskit.projections import Projection, ProjectionRunner, Tx, partition_of
from tests.conftest import new_schema_name
from tests.projections.helpers import added
from tests.projections.workers import open_backend, project_partition


class InOrder(Projection):
    """Records each stream's last version, refusing any event out of order."""

    name = "in_order"

    def setup(self, tx: Tx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS in_order (stream TEXT PRIMARY KEY, "
                   "version INTEGER NOT NULL, handled INTEGER NOT NULL)")

    def handle_Added(self, event, tx: Tx) -> None:
        p = tx.placeholder  # runs on SQLite and PostgreSQL targets
        rows = tx.execute(f"SELECT version FROM in_order WHERE stream = {p}",
                          (str(event.aggregate_id),))
        last = rows[0][0] if rows else 0
        if last != event.version - 1:
            raise AssertionError(f"{event.aggregate_id}: {event.version} after {last}")
        tx.execute(
            f"INSERT INTO in_order AS o VALUES ({p}, {p}, 1) ON CONFLICT (stream) "
            "DO UPDATE SET version = excluded.version, handled = o.handled + 1",
            (str(event.aggregate_id), event.version),
        )


def _fill(store, streams: int = 12, per_stream: int = 20) -> None:
    for _ in range(per_stream // 5):
        for s in range(streams):
            store.append(f"p{s}", [added(1) for _ in range(5)])


def _rows(target) -> dict:
    with target.transaction() as conn:
        rows = Tx(target.dialect, conn).execute("SELECT stream, version, handled FROM in_order")
    return {r[0]: (r[1], r[2]) for r in rows}


def test_two_partitions_split_the_streams_and_keep_each_in_order(backend) -> None:
    _fill(backend.store)
    targets = [backend.new_target(), backend.new_target()]
    runners = [
        ProjectionRunner(backend.store, InOrder(), targets[p], partition=p, partitions=2,
                         batch_size=16)
        for p in (0, 1)
    ]
    handled = [0, 0]

    def run(p: int) -> None:
        handled[p] = runners[p].run_until_caught_up()

    threads = [threading.Thread(target=run, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert _rows(backend.target) == {f"p{s}": (20, 20) for s in range(12)}
    expected = [sum(20 for s in range(12) if partition_of(f"p{s}", 2) == p) for p in (0, 1)]
    assert handled == expected
    assert all(handled)
    states = backend.target.states("in_order")
    assert [s.partition for s in states] == [0, 1]
    assert all(s.position == backend.store.head_position() for s in states)


def test_each_partition_reads_only_its_own_rows(backend) -> None:
    # The store filters on the stored stream_hash: a runner of 4 partitions is sent
    # about a quarter of the log, not all of it (eskit.stores.partitions).
    _fill(backend.store, streams=16, per_stream=10)
    store = backend.store
    original = store._filtered_page
    sent = []  # the rows the database sent, before any test in Python

    def counting(*args, **kwargs):
        page = original(*args, **kwargs)
        sent.append(page[3])
        return page

    store._filtered_page = counting
    try:
        for p in range(4):
            sent.clear()
            runner = ProjectionRunner(store, InOrder(), backend.new_target(), partition=p,
                                      partitions=4, batch_size=7)
            handled = runner.run_until_caught_up()
            mine = sum(10 for s in range(16) if partition_of(f"p{s}", 4) == p)
            assert handled == mine
            assert sum(sent) == mine, p  # no other partition's row was read
    finally:
        del store._filtered_page


@pytest.mark.slow
def test_two_worker_processes_on_postgres_project_every_event_once_in_order(
    postgres_dsn,
) -> None:
    schema = new_schema_name()
    store, target = open_backend("postgres", postgres_dsn, schema)
    _fill(store, streams=30, per_stream=40)
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        handled = pool.starmap(
            project_partition, [("postgres", postgres_dsn, schema, p, 2) for p in (0, 1)]
        )
    assert sum(handled) == 1200
    assert all(handled)
    assert _rows(target) == {f"p{s}": (40, 40) for s in range(30)}
    store.close()
    target.close()
