"""Deciders: the functional alternative to aggregates, with no I/O and no mutable object.

A decider is three things::

    decide(command, state) -> events      # check the rules, say what happens
    evolve(state, event) -> state         # apply one event to the state
    initial_state                          # the state before any event

``fold(decider, events)`` gives the state after some events. A command handler
(:class:`eskit.CommandHandler`, :class:`eskit.aio.AsyncCommandHandler`) loads the
events, folds them, decides and appends what ``decide`` returned.

Events a decider *returns* are what a store appends: instances of registered
domain event classes (``@domain_event``) or :class:`~eskit.NewEvent`. Events a
decider *evolves* over are those a handler reads back: the domain event instance
when the stored type has a registered class, the stored :class:`~eskit.Event`
otherwise (see :func:`as_decider_event`). So a decider written with typed events
sees the same objects in ``decide``'s output and in ``evolve``'s input.

Any object with ``decide``, ``evolve`` and ``initial_state`` is a
:class:`Decider` (a Protocol); :func:`decider` builds one from plain functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from eskit.errors import InvalidInputError
from eskit.events import Event, EventRegistry, default_registry

__all__ = ["Decider", "FunctionDecider", "as_decider_event", "decider", "fold"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")
C_contra = TypeVar("C_contra", contravariant=True)


class Decider(Protocol[C_contra, S, E]):
    """What a command handler needs: ``decide``, ``evolve`` and ``initial_state``.

    ``decide`` must not change ``state`` and should raise (a domain error) to
    refuse a command; an empty result means "nothing to do" and appends nothing.
    ``evolve`` must not fail on an event ``decide`` produced: it is replayed on
    every load. Neither may do I/O: a handler may call them again after a
    conflict, on fresher state.
    """

    @property
    def initial_state(self) -> S: ...

    def decide(self, command: C_contra, state: S, /) -> Sequence[E]: ...

    def evolve(self, state: S, event: E, /) -> S: ...


@dataclass(frozen=True, slots=True)
class FunctionDecider(Generic[C, S, E]):
    """A :class:`Decider` made of plain functions (what :func:`decider` returns)."""

    decide_fn: Callable[[C, S], Sequence[E]]
    evolve_fn: Callable[[S, E], S]
    initial_state: S

    def decide(self, command: C, state: S, /) -> Sequence[E]:
        return self.decide_fn(command, state)

    def evolve(self, state: S, event: E, /) -> S:
        return self.evolve_fn(state, event)


def decider(
    decide: Callable[[C, S], Sequence[E]],
    evolve: Callable[[S, E], S],
    initial_state: S,
) -> FunctionDecider[C, S, E]:
    """A decider from two functions and an initial state.

    ::

        counter = decider(
            decide=lambda command, count: [Incremented()] if count < 10 else [],
            evolve=lambda count, event: count + 1,
            initial_state=0,
        )
    """
    if not callable(decide) or not callable(evolve):
        raise InvalidInputError("decide and evolve must be callables")
    return FunctionDecider(decide, evolve, initial_state)


def fold(decider: Decider[Any, S, E], events: Iterable[E]) -> S:
    """The state after ``events``, starting from the decider's initial state.

    Pure: the events are evolved over in the order given. Pass the events as
    :func:`as_decider_event` makes them from stored events.
    """
    current = decider.initial_state
    evolve = decider.evolve
    for event in events:
        current = evolve(current, event)
    return current


def as_decider_event(event: Event, registry: EventRegistry | None = None) -> Any:
    """A stored event as a decider sees it: its domain event, or itself if untyped.

    The domain event instance when ``event``'s type has a class registered in
    ``registry`` (default: the default registry), the :class:`~eskit.Event`
    otherwise (a seed-style type with a dict payload).
    """
    reg = registry or default_registry
    if reg.class_for(event.event_type) is None:
        return event
    return reg.to_domain(event)
