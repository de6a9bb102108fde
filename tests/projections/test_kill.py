"""SIGKILL the projection runner at random points: the read model stays exact.

A child process projects into the same database as its checkpoint (SQLite file
or PostgreSQL schema) and is killed with SIGKILL at random moments, several
rounds. After a final run, the read model must equal the one a single clean run
builds into a fresh target: no event lost, none applied twice.
"""

import multiprocessing
import os
import random
import signal
import time

import pytest

from eskit.projections import PostgresTarget, ProjectionRunner, SQLiteTarget, Tx
from tests.conftest import new_schema_name
from tests.projections.helpers import Counter, added, counts
from tests.projections.workers import (
    async_project_forever,
    async_project_writes_forever,
    open_backend,
    project_forever,
    project_writes_forever,
)

EVENTS = 3200  # 400 per round
ROUNDS = 8


def _fill(store) -> None:
    """Append EVENTS // ROUNDS events (batches of 10 on 23 streams)."""
    rng = random.Random()
    for i in range(EVENTS // ROUNDS // 10):
        store.append(f"s{i % 23}", [added(rng.randint(1, 9)) for _ in range(10)])


def _kill_rounds(
    kind: str, where: str, schema: str | None, store, target, worker=project_forever
) -> list[int]:
    """Append, start a projecting child (running ``worker``), SIGKILL it; ROUNDS times.

    Returns events_handled as seen after each kill.
    """
    context = multiprocessing.get_context("spawn")
    progress = []
    for _ in range(ROUNDS):
        _fill(store)
        before = _handled(target)
        child = context.Process(target=worker, args=(kind, where, schema, 40))
        child.start()
        # Kill at a random moment once the child is working: a fixed sleep lands
        # before a spawned child has even started on a loaded machine.
        deadline = time.monotonic() + 60
        while _handled(target) == before and child.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        progress.append(_handled(target))
    print(f"{kind}: events handled after each SIGKILL: {progress}")
    return progress


def _handled(target) -> int:
    states = target.states("counter")
    return states[0].events_handled if states else 0


def _read(target) -> dict:
    with target.transaction() as conn:
        return counts(Tx(target.dialect, conn))


def _check(store, target, clean_target) -> None:
    # Finish the killed projection, then build the same read model in one clean run.
    ProjectionRunner(store, Counter(), target).run_until_caught_up()
    ProjectionRunner(store, Counter(), clean_target).run_until_caught_up()
    got, clean = _read(target), _read(clean_target)
    assert sum(n for n, _ in got.values()) == EVENTS
    assert got == clean
    (state,) = target.states("counter")
    assert state.events_handled == EVENTS


RUNNERS = pytest.mark.parametrize(
    "worker",
    [project_forever, async_project_forever, project_writes_forever, async_project_writes_forever],
    ids=["sync", "async", "sync-write", "async-write"],
)


@pytest.mark.slow
@RUNNERS
def test_sqlite_read_model_is_exact_after_random_sigkills_of_the_runner(tmp_path, worker) -> None:
    path = str(tmp_path / "events.db")
    store, target = open_backend("sqlite", path, None)
    progress = _kill_rounds("sqlite", path, None, store, target, worker)
    # The kills landed while work remained: several rounds each committed some batches.
    assert progress[-1] > progress[0] > 0, progress
    with SQLiteTarget(tmp_path / "clean.db") as clean:
        _check(store, target, clean)
    store.close()
    target.close()


@pytest.mark.slow
@RUNNERS
def test_postgres_read_model_is_exact_after_random_sigkills_of_the_runner(
    postgres_dsn, worker
) -> None:
    schema = new_schema_name()
    store, target = open_backend("postgres", postgres_dsn, schema)
    progress = _kill_rounds("postgres", postgres_dsn, schema, store, target, worker)
    time.sleep(0.2)  # let the server roll back the killed connections' transactions
    assert progress[-1] > progress[0] > 0, progress
    with PostgresTarget(postgres_dsn, schema=new_schema_name()) as clean:
        _check(store, target, clean)
    store.close()
    target.close()
