"""Consumer-group leases in one process: heartbeats, rebalancing, expiry and fencing."""

import threading
import time

import pytest

from eskit.errors import InvalidInputError
from eskit.projections import (
    ConsumerGroup,
    InMemoryTarget,
    LeaseLost,
    ProjectionRunner,
    Tx,
    partition_of,
    wait_for_projection,
)
from tests.projections.helpers import Counter, added


def _group(backend, member: str, **options) -> ConsumerGroup:
    options.setdefault("partitions", 8)
    options.setdefault("lease_timeout", 5.0)
    return ConsumerGroup(backend.new_target(), "g", member=member, **options)


def _fill(store, streams: int = 16, per_stream: int = 5) -> int:
    for s in range(streams):
        store.append(f"s{s}", [added(s + 1) for _ in range(per_stream)])
    return streams * per_stream


def _counts(backend) -> dict:
    return backend.read_counts()


def test_three_members_share_eight_partitions_and_rebalance_on_join(backend) -> None:
    a, b, c = (_group(backend, m) for m in "abc")
    assert len(a.heartbeat()) == 8  # alone: everything
    b.heartbeat()
    assert len(a.heartbeat()) == 4  # a releases its extras
    assert len(b.heartbeat()) == 4  # and b claims them
    c.heartbeat()
    for member in (a, b, c, a, b, c):
        member.heartbeat()
    owners = {lease.partition: lease.owner for lease in a.leases()}
    assert sorted(owners) == list(range(8))
    assert sorted(list(owners.values()).count(m) for m in "abc") == [2, 3, 3]
    held = [set(m.owned) for m in (a, b, c)]
    assert set().union(*held) == set(range(8))
    assert sum(map(len, held)) == 8
    assert a.members() == ["a", "b", "c"]
    for m in (a, b, c):
        m.target.close()


def test_a_member_that_leaves_releases_at_once_and_tokens_rise_on_every_claim(
    backend,
) -> None:
    a, b = _group(backend, "a"), _group(backend, "b")
    first = dict(a.heartbeat())
    assert set(first.values()) == {1}
    b.heartbeat()
    a.leave()
    taken = b.heartbeat()
    assert len(taken) == 8
    for p in range(8):
        assert taken[p] > first[p]  # claimed anew: a fresh fencing token
    assert b.members() == ["b"]
    a.target.close()
    b.target.close()


def test_a_silent_members_leases_expire_by_the_database_clock(backend) -> None:
    a = _group(backend, "a", lease_timeout=0.5)
    b = _group(backend, "b", lease_timeout=0.5)
    a.heartbeat()
    b.heartbeat()
    assert len(a.owned) == 8
    assert not b.owned
    time.sleep(0.7)
    assert len(b.heartbeat()) == 8
    assert all(lease.owner == "b" and lease.expires_in > 0 for lease in b.leases())
    assert a.members() == ["b"]  # a's member row expired and was dropped
    a.target.close()
    b.target.close()


def test_members_must_agree_on_the_partition_count(backend) -> None:
    _group(backend, "a").heartbeat()
    with pytest.raises(InvalidInputError, match="8 partitions"):
        _group(backend, "b", partitions=4).heartbeat()


def test_a_group_serves_one_projection(backend) -> None:
    class Other(Counter):
        name = "other"

    group = _group(backend, "a")
    ProjectionRunner(backend.store, Counter(), group.target, group=group).setup()
    other = _group(backend, "b")
    runner = ProjectionRunner(backend.store, Other(), other.target, group=other)
    with pytest.raises(InvalidInputError, match="serves projection 'counter'"):
        runner.setup()
    with pytest.raises(InvalidInputError, match="in use by projection 'counter'"):
        ProjectionRunner(backend.store, Other(), group.target, group=group)
    group.target.close()
    other.target.close()


@pytest.mark.parametrize("options", [
    {"partitions": 0}, {"partitions": 2.0}, {"lease_timeout": 0}, {"lease_timeout": "1"},
    {"heartbeat": 5.0}, {"heartbeat": 3.0}, {"heartbeat": -1}, {"member": ""},
])
def test_bad_group_options_are_refused_before_any_io(options) -> None:
    class Untouchable(InMemoryTarget):
        dialect = "sqlite"

        def transaction(self):
            raise AssertionError("touched the database")

    options = {"partitions": 8, "lease_timeout": 5.0, **options}
    with pytest.raises(InvalidInputError):
        ConsumerGroup(Untouchable(), "g", **options)


def test_in_memory_targets_cannot_hold_a_group() -> None:
    with pytest.raises(InvalidInputError, match="SQLite or PostgreSQL"):
        ConsumerGroup(InMemoryTarget(), "g", partitions=2)


def test_runner_refuses_a_group_on_another_target_or_a_fixed_partition(backend) -> None:
    group = _group(backend, "a")
    with pytest.raises(InvalidInputError):
        ProjectionRunner(backend.store, Counter(), backend.target, group=group)
    with pytest.raises(InvalidInputError):
        ProjectionRunner(backend.store, Counter(), group.target, group=group, partition=1)
    group.target.close()


def test_a_paused_old_owner_cannot_commit_after_a_takeover(backend) -> None:
    """A runner that stalls past its lease and resumes commits nothing (fencing)."""
    total = _fill(backend.store)
    old = _group(backend, "old", lease_timeout=0.5)
    new = _group(backend, "new", lease_timeout=0.5)
    old_runner = ProjectionRunner(backend.store, Counter(), old.target, group=old)
    new_runner = ProjectionRunner(backend.store, Counter(), new.target, group=new)
    old_runner.setup()
    old.heartbeat()
    assert len(old.owned) == 8
    # The old owner "pauses" here: it still believes it holds every partition.
    time.sleep(0.7)
    handled = new_runner.run_until_caught_up()
    assert handled == total
    assert len(new.owned) == 8
    more = _fill(backend.store, streams=16, per_stream=1)
    # It resumes mid-loop, partition 3's batch first, without a heartbeat: fenced.
    old_runner.partition = 3
    with pytest.raises(LeaseLost) as lost:
        old_runner.run_batch()
    assert lost.value.partition == 3
    state = next(s for s in old.target.states("counter") if s.partition == 3)
    assert state.events_handled == sum(
        5 for s in range(16) if partition_of(f"s{s}", 8) == 3
    )  # nothing of the resumed batch committed
    assert new_runner.run_until_caught_up() == more
    counts = _counts(backend)
    assert counts == {f"s{s}": (6, 6 * (s + 1)) for s in range(16)}
    # Its next step heartbeats, sees every lease taken and handles nothing.
    old._next_beat = 0.0
    assert old_runner.run_until_caught_up() == 0
    assert _counts(backend) == counts
    old.target.close()
    new.target.close()


def _stall_mid_batch(postgres_dsn, *, guard_ends_it: bool) -> None:
    """PostgreSQL: the old owner stalls mid-batch, holding its transaction open.

    The new owner claims the expired lease meanwhile. Either the server ends the
    old session once it idled ``lease_timeout`` in the transaction (the guard), or
    the old batch resumes first, meets the fence and rolls back; the new owner's
    batch, which waited on the checkpoint row, then handles every event once.
    """
    from eskit.errors import StoreUnavailableError
    from tests.conftest import new_schema_name
    from tests.projections.helpers import postgres_backend

    with postgres_backend(postgres_dsn, new_schema_name()) as backend:
        total = _fill(backend.store, streams=4, per_stream=3)
        resume, paused = threading.Event(), threading.Event()

        class Stalling(Counter):
            def handle_Added(self, event, tx: Tx) -> None:
                super().handle_Added(event, tx)
                if not paused.is_set():
                    paused.set()
                    resume.wait(10)

        old = _group(backend, "old", partitions=1, lease_timeout=0.5)
        new = _group(backend, "new", partitions=1, lease_timeout=0.5)
        old_runner = ProjectionRunner(backend.store, Stalling(), old.target, group=old)
        new_runner = ProjectionRunner(backend.store, Counter(), new.target, group=new)
        old_runner.setup()
        new_runner.setup()
        old.heartbeat()  # a 0.5 s lease...
        if not guard_ends_it:
            old.lease_timeout = 30.0  # ...but a 30 s guard: only the fence can stop it
        errors: list[BaseException] = []

        def run_old() -> None:
            try:
                old_runner.run_until_caught_up()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run_old)
        thread.start()
        assert paused.wait(10)
        time.sleep(0.7)  # the old lease expires while its batch is open
        assert len(new.heartbeat()) == 1
        done: list[int] = []
        waiting = threading.Thread(target=lambda: done.append(new_runner.run_until_caught_up()))
        waiting.start()
        waiting.join(0.5 if not guard_ends_it else 10)
        if guard_ends_it:
            assert done == [total]  # the server ended the stalled session: no waiting
        else:
            assert not done  # blocked behind the old batch's checkpoint row lock
        resume.set()
        thread.join(10)
        waiting.join(10)
        assert done == [total]
        if guard_ends_it:
            assert len(errors) == 1
            assert isinstance(errors[0], StoreUnavailableError)
        else:
            assert not errors  # the runner dropped the lost partition and returned
            assert not old.owned
        assert backend.read_counts() == {f"s{s}": (3, 3 * (s + 1)) for s in range(4)}
        old.target.close()
        new.target.close()


def test_a_batch_paused_in_its_transaction_meets_the_fence_on_postgres(postgres_dsn) -> None:
    _stall_mid_batch(postgres_dsn, guard_ends_it=False)


def test_the_server_ends_a_batch_stalled_past_the_lease_on_postgres(postgres_dsn) -> None:
    _stall_mid_batch(postgres_dsn, guard_ends_it=True)


def test_async_runners_share_a_group(backend, tmp_path) -> None:
    import asyncio

    from eskit.aio import AsyncProjectionRunner, AsyncSQLiteEventStore

    total = _fill(backend.store)

    async def main() -> list[dict]:
        if backend.kind == "sqlite":
            stores = [await AsyncSQLiteEventStore.open(backend.path) for _ in range(2)]
        else:
            from eskit.aio import AsyncPostgresEventStore

            stores = [await AsyncPostgresEventStore.open(backend.dsn, schema=backend.schema)
                      for _ in range(2)]
        groups = [_group(backend, m, lease_timeout=1.0) for m in "ab"]
        runners = [AsyncProjectionRunner(s, Counter(), g.target, group=g, batch_size=7,
                                         poll_interval=0.05)
                   for s, g in zip(stores, groups, strict=True)]
        tasks = [asyncio.create_task(r.run()) for r in runners]
        deadline = time.monotonic() + 15
        while sorted(len(g.owned) for g in groups) != [4, 4] or not await asyncio.to_thread(
            wait_for_projection, backend.target, "counter", backend.store.head_position(),
            0.05, partitions=8,
        ):
            assert time.monotonic() < deadline, [g.owned for g in groups]
            await asyncio.sleep(0.05)
        held = [dict(g.owned) for g in groups]
        for r in runners:
            r.stop()
        await asyncio.gather(*tasks)
        for s, g in zip(stores, groups, strict=True):
            await s.close()
            g.target.close()
        return held

    held = asyncio.run(main())
    assert set(held[0]).isdisjoint(held[1])
    assert backend.read_counts() == {f"s{s}": (5, 5 * (s + 1)) for s in range(16)}
    states = backend.target.states("counter")
    assert sum(s.events_handled for s in states) == total
    view = ConsumerGroup(backend.target, "g", partitions=8)
    assert all(lease.owner is None for lease in view.leases())  # both left on stop


def test_a_member_reads_the_log_about_once_per_round_for_all_its_partitions(backend) -> None:
    total = _fill(backend.store, streams=16, per_stream=10)
    reads = []
    store = backend.store
    original = store._filtered_page

    def counting(*args, **kwargs):
        reads.append(args[0])
        return original(*args, **kwargs)

    store._filtered_page = counting
    try:
        group = _group(backend, "solo")
        runner = ProjectionRunner(store, Counter(), group.target, group=group, batch_size=40)
        assert runner.run_until_caught_up() == total
    finally:
        del store._filtered_page
    assert backend.read_counts() == {f"s{s}": (10, 10 * (s + 1)) for s in range(16)}
    pages = -(-total // 40)
    # Each partition alone would read every page: 8 x (pages + 1 to see the end).
    assert len(reads) <= 2 * (pages + 1), reads
    group.target.close()


def test_members_read_only_the_rows_of_the_partitions_they_hold(backend) -> None:
    total = _fill(backend.store, streams=16, per_stream=10)
    store = backend.store
    original = store._filtered_page
    sent = []  # rows the database sent, before any test in Python

    def counting(*args, **kwargs):
        page = original(*args, **kwargs)
        sent.append(page[3])
        return page

    a, b = _group(backend, "a"), _group(backend, "b")
    a.heartbeat()
    b.heartbeat()
    a.heartbeat()  # a gives up half
    b.heartbeat()  # and b claims it
    assert len(a.owned) == len(b.owned) == 4
    store._filtered_page = counting
    handled = 0
    try:
        for member in (a, b):
            sent.clear()
            runner = ProjectionRunner(store, Counter(), member.target, group=member,
                                      batch_size=40)
            handled += runner.run_until_caught_up()
            held = set(member.owned)
            assert len(held) == 4
            mine = sum(10 for s in range(16) if partition_of(f"s{s}", 8) in held)
            assert sum(sent) == mine, member.member  # not the other member's rows
    finally:
        del store._filtered_page
    assert handled == total
    assert backend.read_counts() == {f"s{s}": (10, 10 * (s + 1)) for s in range(16)}
    a.target.close()
    b.target.close()


def test_an_async_member_reads_the_log_about_once_per_round_too(backend) -> None:
    import asyncio

    from eskit.aio import AsyncProjectionRunner, AsyncSQLiteEventStore

    total = _fill(backend.store, streams=16, per_stream=10)
    reads: list[int] = []

    async def main() -> int:
        if backend.kind == "sqlite":
            store = await AsyncSQLiteEventStore.open(backend.path)
        else:
            from eskit.aio import AsyncPostgresEventStore

            store = await AsyncPostgresEventStore.open(backend.dsn, schema=backend.schema)
        original = store._filtered_page

        async def counting(*args, **kwargs):
            reads.append(args[0])
            return await original(*args, **kwargs)

        store._filtered_page = counting
        group = _group(backend, "solo")
        runner = AsyncProjectionRunner(store, Counter(), group.target, group=group,
                                       batch_size=40)
        try:
            return await runner.run_until_caught_up()
        finally:
            await store.close()
            group.target.close()

    assert asyncio.run(main()) == total
    assert backend.read_counts() == {f"s{s}": (10, 10 * (s + 1)) for s in range(16)}
    pages = -(-total // 40)
    # Each of the 8 partitions alone would read every page: 8 x (pages + 1).
    assert len(reads) <= 2 * (pages + 1), reads
