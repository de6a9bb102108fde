"""Retention that truncates: max_events and truncate_before_version, planned and applied
on memory, SQLite and PostgreSQL; snapshots taken first so aggregates load the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    EventStore,
    InMemoryEventStore,
    InvalidInputError,
    NewEvent,
    OnDemand,
    Repository,
    SQLiteEventStore,
    StreamTruncatedError,
)
from eskit.maintenance import retention
from eskit.maintenance.retention import RetentionPolicy, apply_retention, plan_retention
from eskit.testing.deletion_contract import Tally, snapshots_beside
from tests.conftest import new_schema_name


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    opened: EventStore
    if request.param == "memory":
        opened = InMemoryEventStore()
    elif request.param == "sqlite":
        opened = SQLiteEventStore(tmp_path / "events.db")
    else:
        from eskit.stores.postgres import PostgresEventStore

        dsn = request.getfixturevalue("postgres_dsn")
        opened = PostgresEventStore(dsn, schema=new_schema_name())
    with opened:
        yield opened


def _numbered(store: EventStore, stream: str, count: int) -> None:
    store.append(stream, [NewEvent("Numbered", {"n": n}) for n in range(1, count + 1)])


def _repository(store: EventStore) -> Repository:
    return Repository(store, snapshots=snapshots_beside(store), snapshot_policy=OnDemand())


def test_the_plan_counts_what_each_truncating_rule_removes_and_writes_nothing(
    store: EventStore,
) -> None:
    _numbered(store, "order-1", 10)
    _numbered(store, "order-2", 3)
    _numbered(store, "log-1", 6)
    policies = [RetentionPolicy("order-", max_events=4),
                RetentionPolicy("log-", truncate_before_version=5)]
    plan = plan_retention(store, policies)
    order, log = plan.categories
    assert (order.truncated_streams, order.truncated_events) == (1, 6)  # order-2 is short
    assert (log.truncated_streams, log.truncated_events) == (1, 4)
    assert order.truncated_bytes > log.truncated_bytes > 0
    assert (order.streams, log.streams) == (0, 0)
    assert [(t.stream_id, t.version, t.first, t.cut) for t in plan.truncations] == [
        ("order-1", 10, 1, 7), ("log-1", 6, 1, 5)]
    assert len(store.read_stream("order-1")) == 10


def test_apply_takes_a_snapshot_first_and_the_aggregate_loads_the_same(
    store: EventStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retention, "TRUNCATE_STEP", 2)  # several transactions per stream
    _numbered(store, "order-1", 9)
    _numbered(store, "order-2", 2)
    repository = _repository(store)
    before = repository.get("order-1", Tally)
    policies = [RetentionPolicy("order-", max_events=3)]
    result = apply_retention(store, policies, repository=repository,
                             aggregates={"order-": Tally})
    assert (result.truncated_streams, result.truncated_events, result.refused) == (1, 6, 0)
    assert [e.version for e in store.read_stream("order-1")] == [7, 8, 9]
    after = repository.get("order-1", Tally)
    assert (after.seen, after.version) == (before.seen, before.version)
    again = apply_retention(store, policies, repository=repository,
                            aggregates={"order-": Tally})
    assert (again.truncated_streams, again.truncated_events) == (0, 0)  # a rerun: done


def test_without_a_snapshot_a_truncation_is_refused_unless_forced(store: EventStore) -> None:
    _numbered(store, "log-1", 5)
    policies = [RetentionPolicy("log-", truncate_before_version=4)]
    refused = apply_retention(store, policies)
    assert (refused.truncated_streams, refused.refused) == (0, 1)
    assert len(store.read_stream("log-1")) == 5
    forced = apply_retention(store, policies, force=True)
    assert (forced.truncated_streams, forced.truncated_events) == (1, 3)
    assert [e.version for e in store.read_stream("log-1")] == [4, 5]
    with pytest.raises(StreamTruncatedError):
        _repository(store).get("log-1", Tally)


def test_a_stream_that_moved_after_the_plan_is_skipped_not_over_truncated(
    store: EventStore,
) -> None:
    _numbered(store, "order-1", 6)
    original = store.list_streams

    def listed_then_a_late_event() -> list[Any]:
        listing = original()  # what the plan sees: head 6, cut 5
        store.append("order-1", [NewEvent("Numbered", {"n": 7})])
        return listing

    store.list_streams = listed_then_a_late_event  # type: ignore[method-assign]
    result = apply_retention(store, [RetentionPolicy("order-", max_events=2)], force=True)
    del store.list_streams
    assert (result.truncated_streams, result.skipped) == (0, 1)
    assert len(store.read_stream("order-1")) == 7
    rerun = apply_retention(store, [RetentionPolicy("order-", max_events=2)], force=True)
    assert rerun.truncated_events == 5  # planned anew against head 7
    assert [e.version for e in store.read_stream("order-1")] == [6, 7]


def test_an_expired_stream_is_deleted_not_truncated(store: EventStore) -> None:
    from datetime import timedelta

    _numbered(store, "order-1", 4)
    policy = RetentionPolicy("order-", max_age=timedelta(0), max_events=1)
    result = apply_retention(store, [policy])
    assert (result.deleted_streams, result.truncated_streams) == (1, 0)
    assert store.read_stream("order-1") == []


@pytest.mark.parametrize("bad", [
    {"max_events": 0}, {"max_events": "3"}, {"truncate_before_version": 0},
    {"truncate_before_version": True}, {},
])
def test_truncating_policies_are_checked_with_typed_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        RetentionPolicy("order-", **bad)


def test_bad_snapshot_arguments_are_refused_before_any_io() -> None:
    store = InMemoryEventStore()
    _numbered(store, "order-1", 3)
    policies = [RetentionPolicy("order-", max_events=1)]
    repository = _repository(store)
    for kwargs in ({"repository": repository}, {"aggregates": {"order-": Tally}},
                   {"repository": Repository(store), "aggregates": {"order-": Tally}},
                   {"repository": repository, "aggregates": {"other-": Tally}},
                   {"repository": repository, "aggregates": {"order-": int}},
                   {"force": "yes"}):
        with pytest.raises(InvalidInputError):
            apply_retention(store, policies, **kwargs)
    assert len(store.read_stream("order-1")) == 3


class _Unstorable(Tally):
    def __init__(self, aggregate_id: Any) -> None:
        super().__init__(aggregate_id)
        self.handle = object()  # the codec cannot store it: no snapshot can be taken


def test_a_snapshot_that_cannot_be_taken_leaves_the_stream_whole_and_counts_refused() -> None:
    store = InMemoryEventStore()
    _numbered(store, "order-1", 5)
    result = apply_retention(store, [RetentionPolicy("order-", max_events=1)],
                             repository=_repository(store), aggregates={"order-": _Unstorable})
    assert (result.truncated_streams, result.refused) == (0, 1)
    assert len(store.read_stream("order-1")) == 5
