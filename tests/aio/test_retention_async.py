"""apply_retention_async / plan_retention_async: the sync retention's cases on every
async store (memory, SQLite, PostgreSQL), through the same decision code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from eskit import InMemoryEventStore, InvalidInputError, NewEvent, OnDemand, StreamTruncatedError
from eskit.aio import (
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncInMemorySnapshotStore,
    AsyncPostgresEventStore,
    AsyncPostgresSnapshotStore,
    AsyncRepository,
    AsyncSnapshotStore,
    AsyncSQLiteEventStore,
    AsyncSQLiteSnapshotStore,
)
from eskit.maintenance import retention, stats_async
from eskit.maintenance.retention import (
    RetentionPolicy,
    apply_retention,
    apply_retention_async,
    plan_retention,
    plan_retention_async,
)
from eskit.testing.deletion_contract import Tally
from tests.aio.conftest import OpenStore


def _run(open_store: OpenStore, body: Callable[[AsyncEventStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await open_store()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def _numbered(store: AsyncEventStore, stream: str, count: int) -> None:
    await store.append(stream, [NewEvent("Numbered", {"n": n}) for n in range(1, count + 1)])


def _repository(store: AsyncEventStore) -> AsyncRepository:
    snapshots: AsyncSnapshotStore
    if isinstance(store, AsyncInMemoryEventStore):
        snapshots = AsyncInMemorySnapshotStore(store)
    elif isinstance(store, AsyncSQLiteEventStore):
        snapshots = AsyncSQLiteSnapshotStore(store)
    else:
        assert isinstance(store, AsyncPostgresEventStore)
        snapshots = AsyncPostgresSnapshotStore(store)
    return AsyncRepository(store, snapshots=snapshots, snapshot_policy=OnDemand())


async def _versions(store: AsyncEventStore, stream: str) -> list[int]:
    return [e.version for e in await store.read_stream(stream)]


def test_the_async_plan_is_the_sync_plan_and_writes_nothing(open_store: OpenStore) -> None:
    policies = [RetentionPolicy("order-", max_events=4),
                RetentionPolicy("log-", truncate_before_version=5),
                RetentionPolicy("tmp-", max_age=timedelta(0))]

    async def body(store: AsyncEventStore) -> None:
        await _numbered(store, "order-1", 10)
        await _numbered(store, "order-2", 3)
        await _numbered(store, "log-1", 6)
        await _numbered(store, "tmp-1", 2)
        plan = await plan_retention_async(store, policies)
        order, log, tmp = plan.categories
        assert (order.truncated_streams, order.truncated_events) == (1, 6)
        assert (log.truncated_streams, log.truncated_events) == (1, 4)
        assert (tmp.streams, tmp.events) == (1, 2)
        assert [(t.stream_id, t.version, t.first, t.cut) for t in plan.truncations] == [
            ("order-1", 10, 1, 7), ("log-1", 6, 1, 5)]
        assert [(s, v) for s, v, _ in plan.targets] == [("tmp-1", 2)]
        # The same events in a sync store plan the same, bytes included.
        twin = InMemoryEventStore()
        for info in await store.list_streams():
            twin.append(info.stream_id, [NewEvent(e.event_type, e.event_data)
                                         for e in await store.read_stream(info.stream_id)])
        same = plan_retention(twin, policies)
        assert [(c.streams, c.events, c.bytes, c.truncated_streams, c.truncated_events,
                 c.truncated_bytes) for c in plan.categories] == [
            (c.streams, c.events, c.bytes, c.truncated_streams, c.truncated_events,
             c.truncated_bytes) for c in same.categories]
        assert order.truncated_bytes > 0
        assert tmp.bytes > 0
        assert await _versions(store, "order-1") == list(range(1, 11))  # nothing written

    _run(open_store, body)


def test_async_apply_takes_a_snapshot_first_and_the_aggregate_loads_the_same(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "TRUNCATE_STEP", 2)  # several transactions per stream

    async def body(store: AsyncEventStore) -> None:
        await _numbered(store, "order-1", 9)
        await _numbered(store, "order-2", 2)
        repository = _repository(store)
        before = await repository.get("order-1", Tally)
        policies = [RetentionPolicy("order-", max_events=3)]
        seen: list[tuple[int, int]] = []
        result = await apply_retention_async(
            store, policies, repository=repository, aggregates={"order-": Tally},
            progress=lambda done, total: seen.append((done, total)))
        assert (result.truncated_streams, result.truncated_events, result.refused) == (1, 6, 0)
        assert seen == [(1, 1)]
        assert await _versions(store, "order-1") == [7, 8, 9]
        after = await repository.get("order-1", Tally)
        assert (after.seen, after.version) == (before.seen, before.version)
        again = await apply_retention_async(store, policies, repository=repository,
                                            aggregates={"order-": Tally})
        assert (again.truncated_streams, again.truncated_events) == (0, 0)  # a rerun: done
        found = await stats_async(store)
        assert (found.events, found.truncated_events) == (5, 6)

    _run(open_store, body)


def test_async_apply_refuses_a_truncation_without_a_snapshot_unless_forced(
    open_store: OpenStore,
) -> None:
    async def body(store: AsyncEventStore) -> None:
        await _numbered(store, "log-1", 5)
        policies = [RetentionPolicy("log-", truncate_before_version=4)]
        refused = await apply_retention_async(store, policies)
        assert (refused.truncated_streams, refused.refused) == (0, 1)
        assert len(await store.read_stream("log-1")) == 5
        forced = await apply_retention_async(store, policies, force=True)
        assert (forced.truncated_streams, forced.truncated_events) == (1, 3)
        assert await _versions(store, "log-1") == [4, 5]
        with pytest.raises(StreamTruncatedError):
            await _repository(store).get("log-1", Tally)

    _run(open_store, body)


def test_async_apply_deletes_expired_streams_hard_or_soft(open_store: OpenStore) -> None:
    async def body(store: AsyncEventStore) -> None:
        await _numbered(store, "hot-1", 4)
        await _numbered(store, "cold-1", 2)
        await _numbered(store, "kept-1", 1)
        policies = [RetentionPolicy("hot-", max_age=timedelta(0), max_events=1),
                    RetentionPolicy("cold-", max_age=timedelta(0), hard=False)]
        result = await apply_retention_async(store, policies, batch_size=1)
        assert (result.deleted_streams, result.deleted_events, result.batches) == (2, 6, 2)
        assert result.truncated_streams == 0  # an expired stream is deleted, not truncated
        assert await store.read_stream("hot-1") == []
        assert await store.restore_stream("cold-1") is True  # soft: restorable
        assert await _versions(store, "cold-1") == [1, 2]
        assert await store.restore_stream("kept-1") is False

    _run(open_store, body)


def test_a_stream_that_moved_after_the_async_plan_is_skipped(open_store: OpenStore) -> None:
    async def body(store: AsyncEventStore) -> None:
        await _numbered(store, "order-1", 6)
        original = store.list_streams

        async def listed_then_a_late_event() -> list[Any]:
            listing = await original()  # what the plan sees: head 6, cut 5
            await store.append("order-1", [NewEvent("Numbered", {"n": 7})])
            return listing

        store.list_streams = listed_then_a_late_event  # type: ignore[method-assign]
        policies = [RetentionPolicy("order-", max_events=2)]
        result = await apply_retention_async(store, policies, force=True)
        del store.list_streams
        assert (result.truncated_streams, result.skipped) == (0, 1)
        assert len(await store.read_stream("order-1")) == 7
        rerun = await apply_retention_async(store, policies, force=True)
        assert rerun.truncated_events == 5  # planned anew against head 7
        assert await _versions(store, "order-1") == [6, 7]

    _run(open_store, body)


def test_bad_arguments_and_the_wrong_kind_of_store_raise_before_any_io(
    open_store: OpenStore,
) -> None:
    from eskit import Repository

    policies = [RetentionPolicy("order-", max_events=1)]

    async def body(store: AsyncEventStore) -> None:
        await _numbered(store, "order-1", 3)
        repository = _repository(store)
        sync_store = InMemoryEventStore()
        for kwargs in ({"repository": repository}, {"aggregates": {"order-": Tally}},
                       {"repository": Repository(sync_store), "aggregates": {"order-": Tally}},
                       {"repository": repository, "aggregates": {"other-": Tally}},
                       {"force": "yes"}, {"batch_size": 0}, {"now": "today"}):
            with pytest.raises(InvalidInputError):
                await apply_retention_async(store, policies, **kwargs)
        with pytest.raises(InvalidInputError, match="async"):
            apply_retention(store, policies, force=True)
        with pytest.raises(InvalidInputError, match="async"):
            plan_retention(store, policies)
        with pytest.raises(InvalidInputError, match="AsyncEventStore"):
            await apply_retention_async(sync_store, policies, force=True)
        with pytest.raises(InvalidInputError):
            await plan_retention_async(store, [])
        assert len(await store.read_stream("order-1")) == 3

    _run(open_store, body)
