"""Events are immutable facts; typed events keep a stable stored name."""

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from eskit import (
    DecodingError,
    Event,
    EventRegistry,
    InvalidInputError,
    NewEvent,
    domain_event,
    utc_now,
)


def test_recorded_events_are_immutable() -> None:
    event = Event(uuid.uuid4(), "s", "Happened", {}, utc_now(), 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.version = 2  # type: ignore[misc]
    assert event.stream_id == "s"
    assert event.position == 0, "0 until a store records it"
    assert event.metadata == {}
    assert event.schema_version == 1


def test_utc_now_is_timezone_aware() -> None:
    assert utc_now().tzinfo is UTC


def test_new_events_get_a_fresh_id_each() -> None:
    assert NewEvent("A").event_id != NewEvent("A").event_id


def test_domain_event_must_be_a_frozen_dataclass() -> None:
    registry = EventRegistry()
    with pytest.raises(InvalidInputError, match="frozen"):

        @domain_event("Mutable", registry=registry)
        @dataclass
        class Mutable:
            x: int

    with pytest.raises(InvalidInputError, match="dataclass"):
        domain_event("NotADataclass", registry=registry)(int)


def test_stored_name_is_the_declared_name_not_the_class_name() -> None:
    registry = EventRegistry()

    @domain_event("shop.OrderPlaced", version=3, registry=registry)
    @dataclass(frozen=True)
    class OrderPlacedV3:
        order_id: str
        total: Decimal

    name, data, version = registry.from_domain(OrderPlacedV3("o-1", Decimal("5")))
    assert (name, data, version) == ("shop.OrderPlaced", {"order_id": "o-1", "total": 5}, 3)
    recorded = Event(uuid.uuid4(), "o-1", name, data, datetime.now(UTC), 1)
    assert registry.to_domain(recorded) == OrderPlacedV3("o-1", Decimal("5"))


def test_one_name_cannot_belong_to_two_different_classes() -> None:
    registry = EventRegistry()

    @domain_event("Dup", registry=registry)
    @dataclass(frozen=True)
    class First:
        x: int

    with pytest.raises(InvalidInputError, match="already registered"):

        @domain_event("Dup", registry=registry)
        @dataclass(frozen=True)
        class Second:
            y: int


def test_stored_data_that_no_longer_fits_the_class_is_a_decoding_error() -> None:
    registry = EventRegistry()

    @domain_event("Renamed", registry=registry)
    @dataclass(frozen=True)
    class Renamed:
        new_field: int

    old = Event(uuid.uuid4(), "s", "Renamed", {"old_field": 1}, utc_now(), 4)
    with pytest.raises(DecodingError, match="version 4"):
        registry.to_domain(old)


def test_to_domain_with_expect_checks_the_class() -> None:
    registry = EventRegistry()

    @domain_event("Expected", registry=registry)
    @dataclass(frozen=True)
    class Expected:
        n: int

    @domain_event("Other", registry=registry)
    @dataclass(frozen=True)
    class Other:
        n: int

    event = Event(uuid.uuid4(), "s", "Expected", {"n": 1}, utc_now(), 1)
    assert event.to_domain(registry, expect=Expected) == Expected(1)
    with pytest.raises(DecodingError, match=r"is a .*Expected, not a .*Other"):
        event.to_domain(registry, expect=Other)


def test_raised_events_have_position_zero_and_stored_ones_a_positive_position() -> None:
    from eskit import Aggregate, InMemoryEventStore, Repository

    class Thing(Aggregate):
        def handle_Made(self, data: dict[str, object]) -> None:
            pass

    thing = Thing("t")
    raised = thing.raise_event("Made", {})
    assert raised.position == 0
    result = Repository(InMemoryEventStore()).save(thing)
    assert result is not None
    assert result.events[0].position > 0
