"""Aggregates apply events through seed-style or typed handlers, in version order."""

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from eskit import (
    Aggregate,
    Event,
    EventOrderError,
    InvalidInputError,
    UnknownEventTypeError,
    domain_event,
    handles,
)


@domain_event("tests.Counted")
@dataclass(frozen=True)
class Counted:
    by: Decimal


class Counter(Aggregate):
    def __init__(self, aggregate_id: Any, label: str, *, unit: str, start: int = 0) -> None:
        super().__init__(aggregate_id)
        self.label = label
        self.unit = unit
        self.total = Decimal(start)
        self.notes: list[str] = []

    def count(self, by: Decimal) -> None:
        if by <= 0:
            raise ValueError("count by a positive amount")
        self.raise_event(Counted(by))

    @handles(Counted)
    def _counted(self, event: Counted) -> None:
        self.total += event.by

    def handle_Noted(self, data: dict[str, Any]) -> None:
        self.notes.append(data["text"])


def test_typed_events_are_applied_by_their_class_handler() -> None:
    counter = Counter(uuid.uuid4(), "c", unit="x")
    counter.count(Decimal("1.5"))
    counter.count(Decimal("2"))
    assert counter.total == Decimal("3.5")
    assert counter.version == 2
    events = counter.get_uncommitted_events()
    assert [e.event_type for e in events] == ["tests.Counted", "tests.Counted"]
    assert [e.version for e in events] == [1, 2]
    assert events[0].event_data == {"by": Decimal("1.5")}
    assert events[0].timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_seed_style_events_are_applied_by_handle_methods() -> None:
    counter = Counter("c-1", "c", unit="x")
    event = counter.raise_event("Noted", {"text": "hello"}, metadata={"user": "ann"})
    assert counter.notes == ["hello"]
    assert event.metadata == {"user": "ann"}
    assert event.aggregate_id == "c-1"


def test_a_failed_command_raises_no_event() -> None:
    counter = Counter("c-1", "c", unit="x")
    with pytest.raises(ValueError, match="positive"):
        counter.count(Decimal(0))
    assert counter.get_uncommitted_events() == []
    assert counter.version == 0


def test_mark_events_as_committed_clears_the_uncommitted_list() -> None:
    counter = Counter("c-1", "c", unit="x")
    counter.count(Decimal(1))
    counter.mark_events_as_committed()
    assert counter.get_uncommitted_events() == []
    assert counter.version == 1


def test_replaying_recorded_events_rebuilds_state() -> None:
    source = Counter("c-1", "c", unit="x")
    source.count(Decimal(2))
    source.raise_event("Noted", {"text": "n"})
    replica = Counter.create_blank("c-1")
    for event in source.get_uncommitted_events():
        replica.apply_event(event)
    assert (replica.total, replica.notes, replica.version) == (Decimal(2), ["n"], 2)


def test_create_blank_fills_extra_required_init_arguments() -> None:
    blank = Counter.create_blank("c-9")
    assert blank.aggregate_id == "c-9"
    assert blank.label is None
    assert blank.unit is None
    assert blank.total == 0, "defaulted parameters keep their defaults"


def test_an_event_out_of_version_order_is_refused() -> None:
    counter = Counter("c-1", "c", unit="x")
    stray = Event(uuid.uuid4(), "c-1", "Noted", {"text": "x"}, counter.raise_event(
        "Noted", {"text": "a"}).timestamp, 5)
    with pytest.raises(EventOrderError, match="version 5"):
        counter.apply_event(stray)
    assert counter.notes == ["a"]


def test_an_event_without_a_handler_is_an_error_unless_ignored() -> None:
    counter = Counter("c-1", "c", unit="x")
    with pytest.raises(UnknownEventTypeError, match="Counter has no handler"):
        counter.raise_event("Mystery", {})

    class Lenient(Counter):
        ignore_unknown_events = True

    lenient = Lenient("c-2", "c", unit="x")
    lenient.raise_event("Mystery", {})
    assert lenient.version == 1


def test_handlers_are_inherited_by_subclasses() -> None:
    class Special(Counter):
        pass

    special = Special("s", "c", unit="x")
    special.count(Decimal(4))
    assert special.total == 4


def test_passing_both_a_domain_event_and_data_is_refused() -> None:
    counter = Counter("c-1", "c", unit="x")
    with pytest.raises(InvalidInputError):
        counter.raise_event(Counted(Decimal(1)), {"by": 2})
    with pytest.raises(InvalidInputError, match="not a registered domain event"):
        counter.raise_event(object())
