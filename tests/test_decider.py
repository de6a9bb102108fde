"""Deciders are pure: decide and evolve over typed or untyped events, fold in order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from eskit import Event, EventRegistry, InvalidInputError, NewEvent, decider, fold
from eskit.decider import Decider, as_decider_event

registry = EventRegistry()


@dataclass(frozen=True)
class Added:
    amount: int


registry.register(Added, "decider-test.Added")


@dataclass(frozen=True)
class Add:
    amount: int


def decide(command: Add, total: int) -> list[Added]:
    if total + command.amount > 100:
        raise ValueError("over the limit")
    return [Added(command.amount)] if command.amount else []


def evolve(total: int, event: Added) -> int:
    return total + event.amount


adder = decider(decide, evolve, 0)


class ClassDecider:
    """A class with the three members is a Decider too (structural typing)."""

    initial_state: tuple[str, ...] = ()

    def decide(self, command: str, state: tuple[str, ...]) -> list[NewEvent]:
        return [NewEvent("Noted", {"text": command})]

    def evolve(self, state: tuple[str, ...], event: Event) -> tuple[str, ...]:
        return (*state, event.event_data["text"])


def stored(event_type: str, data: dict[str, object], version: int = 1) -> Event:
    return Event(uuid4(), "s-1", event_type, dict(data), datetime.now(UTC), version)


def test_fold_applies_events_in_the_order_given_from_the_initial_state() -> None:
    assert fold(adder, []) == 0
    assert fold(adder, [Added(1), Added(2), Added(30)]) == 33
    trail = decider(lambda c, s: [], lambda s, e: (*s, e), ())
    assert fold(trail, ["a", "b", "c"]) == ("a", "b", "c")


def test_decide_sees_the_folded_state_and_refuses_by_raising() -> None:
    state = fold(adder, [Added(60)])
    assert adder.decide(Add(40), state) == [Added(40)]
    with pytest.raises(ValueError, match="over the limit"):
        adder.decide(Add(41), state)
    assert adder.decide(Add(0), state) == []


def test_a_class_with_decide_evolve_and_initial_state_is_a_decider() -> None:
    d: Decider[str, tuple[str, ...], object] = ClassDecider()  # type: ignore[assignment]
    events = d.decide("hi", d.initial_state)
    assert [e.event_type for e in events] == ["Noted"]  # type: ignore[attr-defined]
    assert fold(ClassDecider(), [stored("Noted", {"text": "a"}), stored("Noted", {"text": "b"})]) \
        == ("a", "b")


def test_a_stored_event_of_a_registered_type_reaches_evolve_as_its_domain_event() -> None:
    event = stored("decider-test.Added", {"amount": 5})
    assert as_decider_event(event, registry) == Added(5)


def test_a_stored_event_of_an_unregistered_type_reaches_evolve_as_the_event() -> None:
    event = stored("decider-test.Plain", {"x": 1})
    assert as_decider_event(event, registry) is event


def test_decider_refuses_non_callables_before_anything_runs() -> None:
    with pytest.raises(InvalidInputError, match="callables"):
        decider("decide", evolve, 0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="callables"):
        decider(decide, None, 0)  # type: ignore[arg-type]
