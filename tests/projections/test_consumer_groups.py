"""Consumer groups across processes: kill and add workers while events flow.

Worker processes (spawned; sync and asyncio runners alternately) join one group
of 8 partitions with a short lease (1.5 s). The tests SIGKILL, SIGSTOP and add
workers while a thread appends, then check the read model against a
single-process replay: every event exactly once (one row per event id), none
skipped, each stream in order.
"""

import collections
import contextlib
import multiprocessing
import os
import random
import signal
import threading
import time

import pytest

from eskit.projections import ConsumerGroup, ProjectionRunner, SQLiteTarget, wait_for_projection
from tests.conftest import new_schema_name
from tests.projections.group_workers import (
    GROUP,
    PARTITIONS,
    Seen,
    async_group_worker,
    group_worker,
)
from tests.projections.helpers import added
from tests.projections.workers import open_backend

LEASE = 1.5
TAKEOVER_BOUND = LEASE + 0.5  # lease_timeout, plus a survivor's batch and the polling


class Cluster:
    """Worker processes of one group, an appender thread, and a view of the leases."""

    def __init__(self, kind: str, where: str, schema: str | None) -> None:
        self.kind, self.where, self.schema = kind, where, schema
        self.store, self.target = open_backend(kind, where, schema)
        self.view = ConsumerGroup(self.target, GROUP, partitions=PARTITIONS,
                                  lease_timeout=LEASE, member="observer")
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[multiprocessing.Process] = []
        self._stop = threading.Event()
        self._appender: threading.Thread | None = None
        self.appended = 0

    def add(self, n: int = 1) -> list[multiprocessing.Process]:
        started = []
        for _ in range(n):
            # Every other worker runs the asyncio runner: both kinds share one group.
            entry = (group_worker, async_group_worker)[len(self.workers) % 2]
            worker = self.context.Process(
                target=entry, args=(self.kind, self.where, self.schema, LEASE)
            )
            worker.start()
            started.append(worker)
        self.workers += started
        return started

    def alive(self) -> list[multiprocessing.Process]:
        return [w for w in self.workers if w.is_alive()]

    def kill(self, worker: multiprocessing.Process) -> None:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()

    def assert_none_failed(self) -> None:
        """Workers end only by SIGKILL: any other exit is a failure (see its stderr)."""
        failed = [w.exitcode for w in self.workers
                  if w.exitcode is not None and w.exitcode != -signal.SIGKILL]
        assert not failed, f"worker processes exited with {failed}"

    def owners(self) -> dict[int, str | None]:
        return {lease.partition: lease.owner for lease in self.view.leases()}

    def shares(self) -> dict[str, int]:
        return collections.Counter(o for o in self.owners().values() if o is not None)

    def wait_balanced(self, timeout: float = 15.0) -> float:
        """Wait until the live workers hold every partition in a fair split; seconds taken."""
        started = time.monotonic()
        while True:
            self.assert_none_failed()
            live = {f"pid-{w.pid}" for w in self.alive()}
            n = len(live)
            owners = self.owners()
            held = collections.Counter(owners.values())
            if None not in held and set(held) == live and (
                sorted(held.values()) == sorted(
                    PARTITIONS // n + (i < PARTITIONS % n) for i in range(n)
                )
            ):
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"not balanced: {owners} among {live}"
            time.sleep(0.02)

    def start_appending(self) -> None:
        def append() -> None:
            rng = random.Random()
            while not self._stop.is_set():
                self.store.append(f"s{rng.randrange(40)}", [added() for _ in range(5)])
                self.appended += 5
                time.sleep(0.01)

        self._appender = threading.Thread(target=append, daemon=True)
        self._appender.start()

    def stop_appending(self) -> None:
        self._stop.set()
        if self._appender is not None:
            self._appender.join(10)

    def check_exactly_once(self, clean_target) -> None:
        """Wait for the group to catch up; compare with a single-process replay."""
        self.stop_appending()
        self.assert_none_failed()
        head = self.store.head_position()
        assert wait_for_projection(self.target, "seen", head, timeout=30,
                                   partitions=PARTITIONS), "the group did not catch up"
        ProjectionRunner(self.store, Seen(), clean_target).run_until_caught_up()
        got, clean = _rows(self.target), _rows(clean_target)
        per_event = collections.Counter(event_id for event_id, *_ in got)
        assert per_event, "nothing was projected"
        assert max(per_event.values()) == 1, "an event was handled twice"
        ids = {str(e.event_id) for e in self.store.read_all()}
        assert len(ids) == self.appended
        assert set(per_event) == ids, "an event was skipped"
        assert sorted(r[:3] for r in got) == sorted(r[:3] for r in clean)
        self.assert_none_failed()

    def close(self) -> None:
        self.stop_appending()
        for worker in self.alive():
            self.kill(worker)
        self.store.close()
        self.target.close()


def _rows(target) -> list[tuple]:
    with target.transaction() as conn:
        from eskit.projections import Tx

        return [tuple(r) for r in
                Tx(target.dialect, conn).execute("SELECT event_id, stream, version, pid FROM seen")]


pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request, tmp_path):
    if request.param == "sqlite":
        c = Cluster("sqlite", str(tmp_path / "events.db"), None)
        clean = lambda: SQLiteTarget(tmp_path / "clean.db")  # noqa: E731
    else:
        from eskit.projections import PostgresTarget

        dsn = request.getfixturevalue("postgres_dsn")
        c = Cluster("postgres", dsn, new_schema_name())
        clean = lambda: PostgresTarget(dsn, schema=new_schema_name())  # noqa: E731
    c.clean_target = clean
    try:
        yield c
    finally:
        c.close()


def _check(cluster: Cluster) -> None:
    with contextlib.closing(cluster.clean_target()) as clean:
        cluster.check_exactly_once(clean)


def test_three_workers_share_eight_partitions(cluster) -> None:
    cluster.start_appending()
    cluster.add(3)
    cluster.wait_balanced()
    assert sorted(cluster.shares().values()) == [2, 3, 3]
    time.sleep(1.0)
    _check(cluster)
    pids = {row[3] for row in _rows(cluster.target)}
    assert pids == {w.pid for w in cluster.workers}  # each worker handled some


def test_a_sigkilled_worker_is_taken_over_within_the_lease_timeout(cluster) -> None:
    cluster.start_appending()
    cluster.add(3)
    cluster.wait_balanced()
    time.sleep(0.5)
    victim = random.choice(cluster.workers)
    orphans = {p for p, o in cluster.owners().items() if o == f"pid-{victim.pid}"}
    killed = time.monotonic()
    cluster.kill(victim)
    while True:
        owners = cluster.owners()
        if all(owners[p] not in (None, f"pid-{victim.pid}") for p in orphans):
            break
        assert time.monotonic() - killed < 10, owners
        time.sleep(0.02)
    took = time.monotonic() - killed
    print(f"{cluster.kind}: partitions {sorted(orphans)} taken over {took:.2f}s after SIGKILL")
    assert took <= TAKEOVER_BOUND
    cluster.wait_balanced()
    assert sorted(cluster.shares().values()) == [4, 4]
    time.sleep(0.5)
    _check(cluster)


def test_an_added_worker_gets_its_share(cluster) -> None:
    cluster.start_appending()
    cluster.add(2)
    cluster.wait_balanced()
    assert sorted(cluster.shares().values()) == [4, 4]
    (newcomer,) = cluster.add(1)
    took = cluster.wait_balanced()
    print(f"{cluster.kind}: rebalanced {took:.2f}s after starting a third worker")
    assert cluster.shares()[f"pid-{newcomer.pid}"] >= 2
    time.sleep(0.5)
    _check(cluster)
    assert newcomer.pid in {row[3] for row in _rows(cluster.target)}


def test_workers_killed_paused_and_added_at_random_while_events_flow(cluster) -> None:
    rng = random.Random()
    cluster.start_appending()
    cluster.add(3)
    actions = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.8))
        alive = cluster.alive()
        action = rng.choice(["kill", "add", "pause"] if 1 < len(alive) < 5 else
                            ["add"] if len(alive) <= 1 else ["kill", "pause"])
        if action == "kill":
            cluster.kill(rng.choice(alive))
        elif action == "add":
            cluster.add(1)
        else:  # SIGSTOP past its lease, then SIGCONT: it must not commit stale work
            worker = rng.choice(alive)
            os.kill(worker.pid, signal.SIGSTOP)
            time.sleep(LEASE + 0.5)
            os.kill(worker.pid, signal.SIGCONT)
        actions.append(action)
    print(f"{cluster.kind}: {actions}")
    assert len(cluster.alive()) >= 1
    _check(cluster)
