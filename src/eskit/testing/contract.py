"""The contract every event store passes, as a reusable pytest suite.

A backend's test module subclasses :class:`EventStoreContract` and says how to
make a fresh, empty store; every test then runs against it::

    class TestMyStore(EventStoreContract):
        def create_store(self, tmp_path):
            return MyStore(tmp_path / "events.db")

Third-party backends run exactly the tests eskit's own stores run. Test names
state the guarantee they check.
"""

from __future__ import annotations

import random
import threading
import time as time_module
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from eskit import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Aggregate,
    AggregateNotFound,
    ConcurrencyError,
    DuplicateEventError,
    EncodingError,
    Event,
    EventStore,
    InvalidInputError,
    NewEvent,
    Repository,
    UnknownEventTypeError,
    domain_event,
    handles,
    register_type,
    upcaster,
)
from eskit.events import MAX_NAME_BYTES
from eskit.testing.codec_contract import CodecContract
from eskit.testing.event_lookup_contract import EventLookupContract
from eskit.testing.filtered_read_contract import FilteredReadContract
from eskit.testing.multistream_contract import MultiStreamContract
from eskit.testing.stream_listing_contract import StreamListingContract

__all__ = ["EventStoreContract"]


class _Colour(Enum):
    RED = "red"
    GREEN = "green"


register_type(_Colour, "eskit.testing.Colour")


@register_type
@dataclass(frozen=True)
class _Money:
    amount: Decimal
    currency: str


@domain_event("eskit.testing.ItemAdded", version=2)
@dataclass(frozen=True)
class _ItemAdded:
    sku: str
    price: _Money
    tags: tuple[str, ...]
    colour: _Colour
    added_on: date


@upcaster("EskitContractNoted", from_version=1)
def _noted_gets_an_author(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "by": "unknown"}


def _incompressible(size: int, *, wide: bool = False) -> str:
    # Random text does not compress, so PostgreSQL's index stores it at full size.
    rng = random.Random(size)
    if wide:  # four bytes of UTF-8 per character
        return "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(size // 4))
    return "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(size))


def _new(event_type: str = "Happened", **data: Any) -> NewEvent:
    return NewEvent(event_type, data)


def _ids(events: Any) -> list[uuid.UUID]:
    return [e.event_id for e in events]


class EventStoreContract(
    CodecContract, StreamListingContract, FilteredReadContract, EventLookupContract,
    MultiStreamContract,
):
    """The guarantees of :class:`eskit.EventStore`. Subclass and implement ``create_store``.

    Payload and upcasting cases live in :class:`~eskit.testing.codec_contract.CodecContract`,
    paging the stream list in
    :class:`~eskit.testing.stream_listing_contract.StreamListingContract`, finding an
    event by id in :class:`~eskit.testing.event_lookup_contract.EventLookupContract`,
    ``append_many`` cases in :class:`~eskit.testing.multistream_contract.MultiStreamContract`.
    """

    def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError("a contract test class must implement create_store")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.create_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def _assert_nothing_written(self, store: EventStore, head_before: int) -> None:
        assert store.head_position() == head_before
        assert all((e.position or 0) <= head_before for e in store.read_all())

    # -- appending and versions --------------------------------------------------------

    def test_first_append_creates_stream_at_version_one(self, store: EventStore) -> None:
        result = store.append("s-1", [_new(n=1), _new(n=2)], NO_STREAM)
        assert result.version == 2
        assert [e.version for e in result.events] == [1, 2]
        assert [e.version for e in store.read_stream("s-1")] == [1, 2]
        assert store.head_version("s-1") == 2
        assert result.duplicate is False

    def test_append_returns_the_recorded_events_with_positions(self, store: EventStore) -> None:
        result = store.append("s-1", [_new(n=1), _new(n=2)], 0)
        stored = store.read_stream("s-1")
        assert _ids(result.events) == _ids(stored)
        assert [e.position for e in result.events] == [e.position for e in stored]
        assert result.position == stored[-1].position
        assert all(e.aggregate_id == "s-1" for e in result.events)

    def test_exact_expected_version_appends_after_that_version(self, store: EventStore) -> None:
        store.append("s-1", [_new()], 0)
        store.append("s-1", [_new(), _new()], 1)
        store.append("s-1", [_new()], 3)
        assert [e.version for e in store.read_stream("s-1")] == [1, 2, 3, 4]

    @pytest.mark.parametrize("expected", [0, 1, 3, NO_STREAM])
    def test_wrong_expected_version_raises_concurrency_error_and_writes_nothing(
        self, store: EventStore, expected: Any
    ) -> None:
        store.append("s-1", [_new(), _new()], 0)
        head = store.head_position()
        with pytest.raises(ConcurrencyError) as caught:
            store.append("s-1", [_new()], expected)
        error = caught.value
        assert isinstance(error, ValueError), "seed code catches ValueError"
        assert error.stream_id == "s-1"
        assert error.expected_version == expected
        assert error.actual_version == 2
        assert "s-1" in str(error)
        assert store.head_position() == head
        assert store.head_version("s-1") == 2

    def test_stream_exists_expectation_fails_on_a_new_stream(self, store: EventStore) -> None:
        with pytest.raises(ConcurrencyError):
            store.append("new", [_new()], STREAM_EXISTS)
        assert store.head_version("new") == 0
        store.append("new", [_new()], NO_STREAM)
        store.append("new", [_new()], STREAM_EXISTS)
        assert store.head_version("new") == 2

    def test_any_expectation_appends_at_the_head(self, store: EventStore) -> None:
        store.append("s-1", [_new()], ANY)
        store.append("s-1", [_new(), _new()], ANY)
        assert [e.version for e in store.read_stream("s-1")] == [1, 2, 3]

    def test_expected_version_zero_means_no_stream(self, store: EventStore) -> None:
        store.append("s-1", [_new()], 0)
        with pytest.raises(ConcurrencyError):
            store.append("s-1", [_new()], 0)

    def test_streams_are_independent(self, store: EventStore) -> None:
        store.append("a", [_new()], 0)
        store.append("b", [_new(), _new()], 0)
        store.append("a", [_new()], 1)
        assert store.head_version("a") == 2
        assert store.head_version("b") == 2

    # -- atomic batches ----------------------------------------------------------------

    def test_batch_with_an_unencodable_value_writes_nothing(self, store: EventStore) -> None:
        store.append("s-1", [_new()], 0)
        head = store.head_position()
        with pytest.raises(EncodingError) as caught:
            store.append("s-1", [_new(ok=1), _new(bad={"deep": [object()]})], 1)
        assert "bad" in caught.value.path
        self._assert_nothing_written(store, head)
        assert store.head_version("s-1") == 1

    def test_batch_whose_last_event_id_is_taken_writes_nothing(self, store: EventStore) -> None:
        taken = store.append("other", [_new()], 0).events[0].event_id
        head = store.head_position()
        batch = [_new(), _new(), NewEvent("Happened", {}, event_id=taken)]
        with pytest.raises(DuplicateEventError):
            store.append("s-1", batch, 0)
        self._assert_nothing_written(store, head)
        assert store.read_stream("s-1") == []
        # The clash must not have consumed the stream's versions either.
        store.append("s-1", [_new()], 0)
        assert store.head_version("s-1") == 1

    # -- idempotent retries -------------------------------------------------------------

    @pytest.mark.parametrize("expected", [0, NO_STREAM, ANY])
    def test_retried_append_with_same_event_ids_is_not_duplicated(
        self, store: EventStore, expected: Any
    ) -> None:
        batch = [_new(n=1), _new(n=2)]
        first = store.append("s-1", batch, expected)
        again = store.append("s-1", batch, expected)
        assert again.duplicate is True
        assert _ids(again.events) == _ids(first.events)
        assert again.version == first.version == 2
        assert again.position == first.position
        assert len(store.read_stream("s-1")) == 2
        assert len(list(store.read_all())) == 2

    def test_retry_is_recognised_after_the_stream_moved_on(self, store: EventStore) -> None:
        batch = [_new(n=1)]
        store.append("s-1", batch, 0)
        store.append("s-1", [_new(n=2)], 1)
        again = store.append("s-1", batch, 0)
        assert again.duplicate is True
        assert again.version == 1
        assert store.head_version("s-1") == 2

    def test_retry_at_a_different_place_is_an_error(self, store: EventStore) -> None:
        batch = [_new(n=1)]
        store.append("s-1", [_new()], 0)
        store.append("s-1", batch, 1)
        with pytest.raises(DuplicateEventError):
            store.append("s-1", batch, 0)
        with pytest.raises(DuplicateEventError):
            store.append("s-1", batch, NO_STREAM)

    def test_retrying_a_consecutive_part_of_a_batch_at_its_place_is_accepted(
        self, store: EventStore
    ) -> None:
        a, b, c = _new(n=1), _new(n=2), _new(n=3)
        store.append("s-1", [a, b, c], 0)
        assert store.append("s-1", [a, b], 0).duplicate
        assert store.append("s-1", [b, c], 1).version == 3
        with pytest.raises(DuplicateEventError):
            store.append("s-1", [a, c], 0)  # not consecutive
        assert len(store.read_stream("s-1")) == 3

    def test_reusing_an_id_for_a_different_event_at_the_same_place_is_an_error(
        self, store: EventStore
    ) -> None:
        first = _new(amount=Decimal("50"))
        store.append("acc", [first], 0)
        other = NewEvent("Withdrawn", {"amount": Decimal("100")}, event_id=first.event_id)
        for expected in (0, ANY):
            with pytest.raises(DuplicateEventError):
                store.append("acc", [other], expected)
        changed = NewEvent("Happened", {"amount": Decimal("51")}, event_id=first.event_id)
        with pytest.raises(DuplicateEventError):
            store.append("acc", [changed], 0)
        assert store.read_stream("acc")[0].event_data == {"amount": Decimal("50")}

    def test_batch_mixing_stored_and_new_events_is_an_error(self, store: EventStore) -> None:
        batch = [_new(n=1), _new(n=2)]
        store.append("s-1", batch, 0)
        head = store.head_position()
        with pytest.raises(DuplicateEventError):
            store.append("s-1", [*batch[:1], _new(n=3)], 0)
        with pytest.raises(DuplicateEventError):
            store.append("s-1", [batch[1], _new(n=3)], ANY)
        self._assert_nothing_written(store, head)

    def test_event_id_reused_in_another_stream_is_rejected(self, store: EventStore) -> None:
        event = _new()
        store.append("s-1", [event], 0)
        head = store.head_position()
        with pytest.raises(DuplicateEventError) as caught:
            store.append("s-2", [event], 0)
        assert caught.value.event_id == event.event_id
        self._assert_nothing_written(store, head)
        assert store.head_version("s-2") == 0

    def test_event_id_repeated_within_one_batch_is_rejected(self, store: EventStore) -> None:
        event = _new()
        with pytest.raises(InvalidInputError):
            store.append("s-1", [event, event], 0)
        assert store.head_position() == 0

    # -- reading a stream ---------------------------------------------------------------

    def _five(self, store: EventStore, stream: str = "s-1") -> list[Event]:
        return list(store.append(stream, [_new(n=i) for i in range(1, 6)], 0).events)

    def test_read_stream_from_version_is_exclusive_and_to_version_inclusive(
        self, store: EventStore
    ) -> None:
        self._five(store)
        assert [e.version for e in store.read_stream("s-1", 0)] == [1, 2, 3, 4, 5]
        assert [e.version for e in store.read_stream("s-1", 2)] == [3, 4, 5]
        assert [e.version for e in store.read_stream("s-1", 1, 3)] == [2, 3]
        assert [e.version for e in store.read_stream("s-1", to_version=2)] == [1, 2]
        assert store.read_stream("s-1", 5) == []
        assert store.read_stream("s-1", 3, 3) == []
        assert [e.version for e in store.read_stream("s-1", 4, 99)] == [5]

    def test_read_stream_backwards_returns_newest_first(self, store: EventStore) -> None:
        self._five(store)
        assert [e.version for e in store.read_stream("s-1", backwards=True)] == [5, 4, 3, 2, 1]
        assert [e.version for e in store.read_stream("s-1", backwards=True, limit=2)] == [5, 4]
        assert [e.version for e in store.read_stream("s-1", 1, 4, backwards=True)] == [4, 3, 2]

    def test_read_stream_limit_takes_from_the_start_of_the_order(self, store: EventStore) -> None:
        self._five(store)
        assert [e.version for e in store.read_stream("s-1", limit=2)] == [1, 2]
        assert [e.version for e in store.read_stream("s-1", 2, limit=2)] == [3, 4]
        assert store.read_stream("s-1", limit=0) == []

    def test_read_stream_pages_through_a_long_stream_in_every_direction_and_limit(
        self, store: EventStore
    ) -> None:
        # 2,500 events: more than two pages, ending inside the third.
        for start in range(0, 2500, 500):
            store.append("long", [_new(n=n) for n in range(start + 1, start + 501)], start)
        every = list(range(1, 2501))
        cases: list[tuple[dict[str, Any], list[int]]] = [
            ({}, every),
            ({"backwards": True}, every[::-1]),
            ({"from_version": 999}, every[999:]),
            ({"from_version": 1000, "to_version": 2000}, every[1000:2000]),
            ({"to_version": 2001, "backwards": True}, every[:2001][::-1]),
            ({"to_version": 9999, "backwards": True}, every[::-1]),
            ({"to_version": 2600, "backwards": True, "limit": 1}, [2500]),
            ({"from_version": 2400, "to_version": 2600, "backwards": True}, every[2400:][::-1]),
            ({"from_version": 10, "backwards": True, "limit": 1500}, every[10:][::-1][:1500]),
            ({"limit": 1000}, every[:1000]),
            ({"limit": 1001}, every[:1001]),
            ({"from_version": 500, "limit": 2000}, every[500:2500]),
        ]
        for kwargs, versions in cases:
            assert [e.version for e in store.read_stream("long", **kwargs)] == versions, kwargs
            assert [e.version for e in store.iter_stream("long", **kwargs)] == versions, kwargs

    def test_iter_stream_is_lazy_and_checks_its_arguments_at_the_call(
        self, store: EventStore
    ) -> None:
        self._five(store)
        iterator = store.iter_stream("s-1", 1)
        assert next(iterator).version == 2
        assert [e.version for e in iterator] == [3, 4, 5]
        assert list(store.iter_stream("nope")) == []
        assert list(store.iter_stream("s-1", limit=0)) == []
        with pytest.raises(InvalidInputError):
            store.iter_stream("s-1", -1)
        with pytest.raises(InvalidInputError):
            store.iter_stream("")
        with pytest.raises(InvalidInputError):
            store.iter_stream("a\udc80")

    def test_reading_an_unknown_stream_gives_no_events(self, store: EventStore) -> None:
        assert store.read_stream("nope") == []
        assert store.get_events("nope") == []
        assert store.head_version("nope") == 0

    def test_get_events_keeps_the_seed_semantics(self, store: EventStore) -> None:
        events = self._five(store)
        assert _ids(store.get_events("s-1")) == _ids(events)
        assert _ids(store.get_events("s-1", 2)) == _ids(events[2:])

    def test_save_events_is_the_seed_name_for_append(self, store: EventStore) -> None:
        store.save_events("s-1", [_new()], 0)
        with pytest.raises(ValueError, match="concurrent"):
            store.save_events("s-1", [_new()], 0)
        assert store.head_version("s-1") == 1

    # -- the global order ---------------------------------------------------------------

    def test_read_all_returns_events_in_append_order_across_streams(
        self, store: EventStore
    ) -> None:
        appended: list[Event] = []
        for i in range(6):
            stream = f"s-{i % 3}"
            appended += store.append(stream, [_new(i=i), _new(i=i)], ANY).events
        everything = list(store.read_all())
        assert _ids(everything) == _ids(appended)
        positions = [e.position or 0 for e in everything]
        assert all(positions)
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)

    def test_read_all_from_position_is_exclusive_so_checkpoints_pass_back_unchanged(
        self, store: EventStore
    ) -> None:
        self._five(store)
        everything = list(store.read_all())
        checkpoint = everything[1].position
        assert checkpoint is not None
        assert _ids(store.read_all(checkpoint)) == _ids(everything[2:])
        assert _ids(store.read_all(checkpoint, limit=2)) == _ids(everything[2:4])
        last = everything[-1].position
        assert last is not None
        assert list(store.read_all(last)) == []
        assert store.head_position() == last

    def test_read_all_pages_through_a_large_log_in_order(self, store: EventStore) -> None:
        expected: list[uuid.UUID] = []
        for i in range(25):
            expected += _ids(store.append(f"s-{i}", [_new(n=n) for n in range(100)], 0).events)
        assert _ids(store.read_all()) == expected
        assert _ids(store.read_all(limit=1500)) == expected[:1500]

    def test_read_all_order_never_changes_between_reads(self, store: EventStore) -> None:
        for i in range(10):
            store.append(f"s-{i % 4}", [_new(i=i)], ANY)
        first = [(e.position, e.event_id) for e in store.read_all()]
        store.append("s-9", [_new()], ANY)
        second = [(e.position, e.event_id) for e in store.read_all()]
        assert second[: len(first)] == first

    def test_read_all_is_lazy(self, store: EventStore) -> None:
        self._five(store)
        iterator = store.read_all()
        assert next(iterator).version == 1

    def test_empty_store_has_head_position_zero(self, store: EventStore) -> None:
        assert store.head_position() == 0
        assert list(store.read_all()) == []
        assert store.list_streams() == []

    def test_list_streams_names_every_stream_with_its_version(self, store: EventStore) -> None:
        sid = uuid.uuid4()
        store.append("b", [_new()], 0)
        store.append(sid, [_new(), _new()], 0)
        store.append("b", [_new()], 1)
        listed = {(s.stream_id, s.version) for s in store.list_streams()}
        assert listed == {("b", 2), (sid, 2)}

    # -- what goes in comes out ---------------------------------------------------------

    def test_payload_values_round_trip_exactly(self, store: EventStore) -> None:
        data = {
            "amount": Decimal("1234.5600"),
            "tiny": Decimal("-0.000000000000000001"),
            "when": datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC),
            "local": datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
            "offset": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
            "day": date(2024, 2, 29),
            "at": time(23, 59, 59, 999999),
            "span": timedelta(days=-1, seconds=5),
            "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "colour": _Colour.GREEN,
            "money": _Money(Decimal("9.99"), "EUR"),
            "list": [1, "two", None, 3.5, True],
            "tuple": (1, (2, 3), [4]),
            "set": {1, 2, 3},
            "nested": {"deeper": {"amounts": [Decimal("1.1"), Decimal("2.2")]}},
            "none": None,
            "text": "naïve café ✓ 日本語 🎉 \u202eRTL",
            "big": 2**100,
            "bytes": b"\x00\xffdata",
            "__eskit__": "a user key that looks like a tag",
        }
        meta = {"correlation_id": uuid.uuid4(), "user": "zoë", "amount": Decimal("1")}
        store.append("s-1", [NewEvent("Rich", data, meta)], 0)
        (event,) = store.read_stream("s-1")
        assert event.event_data == data
        assert event.metadata == meta
        assert type(event.event_data["amount"]) is Decimal
        assert str(event.event_data["amount"]) == "1234.5600"
        assert type(event.event_data["tuple"]) is tuple
        assert event.event_data["local"].tzinfo == ZoneInfo("Europe/Paris")
        (same,) = list(store.read_all())
        assert same.event_data == data

    def test_typed_domain_events_round_trip(self, store: EventStore) -> None:
        added = _ItemAdded(
            "sku-1", _Money(Decimal("10.00"), "GBP"), ("a", "b"), _Colour.RED, date(2026, 1, 2)
        )
        store.append("cart", [added], 0)
        (event,) = store.read_stream("cart")
        assert event.event_type == "eskit.testing.ItemAdded"
        assert event.schema_version == 2
        assert event.to_domain() == added

    def test_returned_events_do_not_share_state_with_the_store(self, store: EventStore) -> None:
        data = {"items": [1, 2]}
        store.append("s-1", [NewEvent("Happened", data)], 0)
        data["items"].append(3)
        (event,) = store.read_stream("s-1")
        event.event_data["items"].append(99)
        assert store.read_stream("s-1")[0].event_data == {"items": [1, 2]}

    def test_timestamps_are_timezone_aware_utc(self, store: EventStore) -> None:
        paris = datetime(2026, 5, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
        store.append("s-1", [_new(), NewEvent("Happened", {}, timestamp=paris)], 0)
        first, second = store.read_stream("s-1")
        for event in (first, second):
            assert event.timestamp.tzinfo is not None
            assert event.timestamp.utcoffset() == timedelta(0)
        assert second.timestamp == paris
        assert abs(first.timestamp - datetime.now(UTC)) < timedelta(minutes=5)

    def test_seed_style_events_keep_their_ids_and_metadata(self, store: EventStore) -> None:
        event = Event(
            event_id=uuid.uuid4(), aggregate_id="s-1", event_type="Opened",
            event_data={"n": 1}, timestamp=datetime.now(UTC), version=1,
            metadata={"causation_id": "cmd-1"},
        )
        store.save_events("s-1", [event], 0)
        (stored,) = store.get_events("s-1")
        assert stored.event_id == event.event_id
        assert stored.metadata == {"causation_id": "cmd-1"}
        assert stored.position is not None

    def test_uuid_and_string_stream_ids_both_work(self, store: EventStore) -> None:
        sid = uuid.uuid4()
        store.append(sid, [_new()], 0)
        store.append("plain-name", [_new()], 0)
        assert store.read_stream(sid)[0].aggregate_id == sid
        assert store.read_stream(str(sid))[0].version == 1, "a UUID's text names the same stream"
        by_stream = {e.aggregate_id: e for e in store.read_all()}
        assert set(by_stream) == {sid, "plain-name"}
        assert isinstance(next(iter(by_stream)), uuid.UUID)

    @pytest.mark.parametrize(
        "name",
        [
            "quote'\"`", "semi;colon -- comment", "$$dollar$$", "back\\slash",
            "\u202eright-to-left\u200f", "emoji 🎉", "tab\tnew\nline", "x" * MAX_NAME_BYTES,
            "Robert'); DROP TABLE eskit_events;--",
        ],
    )
    def test_hostile_names_round_trip_exactly(self, store: EventStore, name: str) -> None:
        store.append(name, [NewEvent(name, {name: name}, {name: name})], 0)
        (event,) = store.read_stream(name)
        assert event.aggregate_id == name
        assert event.event_type == name
        assert event.event_data == {name: name}
        assert event.metadata == {name: name}
        assert [s.stream_id for s in store.list_streams()] == [name]

    def test_one_megabyte_payload_round_trips(self, store: EventStore) -> None:
        blob = "é" * 600_000  # 1.2 MB of UTF-8
        store.append("big", [_new(blob=blob)], 0)
        assert store.read_stream("big")[0].event_data["blob"] == blob

    def test_payload_over_the_size_limit_is_rejected(self, store: EventStore) -> None:
        store.append("s-1", [_new()], 0)
        huge = "x" * (store.max_event_bytes + 1)
        with pytest.raises(InvalidInputError, match="limit"):
            store.append("s-1", [_new(), _new(blob=huge)], 1)
        assert store.head_version("s-1") == 1

    # -- bad input: a clear error, nothing written --------------------------------------

    @pytest.mark.parametrize("stream_id", [42, None, b"bytes", "", "nul\x00byte", 3.5])
    def test_invalid_stream_id_is_rejected(self, store: EventStore, stream_id: Any) -> None:
        with pytest.raises(InvalidInputError):
            store.append(stream_id, [_new()], ANY)
        with pytest.raises(InvalidInputError):
            store.read_stream(stream_id)
        assert store.head_position() == 0

    @pytest.mark.parametrize("expected", ["1", 1.0, True, -1, 2**63, None, "ANY"])
    def test_invalid_expected_version_is_rejected(self, store: EventStore, expected: Any) -> None:
        with pytest.raises(InvalidInputError):
            store.append("s-1", [_new()], expected)
        assert store.head_position() == 0

    @pytest.mark.parametrize(
        "events",
        [[], (), "not events", {"event_type": "X"}, None, 42],
        ids=["empty-list", "empty-tuple", "str", "dict", "none", "int"],
    )
    def test_a_batch_that_is_not_a_list_of_events_is_rejected(
        self, store: EventStore, events: Any
    ) -> None:
        with pytest.raises(InvalidInputError):
            store.append("s-1", events, ANY)
        assert store.head_position() == 0

    @pytest.mark.parametrize(
        "bad",
        [
            NewEvent("", {}),
            NewEvent("nul\x00type", {}),
            NewEvent("Happened", ["not", "a", "dict"]),  # type: ignore[arg-type]
            NewEvent("Happened", {"x": object()}),
            NewEvent("Happened", {}, timestamp=datetime(2026, 1, 1)),
            NewEvent("Happened", {}, event_id="not-a-uuid"),  # type: ignore[arg-type]
            NewEvent("Happened", {}, schema_version=0),
            NewEvent("Happened", {}, metadata=["x"]),  # type: ignore[arg-type]
            "a string",
            {"event_type": "Happened"},
        ],
        ids=[
            "empty-type", "nul-type", "list-data", "object", "naive-timestamp",
            "str-event-id", "schema-version-0", "list-metadata", "str-event", "dict-event",
        ],
    )
    def test_a_malformed_event_is_rejected_with_the_batch(
        self, store: EventStore, bad: Any
    ) -> None:
        store.append("s-1", [_new()], 0)
        with pytest.raises(InvalidInputError):
            store.append("s-1", [_new(), bad], 1)
        assert store.head_version("s-1") == 1
        (only,) = store.read_all()
        assert store.head_position() == only.position

    def test_event_of_another_aggregate_is_rejected(self, store: EventStore) -> None:
        event = Event(uuid.uuid4(), "other", "Happened", {}, datetime.now(UTC), 1)
        with pytest.raises(InvalidInputError, match="other"):
            store.append("s-1", [event], 0)
        assert store.head_position() == 0

    @pytest.mark.parametrize(
        ("kwargs", "call"),
        [
            ({"from_version": -1}, "stream"), ({"from_version": 2**63}, "stream"),
            ({"from_version": "1"}, "stream"), ({"to_version": -5}, "stream"),
            ({"limit": -1}, "stream"), ({"limit": 1.5}, "stream"),
            ({"backwards": "yes"}, "stream"),
            ({"from_position": -1}, "all"), ({"from_position": None}, "all"),
            ({"limit": -2}, "all"),
        ],
    )
    def test_invalid_read_arguments_are_rejected(
        self, store: EventStore, kwargs: dict[str, Any], call: str
    ) -> None:
        def read() -> object:
            if call == "stream":
                return store.read_stream("s-1", **kwargs)
            return list(store.read_all(**kwargs))

        with pytest.raises(InvalidInputError):
            read()

    # -- hostile input: every store refuses the same, before any I/O ----------------------
    # (The store contract's edges: names, ranges of numbers, retries. Codec-level hostile
    # payloads have a block of their own.)

    @pytest.mark.parametrize(
        "where", ["stream id", "event type", "metadata key", "paired surrogates"]
    )
    def test_a_lone_surrogate_in_a_name_is_refused_with_a_typed_error(
        self, store: EventStore, where: str
    ) -> None:
        store.append("s-1", [_new()], 0)
        bad = "a\udc80b" if where != "paired surrogates" else "\ud83d\ude00"
        stream = bad if where in ("stream id", "paired surrogates") else "s-1"
        event = NewEvent(
            bad if where == "event type" else "Happened", {},
            {bad: 1} if where == "metadata key" else {},
        )
        with pytest.raises(InvalidInputError, match="surrogate"):
            store.append(stream, [_new(), event], ANY)
        self._assert_only_s1_at_version_one(store)
        if stream != "s-1":
            with pytest.raises(InvalidInputError, match="surrogate"):
                store.read_stream(stream)
            with pytest.raises(InvalidInputError, match="surrogate"):
                store.head_version(stream)

    @pytest.mark.parametrize("wide", [False, True], ids=["ascii", "four-byte-characters"])
    def test_an_incompressible_stream_id_at_the_maximum_length_round_trips(
        self, store: EventStore, wide: bool
    ) -> None:
        name = _incompressible(MAX_NAME_BYTES, wide=wide)
        assert len(name.encode()) == MAX_NAME_BYTES
        store.append(name, [NewEvent(name, {"n": 1}, {name: name})], 0)
        store.append(name, [_new(n=2)], 1)
        first, second = store.read_stream(name)
        assert (first.aggregate_id, first.event_type, first.metadata) == (name, name, {name: name})
        assert second.version == 2
        assert [s.stream_id for s in store.list_streams()] == [name]

    @pytest.mark.parametrize("where", ["stream id", "event type", "metadata key"])
    @pytest.mark.parametrize("wide", [False, True], ids=["ascii", "four-byte-characters"])
    def test_a_name_one_byte_over_the_maximum_is_refused_with_a_typed_error(
        self, store: EventStore, where: str, wide: bool
    ) -> None:
        # The limit counts bytes of UTF-8, not characters: 513 wide characters are over.
        name = _incompressible(MAX_NAME_BYTES, wide=wide) + "x"
        store.append("s-1", [_new()], 0)
        event = NewEvent(
            name if where == "event type" else "Happened", {},
            {name: 1} if where == "metadata key" else {},
        )
        with pytest.raises(InvalidInputError, match=f"limit of {MAX_NAME_BYTES}"):
            store.append(name if where == "stream id" else "s-1", [_new(), event], ANY)
        self._assert_only_s1_at_version_one(store)

    def _all_visible(self, store: EventStore, count: int, timeout: float = 30.0) -> list[Event]:
        # A store may show a commit in its global order a little late (PostgreSQL, while
        # another transaction on the cluster is open); wait for it, bounded.
        deadline = time_module.monotonic() + timeout
        while len(events := list(store.read_all())) < count:
            assert time_module.monotonic() < deadline, f"only {len(events)} of {count} visible"
            time_module.sleep(0.05)
        return events

    def _assert_only_s1_at_version_one(self, store: EventStore) -> None:
        # By stream, not by position: a store's global order may show a commit late
        # (PostgreSQL's visibility horizon), its streams never do.
        assert [(s.stream_id, s.version) for s in store.list_streams()] == [("s-1", 1)]
        assert len(store.read_stream("s-1")) == 1

    def test_positions_versions_and_limits_at_the_edges_of_their_range_are_answered(
        self, store: EventStore
    ) -> None:
        self._five(store)
        max_version = 2**63 - 1
        everything = self._all_visible(store, 5)
        # Positions are opaque (PostgreSQL's exceed 64 bits): whatever the store, a
        # checkpoint anywhere in the documented range reads what lies after it.
        for position in (2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**127, 2**128 - 1):
            after = [e for e in everything if (e.position or 0) > position]
            assert _ids(store.read_all(position)) == _ids(after), position
        assert list(store.read_all(2**128 - 1)) == []
        assert len(list(store.read_all(0, limit=2**63))) == 5
        assert len(list(store.read_all(0, limit=2**128))) == 5
        for limit in (2**63 - 1, 2**63, 2**200):
            assert [e.version for e in store.read_stream("s-1", limit=limit)] == [1, 2, 3, 4, 5]
            assert len(store.read_stream("s-1", backwards=True, limit=limit)) == 5
        assert len(store.read_stream("s-1", 0, max_version)) == 5
        assert store.read_stream("s-1", max_version) == []
        assert store.read_stream("s-1", max_version - 1, max_version, backwards=True) == []
        with pytest.raises(ConcurrencyError):
            store.append("s-1", [_new()], max_version)

    @pytest.mark.parametrize(
        ("kwargs", "call"),
        [
            ({"from_version": 2**63}, "stream"), ({"to_version": 2**63}, "stream"),
            ({"from_position": 2**128}, "all"), ({"from_position": 2**200}, "all"),
        ],
    )
    def test_numbers_beyond_the_documented_ranges_are_refused_with_a_typed_error(
        self, store: EventStore, kwargs: dict[str, Any], call: str
    ) -> None:
        def read() -> object:
            if call == "stream":
                return store.read_stream("s-1", **kwargs)
            return store.read_all(**kwargs)

        with pytest.raises(InvalidInputError):
            read()

    def test_a_retry_whose_payload_has_its_keys_in_another_order_is_a_retry(
        self, store: EventStore
    ) -> None:
        first = NewEvent("Paid", {"amount": Decimal("10.00"), "to": {"iban": "X", "bic": "Y"}})
        store.append("acc", [first], 0)
        again = NewEvent(
            "Paid", {"to": {"bic": "Y", "iban": "X"}, "amount": Decimal("10.00")},
            event_id=first.event_id,
        )
        result = store.append("acc", [again], 0)
        assert result.duplicate is True
        assert len(store.read_stream("acc")) == 1
        # Only the order of keys is ignored: equal-comparing values of another type or
        # precision are different data.
        for data in ({"amount": Decimal("10.0"), "to": {"iban": "X", "bic": "Y"}},
                     {"amount": Decimal("10.00"), "to": {"iban": "X", "bic": "Y", "x": 1}}):
            with pytest.raises(DuplicateEventError):
                store.append("acc", [NewEvent("Paid", data, event_id=first.event_id)], 0)

    # -- the schema version a plain dict is written at -------------------------------------

    def test_a_dict_event_of_a_registered_type_is_stored_at_its_registered_version(
        self, store: EventStore
    ) -> None:
        data: dict[str, Any] = {
            "sku": "sku-1", "price": _Money(Decimal("1.50"), "EUR"), "tags": ("a",),
            "colour": _Colour.RED, "added_on": date(2026, 1, 2),
        }
        store.append("cart", [NewEvent("eskit.testing.ItemAdded", data)], 0)
        (event,) = store.read_stream("cart")
        assert event.schema_version == 2
        assert event.to_domain() == _ItemAdded(**data)

    @pytest.mark.parametrize("change", ["unknown-field", "missing-field"])
    def test_a_dict_event_that_does_not_fit_its_registered_class_is_refused(
        self, store: EventStore, change: str
    ) -> None:
        data: dict[str, Any] = {
            "sku": "sku-1", "price": _Money(Decimal("1.50"), "EUR"), "tags": ("a",),
            "colour": _Colour.RED, "added_on": date(2026, 1, 2),
        }
        if change == "unknown-field":
            data["legacy_price"] = "1.50"
        else:
            del data["colour"]
        with pytest.raises(InvalidInputError, match="does not fit"):
            store.append("cart", [_new(), NewEvent("eskit.testing.ItemAdded", data)], 0)
        assert store.list_streams() == []

    def test_a_dict_event_of_a_type_without_a_class_is_stored_at_version_one_unless_told(
        self, store: EventStore
    ) -> None:
        store.append("n", [
            NewEvent("EskitContractNoted", {"text": "older shape"}),
            NewEvent("EskitContractNoted", {"text": "today's shape", "by": "me"}, schema_version=2),
        ], 0)
        older, today = store.read_stream("n")
        assert (older.schema_version, older.event_data["by"]) == (2, "unknown")
        assert (today.schema_version, today.event_data["by"]) == (2, "me")

    def test_a_dict_raised_by_an_aggregate_is_stored_at_its_registered_version(
        self, store: EventStore
    ) -> None:
        class Cart(Aggregate):
            def __init__(self, cart_id: Any) -> None:
                super().__init__(cart_id)
                self.skus: list[str] = []

            @handles(_ItemAdded)
            def _added(self, event: _ItemAdded) -> None:
                self.skus.append(event.sku)

        data: dict[str, Any] = {
            "sku": "sku-1", "price": _Money(Decimal("1.50"), "EUR"), "tags": (),
            "colour": _Colour.GREEN, "added_on": date(2026, 1, 2),
        }
        cart = Cart("cart-9")
        assert cart.raise_event("eskit.testing.ItemAdded", data).schema_version == 2
        assert cart.skus == ["sku-1"]
        store.append("cart-9", cart.get_uncommitted_events(), 0)
        (stored,) = store.read_stream("cart-9")
        assert stored.schema_version == 2
        assert stored.to_domain() == _ItemAdded(**data)
        with pytest.raises(InvalidInputError, match="does not fit"):
            cart.raise_event("eskit.testing.ItemAdded", {"sku": "sku-2"})
        assert cart.version == 1
        assert cart.skus == ["sku-1"]

    # -- unknown event types on read ----------------------------------------------------

    def test_unknown_event_type_on_read_is_a_clear_error(self, store: EventStore) -> None:
        store.append("s-1", [NewEvent("NeverRegistered", {"x": 1})], 0)
        (event,) = store.read_stream("s-1")
        assert event.event_type == "NeverRegistered", "raw reads still work"
        with pytest.raises(UnknownEventTypeError) as caught:
            event.to_domain()
        assert caught.value.event_type == "NeverRegistered"
        assert caught.value.stream_id == "s-1"
        assert caught.value.version == 1

    def test_aggregate_without_a_handler_for_a_stored_event_fails_loudly(
        self, store: EventStore
    ) -> None:
        class Counter(Aggregate):
            def handle_Counted(self, data: dict[str, Any]) -> None:
                pass

        store.append("c-1", [NewEvent("Counted"), NewEvent("Mystery")], 0)
        with pytest.raises(UnknownEventTypeError, match="Mystery"):
            Repository(store).get("c-1", Counter)
        with pytest.raises(AggregateNotFound):
            Repository(store).get("c-2", Counter)

    # -- threads ------------------------------------------------------------------------

    def test_threads_racing_on_one_stream_get_exactly_one_winner_per_version(
        self, store: EventStore
    ) -> None:
        wins: list[int] = []
        losses: list[BaseException] = []
        lock = threading.Lock()

        def writer() -> None:
            for _ in range(25):
                head = store.head_version("race")
                try:
                    store.append("race", [_new()], head)
                except ConcurrencyError as exc:
                    with lock:
                        losses.append(exc)
                except BaseException as exc:  # anything else fails the test below
                    with lock:
                        losses.append(exc)
                else:
                    with lock:
                        wins.append(head + 1)

        threads = [threading.Thread(target=writer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(isinstance(e, ConcurrencyError) for e in losses), losses[:3]
        versions = [e.version for e in store.read_stream("race")]
        assert versions == list(range(1, len(wins) + 1))
        assert sorted(wins) == versions
        assert len(wins) + len(losses) == 200

    def test_threads_on_different_streams_lose_nothing(self, store: EventStore) -> None:
        def writer(n: int) -> None:
            for i in range(50):
                store.append(f"t-{n}", [_new(i=i)], i)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        everything = list(store.read_all())
        assert len(everything) == 300
        for n in range(6):
            assert [e.event_data["i"] for e in store.read_stream(f"t-{n}")] == list(range(50))
        positions = [e.position or 0 for e in everything]
        assert positions == sorted(positions)

    # -- time travel: version_at ---------------------------------------------------------

    def test_version_at_is_the_last_version_recorded_at_or_before_the_moment(
        self, store: EventStore
    ) -> None:
        t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
        store.append("tt", [
            NewEvent("E", {"i": i}, timestamp=t0 + timedelta(minutes=i)) for i in range(5)
        ], 0)
        assert store.version_at("tt", t0 - timedelta(microseconds=1)) == 0
        assert store.version_at("tt", t0) == 1
        assert store.version_at("tt", t0 + timedelta(minutes=2, seconds=30)) == 3
        assert store.version_at("tt", t0 + timedelta(minutes=4)) == 5
        assert store.version_at("tt", t0 + timedelta(days=1)) == 5
        later_zone = timezone(timedelta(hours=2))
        assert store.version_at("tt", (t0 + timedelta(minutes=1)).astimezone(later_zone)) == 2
        assert store.version_at("no-such-stream", t0) == 0

    def test_version_at_goes_by_version_when_timestamps_go_backwards(
        self, store: EventStore
    ) -> None:
        t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
        skewed = [t0, t0 + timedelta(minutes=10), t0 + timedelta(minutes=5)]
        store.append("skew", [NewEvent("E", timestamp=ts) for ts in skewed], 0)
        # Version 3 was recorded (by its clock) at minute 5: the state at minute 6
        # is the state after version 3, which includes version 2.
        assert store.version_at("skew", t0 + timedelta(minutes=6)) == 3
        assert store.version_at("skew", t0 + timedelta(minutes=4)) == 1

    @pytest.mark.parametrize("as_of", [datetime(2025, 1, 1), "2025-01-01", None])
    def test_version_at_needs_an_aware_datetime(self, store: EventStore, as_of: Any) -> None:
        with pytest.raises(InvalidInputError):
            store.version_at("s", as_of)


    # -- read your writes: wait_for ------------------------------------------------------

    def test_wait_for_returns_true_once_an_appended_position_is_visible(
        self, store: EventStore
    ) -> None:
        result = store.append("w", [_new(), _new()], 0)
        assert store.wait_for(result.position, timeout=5) is True
        assert [e.event_id for e in store.read_all()] == [e.event_id for e in result.events]
        assert store.wait_for(0, timeout=0) is True

    def test_wait_for_returns_false_after_the_timeout_for_a_position_not_reached(
        self, store: EventStore
    ) -> None:
        store.append("w", [_new()], 0)
        started = time_module.monotonic()
        assert store.wait_for(2**128 - 1, timeout=0.05) is False
        assert time_module.monotonic() - started >= 0.05

    @pytest.mark.parametrize(
        ("position", "timeout"),
        [(-1, 1.0), (2**128, 1.0), (1.5, 1.0), ("1", 1.0), (True, 1.0), (None, 1.0),
         (1, -0.1), (1, float("nan")), (1, float("inf")), (1, "1"), (1, True), (1, None)],
    )
    def test_wait_for_rejects_bad_arguments(
        self, store: EventStore, position: Any, timeout: Any
    ) -> None:
        with pytest.raises(InvalidInputError):
            store.wait_for(position, timeout)
