"""The DCB contract: tags, queries and conditional appends (see :mod:`eskit.dcb`).

Subclass :class:`DCBContract` and implement ``create_store``; every case runs
against that store. The cases need no server of their own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eskit import (
    NO_STREAM,
    AppendCondition,
    AppendConditionFailed,
    ConcurrencyError,
    DuplicateEventError,
    EventStore,
    InvalidInputError,
    MultiStreamConcurrencyError,
    NewEvent,
    Query,
    QueryItem,
    StreamAppend,
)
from eskit.dcb import MAX_TAGS

__all__ = ["DCBContract"]


def _race(racers: int, attempt: Callable[[int], object]) -> list[int]:
    """Start ``racers`` threads at once, each calling ``attempt(n)``; the ``n`` whose
    attempt passed, after checking that exactly one did and the rest failed their
    condition (any other error fails the test)."""
    wins: list[int] = []
    losses: list[int] = []
    barrier = threading.Barrier(racers)

    def race(n: int) -> None:
        barrier.wait()
        try:
            attempt(n)
            wins.append(n)
        except AppendConditionFailed:
            losses.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert len(losses) == racers - 1
    return wins


def _enrolled(course: str, student: str) -> NewEvent:
    return NewEvent("Enrolled", {"course": course, "student": student},
                    tags=(f"course:{course}", f"student:{student}"))


class DCBContract:
    """What a store with DCB guarantees."""

    def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError("a contract test class must implement create_store")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.create_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    # -- tags -------------------------------------------------------------------------

    def test_tags_round_trip_in_the_order_given(self, store: EventStore) -> None:
        tags = ("z:last", "a:first", "ünïcode:名前", "quote:'; --")
        result = store.append("s", [NewEvent("Tagged", tags=tags), NewEvent("Plain")])
        assert [e.tags for e in result.events] == [tags, ()]
        read = store.read_events(Query.all())
        assert [e.tags for e in read.events] == [tags, ()]
        assert [e.event_id for e in read.events] == [e.event_id for e in result.events]

    # -- tags on every read path -----------------------------------------------------

    def test_read_stream_returns_the_stored_tags(self, store: EventStore) -> None:
        store.append("other", [NewEvent("Noise", tags=("n",))])
        store.append("s", [NewEvent("A", tags=("x", "a:1")), NewEvent("B"),
                           NewEvent("C", tags=("c",))])
        assert [e.tags for e in store.read_stream("s")] == [("x", "a:1"), (), ("c",)]
        assert [e.tags for e in store.read_stream("s", backwards=True)] == [
            ("c",), (), ("x", "a:1")]
        assert [e.tags for e in store.read_stream("s", 1, 2)] == [()]
        assert [e.tags for e in store.read_stream("s", limit=1, backwards=True)] == [("c",)]
        assert [e.tags for e in store.iter_stream("s", 2)] == [("c",)]
        assert [e.tags for e in store.read_stream("other")] == [("n",)]
        # Another stream's tagged events between this stream's: never mixed in.
        store.append("other", [NewEvent("Noise", tags=("m",))])
        store.append("s", [NewEvent("D")])
        assert [e.tags for e in store.read_stream("s", 2)] == [("c",), ()]
        assert [e.tags for e in store.read_all(event_types=["D", "Noise"])] == [
            ("n",), ("m",), ()]

    def test_read_all_returns_the_stored_tags(self, store: EventStore) -> None:
        first = store.append("a", [NewEvent("A", tags=("t:1",)), NewEvent("B")])
        store.append("b", [NewEvent("C"), NewEvent("D", tags=("t:2", "u"))])
        assert [e.tags for e in store.read_all()] == [("t:1",), (), (), ("t:2", "u")]
        # From a checkpoint, and a page boundary inside a run of tagged events.
        after = first.events[0].position
        assert [e.tags for e in store.read_all(after)] == [(), (), ("t:2", "u")]
        assert [e.tags for e in store.read_all(limit=1)] == [("t:1",)]
        assert [getattr(e, "tags", None) for e in store.read_all(on_undecodable="yield")] == [
            ("t:1",), (), (), ("t:2", "u")]

    def test_filtered_read_all_returns_the_stored_tags(self, store: EventStore) -> None:
        store.append("order-1", [NewEvent("Placed", tags=("o:1",)), NewEvent("Paid")])
        store.append("user-1", [NewEvent("Placed", tags=("u:1",))])
        assert [e.tags for e in store.read_all(event_types=["Placed"])] == [("o:1",), ("u:1",)]
        assert [e.tags for e in store.read_all(stream_prefixes=["order-"])] == [("o:1",), ()]

    def test_tags_of_a_long_stream_are_read_on_every_page(self, store: EventStore) -> None:
        # More than one page (1,000 events) of read_stream and read_all.
        events = [NewEvent("N", {"n": n}, tags=(f"n:{n}",) if n % 3 else ())
                  for n in range(1203)]
        store.append("long", events)
        want = [(f"n:{n}",) if n % 3 else () for n in range(1203)]
        assert [e.tags for e in store.read_stream("long")] == want
        assert [e.tags for e in store.read_all()] == want

    def test_append_many_stores_tags_that_every_read_returns(self, store: EventStore) -> None:
        store.append_many([StreamAppend("m1", [NewEvent("A", tags=("k:1",))]),
                           StreamAppend("m2", [NewEvent("B"), NewEvent("C", tags=("k:2",))])])
        assert [e.tags for e in store.read_all()] == [("k:1",), (), ("k:2",)]
        assert [e.tags for e in store.read_stream("m2")] == [(), ("k:2",)]
        found = store.read_events(Query.of(tags=["k:2"]))
        assert [e.event_type for e in found.events] == ["C"]

    def test_bad_tags_are_refused_before_anything_is_written(self, store: EventStore) -> None:
        for tags in [("",), ("a\x00b",), ("dup", "dup"), "not-a-tuple",
                     tuple(f"t{i}" for i in range(MAX_TAGS + 1)), (1,), ("x" * 3000,)]:
            with pytest.raises(InvalidInputError):
                store.append("s", [NewEvent("Ok"), NewEvent("Bad", tags=tags)])  # type: ignore[arg-type]
        assert store.head_position() == 0
        assert store.read_events(Query.all()).events == ()

    def test_the_most_tags_allowed_are_stored(self, store: EventStore) -> None:
        tags = tuple(f"t{i}" for i in range(MAX_TAGS))
        store.append("s", [NewEvent("Many", tags=tags)])
        assert store.read_events(Query.of(tags=list(tags))).events[0].tags == tags

    # -- queries ----------------------------------------------------------------------

    def test_an_item_needs_all_its_tags_and_one_of_its_types(self, store: EventStore) -> None:
        store.append("a", [
            NewEvent("A", tags=("x", "y")),   # 1
            NewEvent("A", tags=("x",)),       # 2
            NewEvent("B", tags=("x", "y")),   # 3
            NewEvent("C", tags=("y",)),       # 4
            NewEvent("A"),                    # 5
        ])

        def versions(query: Query) -> list[int]:
            return [e.version for e in store.read_events(query).events]

        assert versions(Query.of(tags=["x", "y"])) == [1, 3]
        assert versions(Query.of(types=["A"], tags=["x"])) == [1, 2]
        assert versions(Query.of(types=["A", "C"], tags=["y"])) == [1, 4]
        assert versions(Query.of(types=["A"])) == [1, 2, 5]
        assert versions(Query.of(tags=["nobody"])) == []
        assert versions(Query.all()) == [1, 2, 3, 4, 5]

    def test_a_query_matches_any_of_its_items_once_each_in_order(
        self, store: EventStore
    ) -> None:
        store.append("a", [NewEvent("A", tags=("x",)), NewEvent("B", tags=("y",)),
                           NewEvent("C", tags=("x", "y"))])
        query = Query([QueryItem(tags=("x",)), QueryItem(tags=("y",)), QueryItem(types=("B",))])
        assert [e.event_type for e in store.read_events(query).events] == ["A", "B", "C"]

    def test_read_events_after_and_limit(self, store: EventStore) -> None:
        result = store.append("a", [NewEvent("A", {"n": n}, tags=("t",)) for n in range(5)])
        positions = [e.position for e in result.events]
        after = store.read_events(Query.of(tags=["t"]), after=positions[1])
        assert [e.event_data["n"] for e in after.events] == [2, 3, 4]
        assert after.position == positions[-1]
        limited = store.read_events(Query.of(tags=["t"]), limit=2)
        assert [e.event_data["n"] for e in limited.events] == [0, 1]
        # Cut short: consistent only up to the last event returned.
        assert limited.position == positions[1]
        assert store.read_events(Query.of(tags=["t"]), limit=0).events == ()

    def test_read_position_covers_events_the_query_does_not_match(
        self, store: EventStore
    ) -> None:
        store.append("a", [NewEvent("A", tags=("t",))])
        last = store.append("b", [NewEvent("Other")])
        result = store.read_events(Query.of(tags=["t"]))
        assert len(result.events) == 1
        assert result.position == last.position == store.head_position()

    def test_read_events_refuses_bad_arguments(self, store: EventStore) -> None:
        cases: list[Callable[[], object]] = [
                    lambda: store.read_events("tag"),  # type: ignore[arg-type]
                    lambda: store.read_events(Query.all(), after=-1),
                    lambda: store.read_events(Query.all(), limit=-1),
                    lambda: Query([]),
                    lambda: QueryItem(types=("",)),
                    lambda: QueryItem(tags="x"),
                    lambda: AppendCondition("q"),  # type: ignore[arg-type]
                    lambda: AppendCondition(Query.all(), after=-5)]
        for bad in cases:
            with pytest.raises(InvalidInputError):
                bad()

    def test_deleted_streams_are_left_out_of_reads_and_conditions(
        self, store: EventStore
    ) -> None:
        query = Query.of(tags=["room:1"])
        store.append("soft", [NewEvent("Booked", tags=("room:1",))])
        store.append("hard", [NewEvent("Booked", tags=("room:1", "guest:ada"))])
        store.delete_stream("soft")
        store.delete_stream("hard", hard=True)
        assert store.read_events(query).events == ()
        assert store.read_events(Query.of(tags=["guest:ada"])).events == ()
        store.append("new", [NewEvent("Booked", tags=("room:1",))],
                     condition=AppendCondition(query))  # nothing visible matches
        store.restore_stream("soft")
        assert [e.aggregate_id for e in store.read_events(query).events] == ["soft", "new"]

    # -- conditions -------------------------------------------------------------------

    def test_condition_passes_when_nothing_matching_came_after(
        self, store: EventStore
    ) -> None:
        store.append("c1", [_enrolled("c1", "s1")])
        query = Query.of(types=["Enrolled"], tags=["course:c1"])
        read = store.read_events(query)
        store.append("other", [_enrolled("c2", "s1")])  # does not match the query
        result = store.append("c1", [_enrolled("c1", "s2")],
                              condition=AppendCondition(query, after=read.position))
        assert not result.duplicate
        assert len(store.read_events(query).events) == 2

    def test_condition_fails_when_a_matching_event_came_after_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        query = Query.of(tags=["course:c1"])
        read = store.read_events(query)
        store.append("x", [_enrolled("c1", "s9")])
        head = store.head_position()
        with pytest.raises(AppendConditionFailed) as caught:
            store.append("y", [_enrolled("c1", "s1"), NewEvent("Untagged")],
                         condition=AppendCondition(query, after=read.position))
        assert isinstance(caught.value, ConcurrencyError)
        assert caught.value.condition.after == read.position
        assert store.head_position() == head
        assert store.head_version("y") == 0
        assert len(store.read_events(Query.all()).events) == 1

    def test_condition_after_none_needs_no_matching_event_at_all(
        self, store: EventStore
    ) -> None:
        username = Query.of(types=["UserRegistered"], tags=["username:ada"])
        store.append("u1", [NewEvent("UserRegistered", tags=("username:ada",))],
                     condition=AppendCondition(username))
        with pytest.raises(AppendConditionFailed):
            store.append("u2", [NewEvent("UserRegistered", tags=("username:ada",))],
                         condition=AppendCondition(username))
        store.append("u3", [NewEvent("UserRegistered", tags=("username:bob",))],
                     condition=AppendCondition(Query.of(tags=["username:bob"])))
        assert [e.aggregate_id for e in store.read_events(Query.all()).events] == ["u1", "u3"]

    def test_condition_on_types_alone_sees_untagged_events(self, store: EventStore) -> None:
        query = Query.of(types=["Closed"])
        read = store.read_events(query)
        store.append("x", [NewEvent("Closed")])
        with pytest.raises(AppendConditionFailed):
            store.append("y", [NewEvent("Open")], condition=AppendCondition(query, read.position))
        with pytest.raises(AppendConditionFailed):
            store.append("y", [NewEvent("Open")],
                         condition=AppendCondition(Query.all(), read.position))

    def test_condition_and_expected_version_must_both_hold(self, store: EventStore) -> None:
        query = Query.of(tags=["t"])
        read = store.read_events(query)
        store.append("s", [NewEvent("First")])
        with pytest.raises(ConcurrencyError) as caught:
            store.append("s", [NewEvent("E", tags=("t",))], NO_STREAM,
                         condition=AppendCondition(query, read.position))
        assert not isinstance(caught.value, AppendConditionFailed)
        store.append("other", [NewEvent("E", tags=("t",))])
        with pytest.raises(AppendConditionFailed):
            store.append("s", [NewEvent("E", tags=("t",))], 1,
                         condition=AppendCondition(query, read.position))
        assert store.head_version("s") == 1
        read = store.read_events(query)
        result = store.append("s", [NewEvent("E", tags=("t",))], 1,
                              condition=AppendCondition(query, read.position))
        assert result.version == 2

    def test_retried_conditional_append_is_not_duplicated(self, store: EventStore) -> None:
        query = Query.of(tags=["course:c1"])
        read = store.read_events(query)
        batch = [_enrolled("c1", "s1"), NewEvent("Note", tags=("other",))]
        condition = AppendCondition(query, read.position)
        first = store.append("e", batch, condition=condition)
        again = store.append("e", batch, condition=condition)  # the ack was lost
        assert again.duplicate
        assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
        assert len(store.read_events(Query.all()).events) == 2
        # A retry whose query does not match its own events is a duplicate too.
        other = AppendCondition(Query.of(tags=["nothing"]), read.position)
        assert store.append("e", batch, condition=other).duplicate
        # Reusing an id in a new batch stays an error.
        with pytest.raises(DuplicateEventError):
            store.append("e", [batch[0], NewEvent("New")], condition=other)

    def test_threads_racing_on_one_condition_let_exactly_one_win(
        self, store: EventStore
    ) -> None:
        query = Query.of(types=["UserRegistered"], tags=["username:ada"])
        read = store.read_events(query)
        wins = _race(6, lambda n: store.append(f"user-{uuid.uuid4()}", [
            NewEvent("UserRegistered", {"n": n}, tags=("username:ada",))
        ], condition=AppendCondition(query, read.position)))
        assert [e.event_data["n"] for e in store.read_events(query).events] == wins

    # -- conditions on append_many ----------------------------------------------------

    def _register(self, store: EventStore, user: str, name: str, after: int | None
                  ) -> list[object]:
        """The unique-username example over two streams: the user and the name's claim."""
        query = Query.of(types=["UsernameClaimed"], tags=[f"username:{name}"])
        return list(store.append_many([
            StreamAppend(f"user-{user}", [NewEvent("UserRegistered", {"name": name},
                                                   tags=(f"user:{user}",))], NO_STREAM),
            StreamAppend(f"username-{name}-{user}", [
                NewEvent("UsernameClaimed", {"user": user}, tags=(f"username:{name}",))]),
        ], condition=AppendCondition(query, after)))

    def test_append_many_with_a_condition_that_holds_writes_every_stream(
        self, store: EventStore
    ) -> None:
        store.append("noise", [NewEvent("UsernameClaimed", tags=("username:bob",))])
        results = self._register(store, "u1", "ada", None)
        assert len(results) == 2
        assert [e.aggregate_id for e in store.read_all()] == [
            "noise", "user-u1", "username-ada-u1"]
        assert [e.tags for e in store.read_stream("user-u1")] == [("user:u1",)]

    def test_append_many_with_a_failed_condition_writes_no_stream(
        self, store: EventStore
    ) -> None:
        self._register(store, "u1", "ada", None)
        head = store.head_position()
        with pytest.raises(AppendConditionFailed) as caught:
            self._register(store, "u2", "ada", None)
        assert isinstance(caught.value, ConcurrencyError)
        assert caught.value.stream_id == ("user-u2", "username-ada-u2")
        assert "user-u2" in str(caught.value)
        assert "username-ada-u2" in str(caught.value)
        assert store.head_position() == head
        assert store.head_version("user-u2") == 0
        assert store.head_version("username-ada-u2") == 0
        # A condition read after the first claim: a different name passes at once.
        read = store.read_events(Query.of(types=["UsernameClaimed"], tags=["username:eve"]))
        assert len(self._register(store, "u2", "eve", read.position)) == 2

    def test_append_many_condition_after_a_read_position(self, store: EventStore) -> None:
        query = Query.of(tags=["course:c1"])
        read = store.read_events(query)
        store.append("other", [_enrolled("c2", "s1")])  # does not match
        store.append_many([StreamAppend("a", [_enrolled("c1", "s1")]),
                           StreamAppend("b", [NewEvent("Note")])],
                          condition=AppendCondition(query, read.position))
        with pytest.raises(AppendConditionFailed):  # the call above matched
            store.append_many([StreamAppend("c", [_enrolled("c1", "s2")])],
                              condition=AppendCondition(query, read.position))
        assert store.head_version("c") == 0

    def test_a_retried_conditional_append_many_is_a_duplicate(self, store: EventStore) -> None:
        query = Query.of(tags=["course:c1"])
        appends = [StreamAppend("e1", [_enrolled("c1", "s1")]),
                   StreamAppend("e2", [NewEvent("Note")])]
        condition = AppendCondition(query, store.read_events(query).position)
        first = store.append_many(appends, condition=condition)
        again = store.append_many(appends, condition=condition)  # the ack was lost
        assert [r.duplicate for r in again] == [True, True]
        assert [e.event_id for r in again for e in r.events] == [
            e.event_id for r in first for e in r.events]
        assert len(store.read_events(Query.all()).events) == 2

    def test_a_moved_stream_is_reported_before_a_failed_condition(
        self, store: EventStore
    ) -> None:
        query = Query.of(tags=["t"])
        read = store.read_events(query)
        store.append("s1", [NewEvent("E", tags=("t",))])  # moves s1 and fails the query
        with pytest.raises(MultiStreamConcurrencyError):
            store.append_many([StreamAppend("s1", [NewEvent("F")], NO_STREAM),
                               StreamAppend("s2", [NewEvent("G")])],
                              condition=AppendCondition(query, read.position))
        assert store.head_version("s2") == 0

    def test_append_many_refuses_a_bad_condition_before_any_write(
        self, store: EventStore
    ) -> None:
        for bad in ["not a condition", Query.all(), 5]:
            with pytest.raises(InvalidInputError):
                store.append_many([StreamAppend("s", [NewEvent("E")])],
                                  condition=bad)  # type: ignore[arg-type]
        assert store.head_position() == 0

    def test_threads_racing_append_many_on_one_condition_let_exactly_one_win(
        self, store: EventStore
    ) -> None:
        wins = [f"u{n}" for n in _race(6, lambda n: self._register(store, f"u{n}", "ada", None))]
        claims = store.read_events(Query.of(types=["UsernameClaimed"]))
        assert [e.event_data["user"] for e in claims.events] == wins
        assert [e.aggregate_id for e in store.read_events(Query.of(
            types=["UserRegistered"])).events] == [f"user-{wins[0]}"]
