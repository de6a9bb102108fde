"""Contract cases about payloads and upcasting, mixed into :class:`EventStoreContract`.

They need only the ``store`` fixture of the contract class. Hostile payloads
(values Python itself chokes on) must be typed errors raised before any I/O,
with nothing written; non-string dict keys round-trip exactly; split events are
seen by every reader, and a checkpoint after a split resumes after it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from eskit.errors import EncodingError, InvalidInputError
from eskit.events import NewEvent
from eskit.stores.base import EventStore
from eskit.upcasting import SPLIT_KEY

__all__ = ["CodecContract"]


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _self_referential() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _read_all(store: EventStore, after: int, count: int, limit: int | None = None) -> list[Any]:
    """``read_all`` once ``count`` events are visible (bounded by 10 s).

    A store may show committed events a little later than it acknowledges them
    (PostgreSQL waits for older transactions on the cluster to end), never out of order.
    """
    deadline = time.monotonic() + 10
    while True:
        events = list(store.read_all(after, limit))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


_EAST = timezone(timedelta(hours=14))
_WEST = timezone(timedelta(hours=-12))

HOSTILE_PAYLOADS: dict[str, Any] = {
    "nested-10000-deep": lambda: NewEvent("Happened", {"x": _nested(10_000)}),
    "self-referential-list": lambda: NewEvent("Happened", {"x": _self_referential()}),
    "int-of-5000-digits": lambda: NewEvent("Happened", {"x": 10**5000}),
    "lone-surrogate-in-value": lambda: NewEvent("Happened", {"x": "a\ud800b"}),
    "lone-surrogate-in-key": lambda: NewEvent("Happened", {"k\udfff": 1}),
    "lone-surrogate-in-metadata-key": lambda: NewEvent("Happened", {}, {"m\ud800": 1}),
    "lone-surrogate-in-event-type": lambda: NewEvent("Happened\ud800", {}),
    "naive-datetime-in-payload": lambda: NewEvent("Happened", {"at": datetime(2026, 1, 1)}),
    "timestamp-before-year-1-in-utc": lambda: NewEvent(
        "Happened", {}, timestamp=datetime(1, 1, 1, tzinfo=_EAST)
    ),
    "timestamp-after-year-9999-in-utc": lambda: NewEvent(
        "Happened", {}, timestamp=datetime(9999, 12, 31, 23, tzinfo=_WEST)
    ),
}


class CodecContract:
    """Payload and upcasting guarantees of every store (mixed into the contract suite)."""

    # -- hostile payloads (issue 10): typed errors before any I/O ---------------------------

    @pytest.mark.parametrize("case", sorted(HOSTILE_PAYLOADS))
    def test_a_hostile_payload_is_a_typed_error_and_writes_nothing(
        self, store: EventStore, case: str
    ) -> None:
        first = store.append("hostile", [NewEvent("Happened")], 0).events[0]
        bad = HOSTILE_PAYLOADS[case]()
        with pytest.raises(InvalidInputError) as caught:
            store.append("hostile", [NewEvent("Happened"), bad], 1)
        assert "event 1 of the batch" in str(caught.value)
        # Event types and metadata keys are names, refused as such before encoding
        # (see the "hostile input" block of the store contract); values are the codec's.
        is_name = "type" in case or "metadata-key" in case
        if ("surrogate" in case and not is_name) or "deep" in case or "digits" in case:
            assert isinstance(caught.value, EncodingError)
        assert store.head_version("hostile") == 1
        assert [e.event_id for e in store.read_stream("hostile")] == [first.event_id]

    @pytest.mark.parametrize(
        "as_of",
        [datetime(1, 1, 1, tzinfo=_EAST), datetime(9999, 12, 31, 23, tzinfo=_WEST)],
        ids=["before-year-1-in-utc", "after-year-9999-in-utc"],
    )
    def test_version_at_a_moment_out_of_range_in_utc_is_an_invalid_input_error(
        self, store: EventStore, as_of: datetime
    ) -> None:
        store.append("hostile", [NewEvent("Happened")], 0)
        with pytest.raises(InvalidInputError, match="out of range"):
            store.version_at("hostile", as_of)

    def test_limits_themselves_round_trip(self, store: EventStore) -> None:
        data = {
            "deep": _nested(62),  # 64 containers counting the payload dict: the most allowed
            "big": -(10**4300 - 1),
            "at": datetime(9999, 12, 31, 23, tzinfo=_EAST),
            "early": datetime(1, 1, 1, 12, tzinfo=_EAST),
        }
        store.append("limits", [NewEvent("Happened", data)], 0)
        assert store.read_stream("limits")[0].event_data == data

    # -- non-string keys (issue 12) -------------------------------------------------------

    def test_dicts_with_non_string_keys_round_trip_exactly(self, store: EventStore) -> None:
        data: dict[str, dict[Any, Any]] = {
            "by_id": {uuid.UUID(int=3): 1, uuid.UUID(int=1): 2},
            "cells": {(0, 1): Decimal("1.50"), (1, 0): None},
            "rounds": {1: "a", -2: "b"},
            "mixed": {"s": 1, 2: "x", datetime(2026, 1, 1, tzinfo=UTC): True},
        }
        store.append("keys", [NewEvent("Happened", data)], 0)
        for event in (store.read_stream("keys")[0], store.read_stream("keys", backwards=True)[0]):
            assert event.event_data == data
            for name, mapping in data.items():
                assert [(type(k), k) for k in event.event_data[name]] == [
                    (type(k), k) for k in mapping
                ]

    # -- pydantic models (issue 11): the same exact round trip as a dataclass -------------

    def test_a_frozen_pydantic_event_round_trips_exactly(self, store: EventStore) -> None:
        pydantic = pytest.importorskip("pydantic")  # eskit[fastapi]; the dev extra has it
        from eskit.events import domain_event

        class Line(pydantic.BaseModel):  # type: ignore[misc, name-defined]
            sku: str
            price: Decimal

        @domain_event("eskit.testing.PydanticPlaced", registry=store.registry)
        class Placed(pydantic.BaseModel):  # type: ignore[misc, name-defined]
            model_config = pydantic.ConfigDict(frozen=True)
            order_id: uuid.UUID
            total: Decimal
            at: datetime
            lines: tuple[Line, ...]

        placed = Placed(order_id=uuid.uuid4(), total=Decimal("10.50"),
                        at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=_EAST),
                        lines=(Line(sku="pen", price=Decimal("0.10")),))
        store.append("pydantic", [placed], 0)
        for event in (store.read_stream("pydantic")[0], _read_all(store, 0, 1)[0]):
            back = event.to_domain(store.registry, expect=Placed)
            assert back == placed
            assert str(back.total) == "10.50"
            assert back.at.utcoffset() == timedelta(hours=14)
            assert type(back.lines[0]) is Line

    # -- splits (issue 14): one upcasting path for every reader ---------------------------

    @pytest.fixture
    def split_type(self, store: EventStore) -> Iterator[str]:
        """A stored type that today's code reads as two parts, on the store's registry."""
        name = f"eskit.testing.PlacedAndPaid-{uuid.uuid4().hex}"
        rules = store.registry.rules

        def split(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
            return [("eskit.testing.Placed", {"id": data["id"]}),
                    ("eskit.testing.Paid", {"id": data["id"], "amount": data["amount"]})]

        rules.add_split(name, split)
        try:
            yield name
        finally:
            rules.remove_split(name)

    def test_every_reader_sees_the_parts_of_a_split_event(
        self, store: EventStore, split_type: str
    ) -> None:
        store.append("order-1", [
            NewEvent("Opened"), NewEvent(split_type, {"id": 1, "amount": Decimal("9.50")}),
        ], 0)
        store.append("order-2", [NewEvent("Closed")], 0)
        expected = ["Opened", "eskit.testing.Placed", "eskit.testing.Paid"]
        by_stream = store.read_stream("order-1")
        assert [e.event_type for e in by_stream] == expected
        assert [e.event_type for e in store.get_events("order-1")] == expected
        everything = _read_all(store, 0, 4)
        assert [e.event_type for e in everything] == [*expected, "Closed"]
        placed, paid = by_stream[1:]
        assert (placed.version, paid.version) == (2, 2)
        assert placed.position == paid.position == everything[1].position
        assert paid.event_data == {"id": 1, "amount": Decimal("9.50")}
        assert placed.metadata[SPLIT_KEY]["parts"] == 2
        assert [e.event_id for e in store.read_stream("order-1")] == [
            e.event_id for e in by_stream
        ], "the parts' ids are the same on every read"

    def test_a_checkpoint_after_a_split_resumes_without_repeating_or_losing_parts(
        self, store: EventStore, split_type: str
    ) -> None:
        store.append("order-1", [NewEvent(split_type, {"id": 1, "amount": 1})], 0)
        store.append("order-2", [NewEvent("Later")], 0)
        # A batch of one stored event holds both parts: a page never ends inside a split.
        _read_all(store, 0, 3)
        first_batch = list(store.read_all(0, limit=1))
        assert [e.event_type for e in first_batch] == [
            "eskit.testing.Placed", "eskit.testing.Paid",
        ]
        checkpoint = first_batch[-1].position
        assert [e.event_type for e in store.read_all(checkpoint)] == ["Later"]
        subscription = store.subscribe(0, page_size=1, poll_interval=0.01)
        seen = []
        for event in subscription:
            seen.append((event.event_type, subscription.position))
            if event.event_type == "Later":
                subscription.stop()
        assert [t for t, _ in seen] == ["eskit.testing.Placed", "eskit.testing.Paid", "Later"]
        assert seen[0][1] == 0, "mid-split the checkpoint stays before the split"
        assert seen[1][1] == checkpoint
