"""Subscription filters: by event type and by stream prefix, resuming exactly."""

import threading

import pytest

from eskit import InMemoryEventStore, InvalidInputError, NewEvent, SQLiteEventStore
from eskit.subscription import EventFilter


def _fill(store) -> None:
    store.append("account-1", [NewEvent("Opened"), NewEvent("Deposited", {"n": 1})])
    store.append("order-1", [NewEvent("Placed"), NewEvent("Deposited", {"n": 2})])
    store.append("account-2", [NewEvent("Opened"), NewEvent("Deposited", {"n": 3})])


def _take(subscription, count: int) -> list:
    seen = []
    for event in subscription:
        seen.append(event)
        if len(seen) == count:
            break
    return seen


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield InMemoryEventStore()
    else:
        with SQLiteEventStore(tmp_path / "f.db") as s:
            yield s


def test_subscription_yields_only_the_wanted_event_types(store) -> None:
    _fill(store)
    got = _take(store.subscribe(event_types=["Deposited"]), 3)
    assert [e.event_data["n"] for e in got] == [1, 2, 3]


def test_subscription_yields_only_streams_with_the_prefix(store) -> None:
    _fill(store)
    got = _take(store.subscribe(stream_prefixes=["account-"], event_types={"Deposited"}), 2)
    assert [e.event_data["n"] for e in got] == [1, 3]


def test_filtered_subscription_checkpoint_moves_past_skipped_events_and_resumes_exactly(
    store,
) -> None:
    _fill(store)
    subscription = store.subscribe(event_types=["Placed"], poll_interval=0.01)
    seen = []

    def follow() -> None:
        for event in subscription:
            seen.append(event.event_id)

    follower = threading.Thread(target=follow)
    follower.start()
    for _ in range(200):
        if subscription.position == store.head_position():
            break
        threading.Event().wait(0.01)
    subscription.stop()
    follower.join(5)
    assert len(seen) == 1
    # Every later event was read (and skipped), so the checkpoint is the head.
    assert subscription.position == store.head_position()
    store.append("order-2", [NewEvent("Placed", {"n": 9})])
    (resumed,) = _take(store.subscribe(subscription.position, event_types=["Placed"]), 1)
    assert resumed.event_data == {"n": 9}


def test_event_filter_rejects_a_bare_string() -> None:
    with pytest.raises(InvalidInputError):
        EventFilter(event_types="Deposited")
    assert EventFilter(stream_prefixes=[]).matches is not None
    assert EventFilter().is_everything
