"""The deletion contract: deleted and truncated streams, tombstones, holes in the order.

Subclass :class:`DeletionContract` and implement ``create_store``; override
``subscription`` for a store whose subscriptions are not sync iterators and
``repository`` for one whose repository is not :class:`eskit.Repository` (the
async stores' tests do). See docs/storage.md, "Deleting streams and retention".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from eskit import (
    ANY,
    NO_STREAM,
    Aggregate,
    ConcurrencyError,
    Event,
    EventStore,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InvalidInputError,
    NewEvent,
    OnDemand,
    Repository,
    SnapshotStore,
    SQLiteEventStore,
    SQLiteSnapshotStore,
    StreamAppend,
    StreamDeletedError,
    StreamTruncatedError,
    TruncationRefusedError,
)
from eskit.events import MAX_NAME_BYTES

__all__ = ["DeletionContract", "Loader", "Taker", "Tally", "snapshots_beside"]


class Taker(Protocol):
    """A running subscription: ``take(n)`` the next ``n`` events, then ``stop()``."""

    def take(self, count: int) -> list[Event]: ...

    def stop(self) -> None: ...


class Loader(Protocol):
    """A repository with snapshots: what the truncation cases load aggregates with."""

    def get(self, aggregate_id: Any, aggregate_class: type[Tally]) -> Tally: ...

    def take_snapshot(self, aggregate: Tally) -> Any: ...


class Tally(Aggregate):
    """Sums the contract's ``Numbered`` events and remembers their order."""

    snapshot_name = "eskit-testing-tally"

    def __init__(self, aggregate_id: Any) -> None:
        super().__init__(aggregate_id)
        self.seen: list[int] = []

    def handle_Numbered(self, event_data: dict[str, Any]) -> None:
        self.seen.append(event_data["n"])


def snapshots_beside(store: EventStore) -> SnapshotStore:
    """The snapshot store kept beside ``store`` (memory, SQLite or PostgreSQL)."""
    if isinstance(store, InMemoryEventStore):
        return InMemorySnapshotStore(store)
    if isinstance(store, SQLiteEventStore):
        return SQLiteSnapshotStore(store)
    from eskit import PostgresSnapshotStore

    return PostgresSnapshotStore(store)  # type: ignore[arg-type]


class _SyncTaker:
    def __init__(self, store: EventStore) -> None:
        # One event a page: an event already fetched when its stream is deleted may
        # still be delivered (a read from before the delete); the case is about the rest.
        self._sub = store.subscribe(poll_interval=0.01, page_size=1)
        self._events = iter(self._sub)

    def take(self, count: int) -> list[Event]:
        return list(itertools.islice(self._events, count))

    def stop(self) -> None:
        self._sub.stop()


def _shape(event: Event) -> tuple[Any, ...]:
    return (event.event_id, str(event.aggregate_id), event.event_type, event.version,
            event.position, event.event_data, event.metadata, event.timestamp)


def _events(*numbers: int) -> list[NewEvent]:
    return [NewEvent("Numbered", {"n": n}) for n in numbers]


class DeletionContract:
    """What a store that deletes streams guarantees. Cases need no server of their own."""

    def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError("a contract test class must implement create_store")

    def subscription(self, store: EventStore) -> Taker:
        """A subscription from the start of ``store``'s global order."""
        return _SyncTaker(store)

    def repository(self, store: EventStore) -> Loader:
        """A repository over ``store`` with the snapshot store kept beside it."""
        return Repository(store, snapshots=snapshots_beside(store), snapshot_policy=OnDemand())

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.create_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    @staticmethod
    def _interleaved(store: EventStore) -> list[Event]:
        """Streams a, b and c appended in turns: a1 b1 c1 a2 b2 c2 a3 b3 c3."""
        for n in range(3):
            for name in "abc":
                store.append(f"del-{name}", _events(n))
        return list(store.read_all())

    # -- soft delete --------------------------------------------------------------------

    def test_a_soft_deleted_stream_reads_as_empty_and_is_hidden_from_every_read(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        head = store.head_position()
        assert store.delete_stream("del-b", 3) == 3
        assert store.read_stream("del-b") == []
        assert list(store.iter_stream("del-b")) == []
        assert store.head_version("del-b") == 0
        rest = [e for e in everything if e.aggregate_id != "del-b"]
        assert [_shape(e) for e in store.read_all()] == [_shape(e) for e in rest]
        assert [s.stream_id for s in store.list_streams()] == ["del-a", "del-c"]
        assert store.head_position() == head  # the hidden events keep their positions

    def test_deleted_streams_stay_hidden_from_filtered_reads(self, store: EventStore) -> None:
        everything = self._interleaved(store)
        store.delete_stream("del-b")
        store.delete_stream("del-c", hard=True)
        rest = [_shape(e) for e in everything if e.aggregate_id == "del-a"]
        assert [_shape(e) for e in store.read_all(event_types=["Numbered"])] == rest
        assert [_shape(e) for e in store.read_all(stream_prefixes=["del-"])] == rest
        assert list(store.read_all(stream_prefixes=["del-b", "del-c"])) == []
        assert [_shape(e) for e in store.read_all(
            event_types=["Numbered"], stream_prefixes=["del-a", "del-b"]
        )] == rest
        store.restore_stream("del-b")
        back = [_shape(e) for e in everything if e.aggregate_id != "del-c"]
        assert [_shape(e) for e in store.read_all(event_types=["Numbered"])] == back

    def test_events_of_deleted_streams_are_located_nowhere_until_restored(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        soft = next(e for e in everything if e.aggregate_id == "del-b")
        hard = next(e for e in everything if e.aggregate_id == "del-c")
        kept = next(e for e in everything if e.aggregate_id == "del-a")
        store.delete_stream("del-b")
        store.delete_stream("del-c", hard=True)
        assert store.locate_event(soft.event_id) is None
        assert store.locate_event(hard.event_id) is None
        assert store.locate_event(kept.event_id) == ("del-a", kept.version)
        store.restore_stream("del-b")
        assert store.locate_event(soft.event_id) == ("del-b", soft.version)

    def test_restore_brings_a_soft_deleted_stream_back_unchanged(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        store.delete_stream("del-a")
        assert store.restore_stream("del-a") is True
        assert [_shape(e) for e in store.read_all()] == [_shape(e) for e in everything]
        assert store.head_version("del-a") == 3
        assert store.restore_stream("del-a") is False  # not deleted: nothing to do
        store.append("del-a", _events(9), 3)  # appends go on at the old head
        assert store.head_version("del-a") == 4

    def test_appending_to_a_soft_deleted_stream_is_refused_until_restored(
        self, store: EventStore
    ) -> None:
        store.append("del-s", _events(1))
        store.delete_stream("del-s")
        head = store.head_position()
        with pytest.raises(StreamDeletedError) as caught:
            store.append("del-s", _events(2))
        assert caught.value.hard is False
        assert store.head_position() == head
        store.restore_stream("del-s")
        assert store.append("del-s", _events(2), 1).version == 2

    def test_append_many_naming_a_deleted_stream_writes_none_of_the_streams(
        self, store: EventStore
    ) -> None:
        store.append("del-m1", _events(1))
        store.append("del-m2", _events(1))
        store.delete_stream("del-m2")
        store.delete_stream("del-m3", NO_STREAM, hard=True)
        head = store.head_position()
        for gone, hard in (("del-m2", False), ("del-m3", True)):
            for expected in (ANY, 0, 1):
                with pytest.raises(StreamDeletedError) as caught:
                    store.append_many([
                        StreamAppend("del-m1", _events(2), 1),
                        StreamAppend(gone, _events(2), expected),
                    ])
                assert caught.value.hard is hard
        assert store.head_position() == head
        assert store.head_version("del-m1") == 1

    # -- hard delete --------------------------------------------------------------------

    def test_a_hard_deleted_stream_leaves_a_tombstone_that_refuses_every_append(
        self, store: EventStore
    ) -> None:
        store.append("del-h", _events(1, 2))
        store.delete_stream("del-h", 2, hard=True)
        assert store.read_stream("del-h") == []
        assert store.head_version("del-h") == 0
        for expected in (NO_STREAM, 0, 2):
            with pytest.raises(StreamDeletedError) as caught:
                store.append("del-h", _events(3), expected)
            assert caught.value.hard is True
        with pytest.raises(StreamDeletedError):
            store.restore_stream("del-h")
        assert store.list_streams() == []

    def test_re_appending_the_same_events_after_a_hard_delete_is_refused_not_a_duplicate(
        self, store: EventStore
    ) -> None:
        batch = _events(1, 2)
        store.append("del-r", batch)
        assert store.append("del-r", batch, 0).duplicate  # a retry, before the delete
        store.delete_stream("del-r", hard=True)
        for expected in (0, 2):
            with pytest.raises(StreamDeletedError):
                store.append("del-r", batch, expected)
        assert list(store.read_all()) == []

    def test_a_never_used_stream_id_can_be_tombstoned(self, store: EventStore) -> None:
        assert store.delete_stream("del-never", NO_STREAM, hard=True) == 0
        with pytest.raises(StreamDeletedError):
            store.append("del-never", _events(1), NO_STREAM)

    def test_hard_deleting_a_soft_deleted_stream_removes_it_for_good(
        self, store: EventStore
    ) -> None:
        store.append("del-sh", _events(1))
        store.delete_stream("del-sh")
        assert store.delete_stream("del-sh", 1, hard=True) == 1
        with pytest.raises(StreamDeletedError):
            store.restore_stream("del-sh")
        assert list(store.read_all()) == []

    def test_hard_deleting_the_newest_events_does_not_take_the_head_position_back(
        self, store: EventStore
    ) -> None:
        store.append("del-old", _events(1))
        last = store.append("del-new", _events(2, 3)).position
        store.delete_stream("del-new", hard=True)
        assert store.head_position() >= last
        later = store.append("del-old", _events(4))
        assert later.position > last  # positions are never handed out twice

    # -- holes in the global order ------------------------------------------------------

    def test_readers_pass_over_the_holes_deleted_streams_leave(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        store.delete_stream("del-b", hard=True)
        store.delete_stream("del-c")
        rest = [e for e in everything if e.aggregate_id == "del-a"]
        assert [_shape(e) for e in store.read_all()] == [_shape(e) for e in rest]
        # From every checkpoint, deleted positions included, one event at a time.
        for i, checkpoint in enumerate([0] + [e.position or 0 for e in everything]):
            wanted = [e for e in rest if (e.position or 0) > checkpoint]
            got = list(store.read_all(checkpoint))
            assert [_shape(e) for e in got] == [_shape(e) for e in wanted], i
            walked: list[Event] = []
            after = checkpoint
            while page := list(store.read_all(after, limit=1)):
                walked.extend(page)
                after = page[-1].position or after
            assert [_shape(e) for e in walked] == [_shape(e) for e in wanted]

    def test_a_subscription_behind_a_delete_sees_every_event_that_still_exists_in_order(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        sub = self.subscription(store)
        try:
            first = sub.take(1)
            assert [_shape(e) for e in first] == [_shape(everything[0])]
            store.delete_stream("del-b", hard=True)
            store.delete_stream("del-c")
            later = store.append("del-a", _events(7)).events[0]
            wanted = [e for e in everything[1:] if e.aggregate_id == "del-a"]
            got = sub.take(len(wanted) + 1)
            assert [_shape(e) for e in got] == [_shape(e) for e in wanted] + [_shape(later)]
        finally:
            sub.stop()

    # -- expectations, retries, bad input -----------------------------------------------

    def test_a_delete_checks_the_expected_version_and_deletes_nothing_on_a_mismatch(
        self, store: EventStore
    ) -> None:
        store.append("del-e", _events(1, 2))
        for hard in (False, True):
            with pytest.raises(ConcurrencyError):
                store.delete_stream("del-e", 1, hard=hard)
            with pytest.raises(ConcurrencyError):
                store.delete_stream("del-e", NO_STREAM, hard=hard)
        assert store.head_version("del-e") == 2
        assert len(store.read_stream("del-e")) == 2

    def test_deleting_again_is_a_no_op(self, store: EventStore) -> None:
        store.append("del-i", _events(1))
        store.append("del-keep", _events(2))
        assert store.delete_stream("del-i", 1) == 1
        assert store.delete_stream("del-i", 1) == 1
        store.delete_stream("del-i", 1, hard=True)
        store.delete_stream("del-i", 1, hard=True)  # a retried hard delete
        store.delete_stream("del-i")  # soft after hard changes nothing
        with pytest.raises(StreamDeletedError):
            store.restore_stream("del-i")
        assert [e.aggregate_id for e in store.read_all()] == ["del-keep"]

    @pytest.mark.parametrize("stream_id", [
        "", "nul\x00", "lone \ud800 surrogate", "x" * (MAX_NAME_BYTES + 1), 42, None,
    ])
    def test_bad_input_is_refused_with_a_typed_error_before_any_io(
        self, store: EventStore, stream_id: Any
    ) -> None:
        store.append("del-ok", _events(1))
        head = store.head_position()
        with pytest.raises(InvalidInputError):
            store.delete_stream(stream_id, hard=True)
        with pytest.raises(InvalidInputError):
            store.restore_stream(stream_id)
        for bad in ({"hard": "yes"}, {"hard": 1}, {"expected_version": -1},
                    {"expected_version": "1"}):
            with pytest.raises(InvalidInputError):
                store.delete_stream("del-ok", **bad)
        assert store.head_position() == head
        assert len(store.read_stream("del-ok")) == 1
        store.close()  # no I/O is possible now: bad input still gets its typed error
        with pytest.raises(InvalidInputError):
            store.delete_stream(stream_id, hard=True)

    # -- truncation -----------------------------------------------------------------------

    def test_a_truncated_stream_reads_from_its_first_kept_event_everywhere(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        head = store.head_position()
        assert store.truncate_stream("del-b", 3, expected_version=3, force=True) == 2
        b3 = [e for e in everything if e.aggregate_id == "del-b"][2:]
        assert [_shape(e) for e in store.read_stream("del-b")] == [_shape(e) for e in b3]
        assert [_shape(e) for e in store.iter_stream("del-b")] == [_shape(e) for e in b3]
        assert store.read_stream("del-b", 0, 2) == []
        assert [e.version for e in store.read_stream("del-b", backwards=True)] == [3]
        assert store.head_version("del-b") == 3
        assert store.head_position() == head
        # In order of each stream's first event: del-b's is now b3.
        assert [(s.stream_id, s.version) for s in store.list_streams()] == [
            ("del-a", 3), ("del-c", 3), ("del-b", 3)]
        rest = [e for e in everything if not (e.aggregate_id == "del-b" and e.version < 3)]
        assert [_shape(e) for e in store.read_all()] == [_shape(e) for e in rest]
        for checkpoint in [0] + [e.position or 0 for e in everything]:
            walked: list[Event] = []
            after = checkpoint
            while page := list(store.read_all(after, limit=1)):
                walked.extend(page)
                after = page[-1].position or after
            wanted = [e for e in rest if (e.position or 0) > checkpoint]
            assert [_shape(e) for e in walked] == [_shape(e) for e in wanted]

    def test_reads_from_below_the_cut_of_a_long_stream_start_at_its_first_kept_event(
        self, store: EventStore
    ) -> None:
        # Cuts below and beyond the first page of a read (1,000 versions).
        for name, cut in (("del-long-near", 201), ("del-long-far", 1150)):
            store.append(name, [NewEvent("Numbered", {"n": n}) for n in range(1, 1301)])
            assert store.truncate_stream(name, cut, force=True) == cut - 1
            kept = list(range(cut, 1301))
            assert [e.version for e in store.read_stream(name)] == kept
            assert [e.version for e in store.iter_stream(name)] == kept
            assert [e.version for e in store.read_stream(name, 100)] == kept
            assert [e.version for e in store.read_stream(name, limit=1)] == [cut]
            assert [e.version for e in store.read_stream(name, 5, cut + 1)] == kept[:2]
            assert store.read_stream(name, 0, cut - 1) == []
            assert [e.version for e in store.read_stream(name, backwards=True)] == kept[::-1]

    def test_appends_to_a_truncated_stream_go_on_at_its_head(self, store: EventStore) -> None:
        store.append("del-t", _events(1, 2, 3))
        assert store.truncate_stream("del-t", 10, force=True) == 2  # the newest event stays
        with pytest.raises(ConcurrencyError):
            store.append("del-t", _events(4), 1)
        assert store.append("del-t", _events(4), 3).version == 4
        assert [e.version for e in store.read_stream("del-t")] == [3, 4]

    def test_an_aggregate_loads_with_the_same_state_from_its_snapshot(
        self, store: EventStore
    ) -> None:
        store.append("del-agg", _events(1, 2, 3, 4, 5))
        repository = self.repository(store)
        repository.take_snapshot(repository.get("del-agg", Tally))  # at version 5
        store.append("del-agg", _events(6, 7))
        with pytest.raises(TruncationRefusedError):  # the snapshot is below version 6
            store.truncate_stream("del-agg", 6)
        assert len(store.read_stream("del-agg")) == 7  # nothing removed
        assert store.truncate_stream("del-agg", 5, expected_version=7) == 4
        loaded = repository.get("del-agg", Tally)  # no cache: loaded again, from the snapshot
        assert (loaded.seen, loaded.version) == ([1, 2, 3, 4, 5, 6, 7], 7)

    def test_loading_a_forced_truncation_without_a_snapshot_raises_not_a_partial_state(
        self, store: EventStore
    ) -> None:
        store.append("del-f", _events(1, 2, 3))
        with pytest.raises(TruncationRefusedError):
            store.truncate_stream("del-f", 3)
        assert store.truncate_stream("del-f", 3, force=True) == 2
        with pytest.raises(StreamTruncatedError) as caught:
            self.repository(store).get("del-f", Tally)
        assert caught.value.first_version == 3

    def test_a_subscription_behind_a_truncation_sees_the_rest_in_order(
        self, store: EventStore
    ) -> None:
        everything = self._interleaved(store)
        sub = self.subscription(store)
        try:
            assert [_shape(e) for e in sub.take(1)] == [_shape(everything[0])]
            store.truncate_stream("del-a", 3, force=True)
            store.truncate_stream("del-c", 2, force=True)
            later = store.append("del-b", _events(7)).events[0]
            wanted = [e for e in everything[1:]
                      if not (e.aggregate_id == "del-a" and e.version < 3)
                      and not (e.aggregate_id == "del-c" and e.version < 2)]
            got = sub.take(len(wanted) + 1)
            assert [_shape(e) for e in got] == [_shape(e) for e in wanted] + [_shape(later)]
        finally:
            sub.stop()

    def test_a_truncation_checks_the_expected_version_and_removes_nothing_on_a_mismatch(
        self, store: EventStore
    ) -> None:
        store.append("del-x", _events(1, 2, 3))
        for expected in (2, NO_STREAM, 4):
            with pytest.raises(ConcurrencyError):
                store.truncate_stream("del-x", 3, expected_version=expected, force=True)
        assert [e.version for e in store.read_stream("del-x")] == [1, 2, 3]

    def test_truncating_again_is_a_no_op(self, store: EventStore) -> None:
        store.append("del-n", _events(1, 2, 3, 4))
        assert store.truncate_stream("del-n", 3, force=True) == 2
        assert store.truncate_stream("del-n", 3, force=True) == 0
        assert store.truncate_stream("del-n", 2) == 0  # below the cut: nothing to check
        assert store.truncate_stream("del-never", 5) == 0  # no events, nothing to remove
        assert [e.version for e in store.read_stream("del-n")] == [3, 4]

    def test_a_deleted_stream_cannot_be_truncated(self, store: EventStore) -> None:
        store.append("del-d", _events(1, 2))
        store.append("del-dh", _events(1, 2))
        store.delete_stream("del-d")
        store.delete_stream("del-dh", hard=True)
        for name, hard in (("del-d", False), ("del-dh", True)):
            with pytest.raises(StreamDeletedError) as caught:
                store.truncate_stream(name, 2, force=True)
            assert caught.value.hard is hard
        store.restore_stream("del-d")
        assert len(store.read_stream("del-d")) == 2

    @pytest.mark.parametrize("bad", [
        {"before_version": 0}, {"before_version": -1}, {"before_version": "2"},
        {"before_version": True}, {"before_version": 2**63}, {"before_version": 2.0},
        {"force": "yes"}, {"force": 1}, {"expected_version": -1}, {"stream_id": ""},
        {"stream_id": "nul\x00"}, {"stream_id": None},
    ])
    def test_bad_truncate_arguments_are_refused_with_a_typed_error_before_any_io(
        self, store: EventStore, bad: dict[str, Any]
    ) -> None:
        store.append("del-ok", _events(1, 2))
        arguments: dict[str, Any] = {"stream_id": "del-ok", "before_version": 2, "force": True}
        arguments.update(bad)
        with pytest.raises(InvalidInputError):
            store.truncate_stream(**arguments)
        assert len(store.read_stream("del-ok")) == 2
        store.close()  # no I/O is possible now: bad input still gets its typed error
        with pytest.raises(InvalidInputError):
            store.truncate_stream(**arguments)
