"""The contract every store's subscriptions pass, sync and async, as reusable pytest suites.

A backend's test module subclasses :class:`SubscriptionContract` (for an
:class:`eskit.EventStore`) or :class:`AsyncSubscriptionContract` (for an
:class:`eskit.aio.AsyncEventStore`) and says how to make a fresh, empty store::

    class TestMyStoreSubscriptions(SubscriptionContract):
        def create_store(self, tmp_path):
            return MyStore(tmp_path / "events.db")

    class TestMyAsyncStoreSubscriptions(AsyncSubscriptionContract):
        async def open_store(self, tmp_path):
            return await MyAsyncStore.open(tmp_path / "events.db")

Live tests subscribe with ``poll_interval=30``: an event that arrives within a
few seconds proves the store woke the subscription, so they catch lost wake-ups
without timing anything. Test names state the guarantee they check.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eskit import Event, EventStore, InvalidInputError, NewEvent, Subscription, upcaster
from eskit.aio import AsyncEventStore, AsyncSubscription
from eskit.errors import DecodingError
from eskit.stores.filtered import ReadFilter
from eskit.stores.partitions import partition_of
from eskit.stores.rows import UndecodableEvent

__all__ = ["AsyncSubscriptionContract", "SubscriptionContract"]

LIVE = 30.0
"""The poll interval of live tests: no delivery within a test's timeout comes from a poll."""
ARRIVAL = 5.0
"""Seconds a woken subscription may take to deliver (far below :data:`LIVE`)."""
BROKEN = "EskitSubscriptionContractBroken"
"""An event type whose only upcaster always fails: stored fine, never decodable."""

T = TypeVar("T")


@upcaster(BROKEN, from_version=1)
def _never_upcasts(data: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("the contract's broken upcaster")


def _e(n: int, event_type: str = "E") -> NewEvent:
    return NewEvent(event_type, {"n": n})


def _numbers(events: list[Any]) -> list[int]:
    return [e.event_data["n"] for e in events]


# Arguments that subscribe() refuses, each with InvalidInputError, before any I/O.
BAD_ARGUMENTS: list[dict[str, Any]] = [
    {"from_position": -1}, {"from_position": "0"}, {"from_position": 2**128},
    {"page_size": 0}, {"page_size": 1.5}, {"page_size": True},
    {"poll_interval": 0}, {"poll_interval": -1.0}, {"poll_interval": "1"},
    {"poll_interval": float("nan")},
    {"event_types": "Opened"}, {"event_types": [1]}, {"stream_prefixes": "account-"},
    {"event_types": [""]}, {"stream_prefixes": [""]}, {"stream_prefixes": ["\x00"]},
    {"on_undecodable": "skip"},
]


class _Recording:
    """A store seen through a subscription's eyes, recording the limit of each read."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.limits: list[int | None] = []

    def read_all(self, from_position: int = 0, limit: int | None = None, **options: Any) -> Any:
        self.limits.append(limit)
        return self.inner.read_all(from_position, limit, **options)

    def _filtered_page(self, after: int, limit: int, *args: Any) -> Any:
        self.filtered.append((after, limit))
        return self.inner._filtered_page(after, limit, *args)

    @property
    def filtered(self) -> list[tuple[int, int]]:
        """The (after, limit) of each filtered read."""
        found: list[tuple[int, int]] = self.__dict__.setdefault("_filtered", [])
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# ------------------------------------------------------------------------------ sync


class _Follower:
    """Iterates a subscription in a thread until it has ``count`` events, then stops it."""

    def __init__(self, subscription: Subscription, count: int) -> None:
        self.subscription = subscription
        self.count = count
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.arrived: list[float] = []  # time.monotonic() of each event
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self.subscription:
                self.events.append(event)
                self.arrived.append(time.monotonic())
                if len(self.events) >= self.count:
                    self.subscription.stop()
        except BaseException as exc:  # reported by result()
            self.error = exc

    def wait_for(self, count: int, timeout: float = ARRIVAL) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and self.error is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.events)} of {count} events after {timeout} s")
            time.sleep(0.005)

    def result(self, timeout: float = 30.0) -> list[Any]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.subscription.stop()
            self._thread.join(ARRIVAL)
            raise AssertionError(f"the subscription got {len(self.events)} of {self.count}")
        if self.error is not None:
            raise self.error
        return self.events


class SubscriptionContract:
    """The guarantees of :meth:`eskit.EventStore.subscribe`. Implement ``create_store``."""

    def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError("a contract test class must implement create_store")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.create_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def test_a_subscription_yields_history_then_live_events_in_global_order(
        self, store: EventStore
    ) -> None:
        store.append("history-a", [_e(0), _e(1)], 0)
        store.append("history-b", [_e(2)], 0)
        subscription = store.subscribe(poll_interval=LIVE)
        follower = _Follower(subscription, 5)
        follower.wait_for(3)
        store.append("live", [_e(3)], 0)
        follower.wait_for(4)
        store.append("history-a", [_e(4)], 2)
        events = follower.result()
        assert _numbers(events) == [0, 1, 2, 3, 4]
        positions = [e.position for e in events]
        assert positions == sorted(positions)
        assert len(set(positions)) == 5
        assert subscription.position == positions[-1]
        assert subscription.caught_up()

    def test_a_subscription_from_a_checkpoint_yields_exactly_the_events_after_it(
        self, store: EventStore
    ) -> None:
        store.append("s", [_e(n) for n in range(6)], 0)
        first = store.subscribe(page_size=2, poll_interval=LIVE)
        taken = _Follower(first, 2).result()
        assert first.position == taken[-1].position
        rest = _Follower(store.subscribe(first.position, poll_interval=LIVE), 4).result()
        assert _numbers([*taken, *rest]) == list(range(6))
        middle = store.subscribe(rest[1].position, poll_interval=LIVE)
        assert _numbers(_Follower(middle, 2).result()) == [4, 5]
        assert middle.caught_up()

    def test_a_subscription_delivers_the_stored_dcb_tags(self, store: EventStore) -> None:
        store.append("s", [NewEvent("E", {"n": 0}, tags=("t:0", "x")), _e(1)], 0)
        follower = _Follower(store.subscribe(poll_interval=LIVE), 3)
        follower.wait_for(2)
        store.append("s", [NewEvent("E", {"n": 2}, tags=("t:2",))], 2)  # live
        assert [e.tags for e in follower.result()] == [("t:0", "x"), (), ("t:2",)]

    def test_concurrent_appenders_in_several_threads_are_seen_once_each_in_order(
        self, store: EventStore
    ) -> None:
        # 4 threads x 500 appends of 1 to 3 events: 4,000 events on 12 streams.
        threads, streams_per_thread, appends = 4, 3, 500
        total = threads * sum(n % 3 + 1 for n in range(appends))
        subscription = store.subscribe(page_size=97, poll_interval=LIVE)
        follower = _Follower(subscription, total)
        failures: list[BaseException] = []

        def appender(t: int) -> None:
            try:
                for n in range(appends):
                    batch = [_e(n) for _ in range(n % 3 + 1)]
                    store.append(f"race-{t}-{n % streams_per_thread}", batch)
            except BaseException as exc:  # fails the test below
                failures.append(exc)

        workers = [threading.Thread(target=appender, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not failures, failures[:3]
        seen = follower.result(timeout=120)
        stored = list(store.read_all())
        assert len(stored) == total
        assert [e.event_id for e in seen] == [e.event_id for e in stored]
        positions = [e.position or 0 for e in seen]
        assert all(a < b for a, b in itertools.pairwise(positions))

    def test_a_filtered_subscription_sees_each_matching_event_of_concurrent_appenders(
        self, store: EventStore
    ) -> None:
        # 3 threads x 150 appends, every third of type "Wanted", on 2 categories: the
        # filtered read runs while appends commit (out of order on PostgreSQL), and
        # must neither skip nor repeat one.
        threads, appends = 3, 150
        subscription = store.subscribe(event_types=["Wanted"], stream_prefixes=["hot-"],
                                       page_size=7, poll_interval=LIVE)
        wanted = threads * len([n for n in range(appends) if n % 3 == 0 and n % 2 == 0])
        follower = _Follower(subscription, wanted)
        failures: list[BaseException] = []

        def appender(t: int) -> None:
            try:
                for n in range(appends):
                    kind = "Wanted" if n % 3 == 0 else "Other"
                    store.append(f"{'hot' if n % 2 == 0 else 'cold'}-{t}", [_e(n, kind)])
            except BaseException as exc:  # fails the test below
                failures.append(exc)

        workers = [threading.Thread(target=appender, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not failures, failures[:3]
        seen = follower.result(timeout=120)
        expected = [e.event_id for e in store.read_all()
                    if e.event_type == "Wanted" and str(e.aggregate_id).startswith("hot-")]
        assert len(expected) == wanted
        assert [e.event_id for e in seen] == expected

    def test_filters_by_type_and_prefix_yield_only_matches_and_move_the_checkpoint(
        self, store: EventStore
    ) -> None:
        store.append("account-1", [_e(0, "Opened"), _e(1, "Deposited")], 0)
        store.append("audit-1", [_e(2, "Opened")], 0)
        last = store.append("account-2", [_e(3, "Opened"), _e(4, "Closed")], 0)
        by_type = store.subscribe(event_types=["Opened"], poll_interval=LIVE)
        assert _numbers(_Follower(by_type, 3).result()) == [0, 2, 3]
        by_prefix = store.subscribe(stream_prefixes=["account-"], poll_interval=LIVE)
        assert _numbers(_Follower(by_prefix, 4).result()) == [0, 1, 3, 4]
        both = store.subscribe(
            event_types=["Opened"], stream_prefixes=["audit-"], poll_interval=LIVE
        )
        follower = _Follower(both, 2)
        follower.wait_for(1)
        # Everything after the match is filtered out: the checkpoint still passes it.
        deadline = time.monotonic() + ARRIVAL
        while both.position != last.position and time.monotonic() < deadline:
            time.sleep(0.005)
        assert both.position == last.position
        store.append("audit-1", [_e(5, "Opened")], 1)
        assert _numbers(follower.result()) == [2, 5]
        nothing = store.subscribe(event_types=[], poll_interval=LIVE)
        waiting = _Follower(nothing, 1)
        deadline = time.monotonic() + ARRIVAL
        while nothing.position < store.head_position() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert nothing.position == store.head_position()
        nothing.stop()
        assert waiting.result(ARRIVAL) == []

    def test_a_filtered_subscription_reads_only_matching_rows_and_resumes_near_the_head(
        self, store: EventStore
    ) -> None:
        store.append("noise-1", [_e(n, "Common") for n in range(40)], 0)
        store.append("rare-1", [_e(40, "Rare")], 0)
        last = store.append("noise-2", [_e(n, "Common") for n in range(41, 60)], 0)
        recording = _Recording(store)
        rare = Subscription(recording, page_size=5, poll_interval=LIVE, event_types=["Rare"])
        follower = _Follower(rare, 2)
        follower.wait_for(1)
        deadline = time.monotonic() + ARRIVAL
        while rare.position != last.position and time.monotonic() < deadline:
            time.sleep(0.005)
        # One filtered read found the one match and proved nothing else matches up to
        # the head: 60 rows in pages of 5 would have been twelve reads. (A late
        # wake-up for the three appends, a NOTIFY on PostgreSQL, may add a read each.)
        assert rare.position == last.position
        assert recording.limits == []
        assert 1 <= len(recording.filtered) <= 4
        rare.stop()
        assert _numbers(follower.result(ARRIVAL)) == [40]
        # After a "restart" from the saved checkpoint: only what came after it.
        store.append("rare-1", [_e(61, "Rare")], 1)
        again = _Recording(store)
        resumed = Subscription(again, rare.position, page_size=5, poll_interval=LIVE,
                               event_types=["Rare"])
        assert _numbers(_Follower(resumed, 1).result()) == [61]
        assert again.filtered[0][0] == last.position

    def test_stop_from_another_thread_ends_a_waiting_iteration_promptly(
        self, store: EventStore
    ) -> None:
        store.append("s", [_e(0)], 0)
        subscription = store.subscribe(poll_interval=LIVE)
        follower = _Follower(subscription, 10)
        follower.wait_for(1)
        time.sleep(0.2)  # in its wait for live events
        stopped = time.monotonic()
        subscription.stop()
        assert _numbers(follower.result(timeout=ARRIVAL)) == [0]
        assert time.monotonic() - stopped < ARRIVAL
        subscription.stop()  # twice is harmless

    def test_stop_ends_an_iteration_between_events(self, store: EventStore) -> None:
        store.append("s", [_e(n) for n in range(20)], 0)
        subscription = store.subscribe(poll_interval=LIVE)
        seen = []
        for event in subscription:
            seen.append(event)
            if len(seen) == 3:
                subscription.stop()
        assert _numbers(seen) == [0, 1, 2]
        assert subscription.position == seen[-1].position

    @pytest.mark.parametrize("page_size", [1, 7])
    def test_every_read_asks_for_at_most_page_size_events(
        self, store: EventStore, page_size: int
    ) -> None:
        store.append("s", [_e(n) for n in range(23)], 0)
        recording = _Recording(store)
        subscription = Subscription(recording, page_size=page_size, poll_interval=LIVE)
        assert _numbers(_Follower(subscription, 23).result()) == list(range(23))
        assert recording.limits
        assert all(limit == page_size for limit in recording.limits)
        assert len(recording.limits) >= 23 // page_size

    @pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=repr)
    def test_bad_arguments_raise_invalid_input_before_any_io(
        self, store: EventStore, bad: dict[str, Any]
    ) -> None:
        store.close()  # any I/O would now fail with another error
        with pytest.raises(InvalidInputError):
            store.subscribe(**bad)

    def test_an_undecodable_event_raises_by_default_and_the_checkpoint_stays_before_it(
        self, store: EventStore
    ) -> None:
        good = store.append("s", [_e(0)], 0)
        store.append("s", [NewEvent(BROKEN, {"n": 1}, schema_version=1)], 1)
        subscription = store.subscribe(poll_interval=LIVE)
        seen: list[Event] = []
        with pytest.raises(DecodingError):  # noqa: PT012 - raised by the iteration
            for event in subscription:
                seen.append(event)
        assert _numbers(seen) == [0]
        assert subscription.position == good.position

    def test_an_undecodable_event_is_yielded_or_reported_in_its_place_on_request(
        self, store: EventStore
    ) -> None:
        store.append("s", [_e(0)], 0)
        bad = store.append("s", [NewEvent(BROKEN, {"n": 1}, schema_version=1)], 1)
        last = store.append("s", [_e(2)], 2)
        yielding = store.subscribe(on_undecodable="yield", poll_interval=LIVE)
        items = _Follower(yielding, 3).result()
        assert isinstance(items[1], UndecodableEvent)
        assert (items[1].position, items[1].event_type) == (bad.position, BROKEN)
        assert _numbers([items[0], items[2]]) == [0, 2]
        assert yielding.position == last.position
        reported: list[UndecodableEvent] = []
        reporting = store.subscribe(on_undecodable=reported.append, poll_interval=LIVE)
        assert _numbers(_Follower(reporting, 2).result()) == [0, 2]
        assert [r.position for r in reported] == [bad.position]
        assert reporting.position == last.position

    def test_a_live_event_wakes_a_waiting_subscription_long_before_its_poll_interval(
        self, store: EventStore
    ) -> None:
        subscription = store.subscribe(poll_interval=LIVE)
        follower = _Follower(subscription, 4)
        for n in range(4):
            time.sleep(0.15)  # the subscription is back in its wait
            appended = time.monotonic()
            store.append("live", [_e(n)])
            follower.wait_for(n + 1)
            assert follower.arrived[n] - appended < ARRIVAL
        assert _numbers(follower.result()) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- async


async def _take(
    subscription: AsyncSubscription, count: int, timeout: float = 30.0
) -> list[Any]:
    async def take() -> list[Any]:
        seen: list[Any] = []
        async for event in subscription:
            seen.append(event)
            if len(seen) >= count:
                subscription.stop()
        return seen

    return await asyncio.wait_for(take(), timeout)


async def _until(condition: Callable[[], bool], timeout: float = ARRIVAL) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so after {timeout} s")
        await asyncio.sleep(0.005)


class AsyncSubscriptionContract:
    """The guarantees of :meth:`eskit.aio.AsyncEventStore.subscribe`. Implement ``open_store``.

    Each test runs its own event loop (``asyncio.run``); ``open_store`` is awaited in it.
    """

    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        raise NotImplementedError("a contract test class must implement open_store")

    @pytest.fixture
    def run(self, tmp_path: Path) -> Callable[[Callable[[AsyncEventStore], Any]], None]:
        """Runs ``test(store)`` in a new loop with a fresh store, closed afterwards."""

        def run(test: Callable[[AsyncEventStore], Coroutine[Any, Any, None]]) -> None:
            async def main() -> None:
                store = await self.open_store(tmp_path)
                try:
                    await test(store)
                finally:
                    await store.close()

            asyncio.run(main())

        return run

    def test_a_subscription_yields_history_then_live_events_in_global_order(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.append("history-a", [_e(0), _e(1)], 0)
            await store.append("history-b", [_e(2)], 0)
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 5))
            await _until(lambda: subscription.position > 0)
            await asyncio.sleep(0.1)  # caught up and waiting
            await store.append("live", [_e(3)], 0)
            await asyncio.sleep(0.05)
            await store.append("history-a", [_e(4)], 2)
            events = await follower
            assert _numbers(events) == [0, 1, 2, 3, 4]
            positions = [e.position for e in events]
            assert positions == sorted(positions)
            assert len(set(positions)) == 5
            assert subscription.position == positions[-1]
            assert await subscription.caught_up()

        run(test)

    def test_a_subscription_from_a_checkpoint_yields_exactly_the_events_after_it(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.append("s", [_e(n) for n in range(6)], 0)
            first = store.subscribe(page_size=2, poll_interval=LIVE)
            taken = await _take(first, 2)
            assert first.position == taken[-1].position
            rest = await _take(store.subscribe(first.position, poll_interval=LIVE), 4)
            assert _numbers([*taken, *rest]) == list(range(6))
            middle = store.subscribe(rest[1].position, poll_interval=LIVE)
            assert _numbers(await _take(middle, 2)) == [4, 5]
            assert await middle.caught_up()

        run(test)

    def test_a_subscription_delivers_the_stored_dcb_tags(self, run: Any) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.append("s", [NewEvent("E", {"n": 0}, tags=("t:0", "x")), _e(1)], 0)
            taken = await _take(store.subscribe(poll_interval=LIVE), 2)
            await store.append("s", [NewEvent("E", {"n": 2}, tags=("t:2",))], 2)
            later = await _take(store.subscribe(taken[-1].position, poll_interval=LIVE), 1)
            assert [e.tags for e in [*taken, *later]] == [("t:0", "x"), (), ("t:2",)]

        run(test)

    def test_concurrent_appenders_in_several_tasks_are_seen_once_each_in_order(
        self, run: Any
    ) -> None:
        tasks, streams_per_task, batches = 4, 3, 250  # 1,000 appends, 2,000 events, 12 streams

        async def test(store: AsyncEventStore) -> None:
            subscription = store.subscribe(page_size=97, poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, tasks * batches * 2, 60))

            async def appender(t: int) -> None:
                for b in range(batches):
                    await store.append(f"race-{t}-{b % streams_per_task}", [_e(b), _e(b)])

            await asyncio.gather(*(appender(t) for t in range(tasks)))
            seen = await follower
            stored = [e async for e in store.read_all()]
            assert len(stored) == tasks * batches * 2
            assert [e.event_id for e in seen] == [e.event_id for e in stored]
            positions = [e.position or 0 for e in seen]
            assert all(a < b for a, b in itertools.pairwise(positions))

        run(test)

    def test_filters_by_type_and_prefix_yield_only_matches_and_move_the_checkpoint(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.append("account-1", [_e(0, "Opened"), _e(1, "Deposited")], 0)
            await store.append("audit-1", [_e(2, "Opened")], 0)
            last = await store.append("account-2", [_e(3, "Opened"), _e(4, "Closed")], 0)
            by_type = store.subscribe(event_types=["Opened"], poll_interval=LIVE)
            assert _numbers(await _take(by_type, 3)) == [0, 2, 3]
            by_prefix = store.subscribe(stream_prefixes=["account-"], poll_interval=LIVE)
            assert _numbers(await _take(by_prefix, 4)) == [0, 1, 3, 4]
            both = store.subscribe(
                event_types=["Opened"], stream_prefixes=["audit-"], poll_interval=LIVE
            )
            follower = asyncio.create_task(_take(both, 2))
            await _until(lambda: both.position == last.position)
            await store.append("audit-1", [_e(5, "Opened")], 1)
            assert _numbers(await follower) == [2, 5]

        run(test)

    def test_a_partitioned_read_sends_only_the_rows_of_its_partitions(
        self, run: Any
    ) -> None:
        # What an async partitioned projection reads (eskit.stores.partitions).
        async def test(store: AsyncEventStore) -> None:
            for n in range(30):
                await store.append(f"part-{n}", [_e(n), _e(100 + n)], 0)
            every = [e async for e in store.read_all()]
            for p in range(3):
                wanted = ReadFilter(None, None).in_partitions(3, [p])
                got, _, more, rows = await store._filtered_page(0, 500, wanted, False)
                mine = [e.event_id for e in every if partition_of(e.aggregate_id, 3) == p]
                assert [e.event_id for e in got] == mine
                assert rows == len(mine)
                assert not more

        run(test)

    def test_a_filtered_subscription_reads_only_matching_rows_and_resumes_near_the_head(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.append("noise-1", [_e(n, "Common") for n in range(40)], 0)
            await store.append("rare-1", [_e(40, "Rare")], 0)
            last = await store.append("noise-2", [_e(n, "Common") for n in range(41, 60)], 0)
            recording = _Recording(store)
            rare = AsyncSubscription(recording, page_size=5, poll_interval=LIVE,
                                     event_types=["Rare"])
            follower = asyncio.create_task(_take(rare, 2))
            await _until(lambda: rare.position == last.position)
            assert recording.limits == []
            assert 1 <= len(recording.filtered) <= 4
            rare.stop()
            assert _numbers(await follower) == [40]
            await store.append("rare-1", [_e(61, "Rare")], 1)
            again = _Recording(store)
            resumed = AsyncSubscription(again, rare.position, page_size=5, poll_interval=LIVE,
                                        event_types=["Rare"])
            assert _numbers(await _take(resumed, 1)) == [61]
            assert again.filtered[0][0] == last.position

        run(test)

    def test_stop_from_another_task_ends_a_waiting_iteration_promptly(self, run: Any) -> None:
        async def test(store: AsyncEventStore) -> None:
            first = await store.append("s", [_e(0)], 0)
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 10))
            await _until(lambda: subscription.position == first.position)
            await asyncio.sleep(0.2)  # in its wait for live events
            stopped = time.monotonic()
            subscription.stop()
            assert _numbers(await asyncio.wait_for(follower, ARRIVAL)) == [0]
            assert time.monotonic() - stopped < ARRIVAL

        run(test)

    def test_stop_from_another_thread_through_the_loop_ends_the_iteration(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            subscription = store.subscribe(poll_interval=LIVE)
            follower = asyncio.create_task(_take(subscription, 1))
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            threading.Thread(target=loop.call_soon_threadsafe, args=(subscription.stop,)).start()
            assert await asyncio.wait_for(follower, ARRIVAL) == []

        run(test)

    @pytest.mark.parametrize("page_size", [1, 7])
    def test_every_read_asks_for_at_most_page_size_events(
        self, run: Any, page_size: int
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.append("s", [_e(n) for n in range(23)], 0)
            recording = _Recording(store)
            subscription = AsyncSubscription(recording, page_size=page_size, poll_interval=LIVE)
            assert _numbers(await _take(subscription, 23)) == list(range(23))
            assert recording.limits
            assert all(limit == page_size for limit in recording.limits)
            assert len(recording.limits) >= 23 // page_size

        run(test)

    @pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=repr)
    def test_bad_arguments_raise_invalid_input_before_any_io(
        self, run: Any, bad: dict[str, Any]
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            await store.close()  # any I/O would now fail with another error
            with pytest.raises(InvalidInputError):
                store.subscribe(**bad)

        run(test)

    def test_undecodable_events_raise_by_default_or_are_passed_in_their_place_on_request(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            good = await store.append("s", [_e(0)], 0)
            bad = await store.append("s", [NewEvent(BROKEN, {"n": 1}, schema_version=1)], 1)
            last = await store.append("s", [_e(2)], 2)
            raising = store.subscribe(poll_interval=LIVE)
            seen: list[Any] = []
            with pytest.raises(DecodingError):  # noqa: PT012 - raised by the iteration
                async for event in raising:
                    seen.append(event)
            assert _numbers(seen) == [0]
            assert raising.position == good.position
            yielding = store.subscribe(on_undecodable="yield", poll_interval=LIVE)
            items = await _take(yielding, 3)
            assert isinstance(items[1], UndecodableEvent)
            assert (items[1].position, items[1].event_type) == (bad.position, BROKEN)
            assert yielding.position == last.position
            reported: list[UndecodableEvent] = []
            reporting = store.subscribe(on_undecodable=reported.append, poll_interval=LIVE)
            assert _numbers(await _take(reporting, 2)) == [0, 2]
            assert [r.position for r in reported] == [bad.position]

        run(test)

    def test_a_live_event_wakes_a_waiting_subscription_long_before_its_poll_interval(
        self, run: Any
    ) -> None:
        async def test(store: AsyncEventStore) -> None:
            subscription = store.subscribe(poll_interval=LIVE)
            events: AsyncIterator[Any] = aiter(subscription)
            for n in range(4):
                pending = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0.15)  # the subscription is in its wait
                await store.append("live", [_e(n)])
                event = await asyncio.wait_for(pending, ARRIVAL)
                assert event.event_data["n"] == n
            subscription.stop()
            await events.aclose()  # type: ignore[attr-defined]

        run(test)
