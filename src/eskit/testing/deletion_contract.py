"""The deletion contract: soft and hard deleted streams, tombstones, holes in the order.

Subclass :class:`DeletionContract` and implement ``create_store``; override
``subscription`` for a store whose subscriptions are not sync iterators (the
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
    ConcurrencyError,
    Event,
    EventStore,
    InvalidInputError,
    NewEvent,
    StreamAppend,
    StreamDeletedError,
)
from eskit.events import MAX_NAME_BYTES

__all__ = ["DeletionContract", "Taker"]


class Taker(Protocol):
    """A running subscription: ``take(n)`` the next ``n`` events, then ``stop()``."""

    def take(self, count: int) -> list[Event]: ...

    def stop(self) -> None: ...


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
