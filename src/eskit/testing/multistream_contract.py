"""The multi-stream contract: :meth:`~eskit.EventStore.append_many`, all or nothing.

Mixed into :class:`~eskit.testing.EventStoreContract`, so every store that runs
the contract runs these cases through the same ``store`` fixture. Test names
state the guarantee they check; all of them start with ``test_append_many``.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from eskit import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Aggregate,
    ConcurrencyError,
    DuplicateEventError,
    Event,
    EventStore,
    InvalidInputError,
    MultiStreamConcurrencyError,
    NewEvent,
    Repository,
    StreamAppend,
)

__all__ = ["MultiStreamContract"]


def _new(**data: Any) -> NewEvent:
    return NewEvent("Moved", data)


def _shape(event: Event) -> tuple[Any, ...]:
    return (event.event_id, str(event.aggregate_id), event.version, event.position,
            event.event_data)


class _Account(Aggregate):
    def __init__(self, account_id: Any) -> None:
        super().__init__(account_id)
        self.balance = 0

    def handle_Deposited(self, data: dict[str, Any]) -> None:
        self.balance += data["amount"]

    def handle_Withdrawn(self, data: dict[str, Any]) -> None:
        self.balance -= data["amount"]


class MultiStreamContract:
    """The guarantees of ``append_many``. Needs the ``store`` fixture of the contract."""

    def _snapshot(self, store: EventStore) -> list[tuple[Any, ...]]:
        return [_shape(e) for e in store.read_all()]

    # -- success ------------------------------------------------------------------------

    def test_append_many_stores_every_stream_and_returns_results_in_input_order(
        self, store: EventStore
    ) -> None:
        account = uuid.uuid4()
        store.append("ms-b", [_new(n=0)])
        results = store.append_many([
            StreamAppend("ms-a", [_new(n=1), _new(n=2)], NO_STREAM),
            StreamAppend("ms-b", [_new(n=3)], 1),
            StreamAppend(account, [_new(n=4)]),
            StreamAppend("ms-c", [_new(n=5)], ANY),
        ])
        assert [r.stream_id for r in results] == ["ms-a", "ms-b", account, "ms-c"]
        assert [r.version for r in results] == [2, 2, 1, 1]
        assert not any(r.duplicate for r in results)
        assert [e.event_data["n"] for r in results for e in r.events] == [1, 2, 3, 4, 5]
        assert [e.version for e in store.read_stream("ms-a")] == [1, 2]
        assert [e.event_data["n"] for e in store.read_stream("ms-b")] == [0, 3]
        (stored,) = store.read_stream(account)
        assert stored.aggregate_id == account
        assert stored.event_data == {"n": 4}
        for result in results:
            assert result.position == result.events[-1].position

    def test_append_many_gives_increasing_positions_in_input_order(
        self, store: EventStore
    ) -> None:
        store.append("ms-z", [_new(n=0)])
        before = store.head_position()
        # Streams named in an order unlike their names or any index order.
        results = store.append_many([
            StreamAppend("ms-z", [_new(n=1), _new(n=2)]),
            StreamAppend("ms-a", [_new(n=3)]),
            StreamAppend("ms-m", [_new(n=4), _new(n=5)]),
        ])
        positions = [e.position or 0 for r in results for e in r.events]
        assert positions == sorted(positions)
        assert len(set(positions)) == 5
        assert positions[0] > before
        after = [e for e in store.read_all(before)]
        assert [e.event_data["n"] for e in after] == [1, 2, 3, 4, 5]
        assert [e.position for e in after] == positions
        assert store.head_position() == positions[-1]

    # -- all or nothing -----------------------------------------------------------------

    def test_append_many_with_one_stale_stream_among_three_writes_nothing(
        self, store: EventStore
    ) -> None:
        for name in ("ms-1", "ms-2", "ms-3"):
            store.append(name, [_new(n=0)])
        store.append("ms-2", [_new(n=1)])  # ms-2 is at 2 now
        before, head = self._snapshot(store), store.head_position()
        with pytest.raises(MultiStreamConcurrencyError) as caught:
            store.append_many([
                StreamAppend("ms-1", [_new(n=10)], 1),
                StreamAppend("ms-2", [_new(n=11)], 1),
                StreamAppend("ms-3", [_new(n=12)], 1),
            ])
        assert isinstance(caught.value, ConcurrencyError)
        assert [c.stream_id for c in caught.value.conflicts] == ["ms-2"]
        assert (caught.value.stream_id, caught.value.expected_version,
                caught.value.actual_version) == ("ms-2", 1, 2)
        assert self._snapshot(store) == before
        assert store.head_position() == head
        assert [store.head_version(s) for s in ("ms-1", "ms-2", "ms-3")] == [1, 2, 1]

    def test_append_many_conflict_names_every_failed_stream_with_both_versions(
        self, store: EventStore
    ) -> None:
        store.append("ms-taken", [_new(n=0), _new(n=1)])
        store.append("ms-fine", [_new(n=0)])
        store.append("ms-moved", [_new(n=0), _new(n=1), _new(n=2)])
        before = self._snapshot(store)
        with pytest.raises(MultiStreamConcurrencyError) as caught:
            store.append_many([
                StreamAppend("ms-taken", [_new()], NO_STREAM),
                StreamAppend("ms-fine", [_new()], 1),
                StreamAppend("ms-missing", [_new()], STREAM_EXISTS),
                StreamAppend("ms-moved", [_new()], 1),
            ])
        found = [(c.stream_id, c.expected_version, c.actual_version)
                 for c in caught.value.conflicts]
        assert found == [
            ("ms-taken", NO_STREAM, 2), ("ms-missing", STREAM_EXISTS, 0), ("ms-moved", 1, 3),
        ]
        message = str(caught.value)
        assert all(name in message for name in ("ms-taken", "ms-missing", "ms-moved"))
        assert "ms-fine" not in message
        assert self._snapshot(store) == before

    # -- retries and duplicate ids ------------------------------------------------------

    def test_append_many_retried_whole_returns_duplicates_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        call = [
            StreamAppend("ms-r1", [_new(n=1), _new(n=2)], NO_STREAM),
            StreamAppend("ms-r2", [_new(n=3)], ANY),
        ]
        first = store.append_many(call)
        after_first = self._snapshot(store)
        again = store.append_many(call)
        assert [r.duplicate for r in again] == [True, True]
        assert [(r.stream_id, r.version, r.position) for r in again] == [
            (r.stream_id, r.version, r.position) for r in first
        ]
        assert [_shape(e) for r in again for e in r.events] == [
            _shape(e) for r in first for e in r.events
        ]
        assert self._snapshot(store) == after_first
        # Still a retry after other writers moved the streams on.
        store.append("ms-r1", [_new(n=4)])
        assert all(r.duplicate for r in store.append_many(call))
        assert len(store.read_stream("ms-r1")) == 3

    def test_append_many_retry_of_only_part_of_a_call_is_a_duplicate_error(
        self, store: EventStore
    ) -> None:
        stored = [_new(n=1)]
        store.append_many([StreamAppend("ms-p1", stored), StreamAppend("ms-p2", [_new(n=2)])])
        before = self._snapshot(store)
        with pytest.raises(DuplicateEventError):
            store.append_many([
                StreamAppend("ms-p1", stored),
                StreamAppend("ms-p3", [_new(n=3)]),  # new events: not a retry
            ])
        assert self._snapshot(store) == before
        assert store.head_version("ms-p3") == 0

    def test_append_many_refuses_an_event_id_stored_in_another_stream(
        self, store: EventStore
    ) -> None:
        reused = _new(n=1)
        store.append("ms-elsewhere", [reused])
        before = self._snapshot(store)
        with pytest.raises(DuplicateEventError) as caught:
            store.append_many([
                StreamAppend("ms-d1", [_new(n=2)]),
                StreamAppend("ms-d2", [reused]),
            ])
        assert caught.value.event_id == reused.event_id
        assert self._snapshot(store) == before

    def test_append_many_refuses_an_event_id_used_in_two_streams_of_the_call(
        self, store: EventStore
    ) -> None:
        twice = _new(n=1)
        with pytest.raises(InvalidInputError, match="twice"):
            store.append_many([StreamAppend("ms-t1", [twice]), StreamAppend("ms-t2", [twice])])
        assert list(store.read_all()) == []

    # -- bad input ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        "appends",
        [
            pytest.param([], id="empty"),
            pytest.param(None, id="none"),
            pytest.param("ms-x", id="str"),
            pytest.param(StreamAppend("ms-x", [NewEvent("E")]), id="not-a-list"),
            pytest.param([("ms-x", [NewEvent("E")])], id="tuple-item"),
            pytest.param([StreamAppend("ms-x", [NewEvent("E")]),
                          StreamAppend("ms-x", [NewEvent("E")])], id="same-stream-twice"),
            pytest.param([StreamAppend(uuid.UUID(int=7), [NewEvent("E")]),
                          StreamAppend(str(uuid.UUID(int=7)), [NewEvent("E")])],
                         id="same-stream-as-uuid-and-text"),
            pytest.param([StreamAppend("ms-x", [NewEvent("E")]), StreamAppend("ms-y", [])],
                         id="empty-batch"),
            pytest.param([StreamAppend("ms-x", [NewEvent("E")], -1)], id="bad-version"),
            pytest.param([StreamAppend("", [NewEvent("E")])], id="bad-stream-id"),
            pytest.param([StreamAppend("ms-x", [NewEvent("E")]),
                          StreamAppend("ms-y", [object()])], id="bad-event"),
        ],
    )
    def test_append_many_refuses_bad_input_and_writes_nothing(
        self, store: EventStore, appends: Any
    ) -> None:
        store.append("ms-x", [_new(n=0)])
        before = self._snapshot(store)
        with pytest.raises(InvalidInputError):
            store.append_many(appends)
        assert self._snapshot(store) == before

    # -- the repository -----------------------------------------------------------------

    def test_append_many_repository_saves_several_aggregates_or_none(
        self, store: EventStore
    ) -> None:
        repo = Repository(store)
        a, b = _Account("ms-acc-a"), _Account("ms-acc-b")
        a.raise_event("Deposited", {"amount": 10})
        b.raise_event("Deposited", {"amount": 5})
        first = repo.save(a, b)
        assert [r.version if r else None for r in first] == [1, 1]
        a, b = repo.get("ms-acc-a", _Account), repo.get("ms-acc-b", _Account)
        a.raise_event("Withdrawn", {"amount": 3})
        b.raise_event("Deposited", {"amount": 3})
        store.append("ms-acc-b", [NewEvent("Deposited", {"amount": 1})], 1)  # b moved
        with pytest.raises(MultiStreamConcurrencyError) as caught:
            repo.save(a, b)
        assert [c.stream_id for c in caught.value.conflicts] == ["ms-acc-b"]
        assert len(a.get_uncommitted_events()) == 1, "events stay uncommitted for a retry"
        assert store.head_version("ms-acc-a") == 1
        assert repo.get("ms-acc-a", _Account).balance == 10
        unchanged = _Account("ms-acc-c")  # nothing to save: None in its place
        results = repo.save(a, unchanged)
        assert results[1] is None
        assert results[0] is not None
        assert results[0].version == 2
        assert a.get_uncommitted_events() == []

    # -- threads ------------------------------------------------------------------------

    def test_append_many_racing_writers_on_overlapping_streams_one_wins_each_round(
        self, store: EventStore
    ) -> None:
        """Two writers each move two streams, sharing one: exactly one wins each round,
        and no round leaves the events of only one of its two streams."""
        rounds = 15
        barrier = threading.Barrier(2, timeout=30)
        outcomes: list[list[str]] = [[] for _ in range(rounds)]
        errors: list[BaseException] = []

        def writer(name: str, own: str) -> None:
            wins = 0
            for r in range(rounds):
                barrier.wait()
                try:
                    store.append_many([
                        StreamAppend(own, [_new(round=r, by=name)], wins),
                        StreamAppend("ms-shared", [_new(round=r, by=name)], r),
                    ])
                except MultiStreamConcurrencyError as exc:
                    if [c.stream_id for c in exc.conflicts] != ["ms-shared"]:
                        errors.append(exc)
                    outcomes[r].append("lost")
                except BaseException as exc:
                    errors.append(exc)
                    outcomes[r].append("error")
                else:
                    wins += 1
                    outcomes[r].append(name)

        threads = [threading.Thread(target=writer, args=("one", "ms-own-1")),
                   threading.Thread(target=writer, args=("two", "ms-own-2"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        for r, outcome in enumerate(outcomes):
            assert sorted(outcome).count("lost") == 1, (r, outcome)
            assert len(outcome) == 2, (r, outcome)
        shared = store.read_stream("ms-shared")
        assert [e.event_data["round"] for e in shared] == list(range(rounds))
        own = {name: store.read_stream(f"ms-own-{n}") for n, name in ((1, "one"), (2, "two"))}
        assert len(own["one"]) + len(own["two"]) == rounds
        for event in shared:  # each round's winner wrote both of its streams
            by, r = event.event_data["by"], event.event_data["round"]
            assert r in [e.event_data["round"] for e in own[by]]
            assert outcomes[r].count(by) == 1

    def test_append_many_calls_naming_streams_in_opposite_orders_all_succeed_whole(
        self, store: EventStore
    ) -> None:
        """No two calls wait for each other in a cycle, and each call's events stand
        together in the global order, in the order of the call."""
        calls = 20
        errors: list[BaseException] = []

        def writer(first: str, second: str) -> None:
            for i in range(calls):
                try:
                    store.append_many([
                        StreamAppend(first, [_new(by=first, i=i)]),
                        StreamAppend(second, [_new(by=first, i=i)]),
                    ])
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=writer, args=("ms-x", "ms-y")),
                   threading.Thread(target=writer, args=("ms-y", "ms-x"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        everything = list(store.read_all())
        assert len(everything) == 4 * calls
        assert store.head_version("ms-x") == store.head_version("ms-y") == 2 * calls
        for pair in zip(everything[::2], everything[1::2], strict=True):
            first, second = pair
            assert first.event_data == second.event_data, "a call's events stand together"
            assert str(first.aggregate_id) == first.event_data["by"], "in the call's order"
