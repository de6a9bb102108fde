"""Aggregates: consistency boundaries whose state is rebuilt by replaying events.

Two styles, mixable in one class:

* the seed tutorial's: ``raise_event("MoneyDeposited", {"amount": 10})`` and a
  ``handle_MoneyDeposited(self, event_data)`` method;
* typed: ``raise_event(MoneyDeposited(amount=Decimal("10")))`` with a registered
  domain event class, applied by a method marked ``@handles(MoneyDeposited)``
  that receives the event object.

Commands check invariants, then raise events; handlers only change state and
never fail on a valid event. A handler runs before the event is recorded as
uncommitted, so an exception in it leaves the aggregate unchanged in its events.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from eskit.errors import DecodingError, EventOrderError, InvalidInputError, UnknownEventTypeError
from eskit.events import (
    Event,
    EventRegistry,
    StreamId,
    default_registry,
    new_event_id,
    recorded_event,
    utc_now,
)
from eskit.upcasting import is_later_split_part

__all__ = ["Aggregate", "handles"]

F = TypeVar("F", bound=Callable[..., Any])

# Attributes the repository manages itself; a snapshot records them apart from the state.
_MANAGED_ATTRIBUTES = frozenset({"aggregate_id", "version"})


def handles(*event_classes: type | str) -> Callable[[F], F]:
    """Mark a method as the handler of these domain event classes or stored type names.

    The one marker for aggregates, projections and process managers. A type
    name (``@handles("bank.Deposited")``) names the stored event type; in an
    aggregate the method then receives the domain event of the class
    registered under that name, as it does for a class.
    """
    if not event_classes:
        raise InvalidInputError("@handles needs at least one event class")
    for key in event_classes:
        if not (isinstance(key, type) or (type(key) is str and key)):
            raise InvalidInputError(
                f"@handles takes event classes or non-empty type names, not {key!r}"
            )

    def mark(method: F) -> F:
        method.__eskit_handles__ = event_classes  # type: ignore[attr-defined]
        return method

    return mark


@functools.cache
def _blank_arguments(init: Callable[..., Any]) -> tuple[int, tuple[str, ...]]:
    # How many extra positional Nones and which keyword Nones create_blank passes.
    # Cached per __init__: inspecting a signature costs more than a short replay.
    positional, keywords = 0, []
    for p in list(inspect.signature(init).parameters.values())[2:]:
        if p.default is not inspect.Parameter.empty:
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
        elif p.kind is p.KEYWORD_ONLY:
            keywords.append(p.name)
    return positional, tuple(keywords)


class Aggregate:
    """Base class for event-sourced aggregates (the seed tutorial's API, typed).

    ``version`` is the version of the last event applied, which is also the
    number of events in the aggregate's stream once saved.
    """

    ignore_unknown_events: ClassVar[bool] = False
    """If false (the default), replaying an event with no handler is an error."""

    registry: ClassVar[EventRegistry] = default_registry
    _event_handlers: ClassVar[dict[type | str, str]] = {}

    state_version: ClassVar[int] = 1
    """The version of this class's snapshot state (see :mod:`eskit.snapshots`).

    Raise it whenever the state a snapshot holds changes meaning: a new or
    renamed attribute, a handler that now computes something else. Older
    snapshots are then upcast by a registered
    :func:`~eskit.snapshots.snapshot_upcaster` or ignored (the aggregate is
    rebuilt from its events), never restored as they are.
    """

    snapshot_name: ClassVar[str | None] = None
    """The stable name this class's snapshots are stored under.

    ``None`` (the default) means ``"module:QualName"``. Set it in the class body
    so that moving or renaming the class keeps its snapshots; it names only the
    class that sets it (a subclass has its own state, so its own name).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type | str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, attr in vars(klass).items():
                for event_class in getattr(attr, "__eskit_handles__", ()):
                    handlers[event_class] = name
        cls._event_handlers = handlers

    def __init__(self, aggregate_id: StreamId) -> None:
        self.aggregate_id = aggregate_id
        self.version = 0
        self._uncommitted_events: list[Event] = []

    @classmethod
    def create_blank(cls, aggregate_id: StreamId) -> Self:
        """An empty instance to replay events into (used by the repository).

        The default calls ``__init__`` with the id and ``None`` for every other
        required parameter, so an ``__init__`` that takes more than the id (the
        seed's ``BankAccount(aggregate_id, account_number)``) still works: the
        creation event's handler sets the real values. Override it when
        ``None`` is not acceptable.
        """
        extra_positional, keywords = _blank_arguments(cls.__init__)
        return cls(aggregate_id, *([None] * extra_positional), **dict.fromkeys(keywords))

    # -- the seed tutorial's API ------------------------------------------------------

    def apply_event(self, event: Event) -> None:
        """Apply a recorded event to change state."""
        self._apply(event, None)

    def raise_event(
        self,
        event_type: str | object,
        event_data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Event:
        """Record a new event: apply it, then keep it until the repository saves it.

        Pass either a type name and a data dict (seed style) or a registered
        domain event instance (typed style). A dict gets the schema version
        :meth:`~eskit.EventRegistry.write_version` gives: today's version of the
        type's registered class, which it must then fit (else
        :class:`~eskit.InvalidInputError`), or 1 for a type without a class.
        """
        domain: object | None = None
        if isinstance(event_type, str):
            name, data = event_type, dict(event_data or {})
            # Not always 1: a dict built today for a registered class has today's shape.
            schema_version = self.registry.write_version(name, data)
        else:
            if event_data is not None:
                raise InvalidInputError("pass either a domain event or a type and data, not both")
            domain = event_type
            name, data, schema_version = self.registry.from_domain(domain)
        event = recorded_event(
            new_event_id(), self.aggregate_id, name, data, utc_now(), self.version + 1, 0,
            dict(metadata) if metadata else {}, schema_version,
        )
        self._apply(event, domain)
        self._uncommitted_events.append(event)
        return event

    def get_uncommitted_events(self) -> list[Event]:
        """Events raised since the last save, oldest first."""
        return list(self._uncommitted_events)

    def mark_events_as_committed(self) -> None:
        """Forget the uncommitted events once they are stored."""
        self._uncommitted_events = []

    # -- snapshots --------------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """The state a snapshot keeps: by default every public instance attribute.

        "Public" means not starting with ``_``; ``aggregate_id`` and ``version``
        are kept by the snapshot itself. Values are stored with eskit's codec, so
        ``Decimal``, ``datetime``, sets, enums and dataclasses come back exactly;
        anything the codec cannot store makes the snapshot fail (logged, never
        raised into a command). Override it together with :meth:`restore_snapshot`
        to keep something else.
        """
        return {
            name: value for name, value in vars(self).items()
            if not name.startswith("_") and name not in _MANAGED_ATTRIBUTES
        }

    def restore_snapshot(self, state: Mapping[str, Any]) -> None:
        """Set the state :meth:`snapshot_state` returned, on a blank instance.

        The default sets each stored attribute. It refuses a snapshot that lacks
        a public attribute the blank instance has: the class gained state since
        the snapshot was taken without raising :attr:`state_version`, and
        restoring would leave that attribute at its initial value. The
        repository then rebuilds the aggregate from its events instead.
        """
        missing = sorted(
            name for name in vars(self)
            if not name.startswith("_") and name not in _MANAGED_ATTRIBUTES
            and name not in state
        )
        if missing:
            raise DecodingError(
                f"the snapshot has no value for {', '.join(missing)}: "
                f"{type(self).__name__} changed without a new state_version"
            )
        for name, value in state.items():
            if name.startswith("_") or name in _MANAGED_ATTRIBUTES:
                raise DecodingError(f"a snapshot cannot set the attribute {name!r}")
            setattr(self, name, value)

    # -- dispatch ---------------------------------------------------------------------

    def _apply(self, event: Event, domain: object | None) -> None:
        if event.version != self.version + 1 and not (
            # The parts of a split stored event share its version (the store expands
            # them on read): the later parts apply at the version the first reached.
            event.version == self.version and is_later_split_part(event)
        ):
            raise EventOrderError(
                f"{type(self).__name__} {str(self.aggregate_id)!r} is at version {self.version} "
                f"and cannot apply event {event.event_type!r} of version {event.version}"
            )
        if domain is None and self.registry.rules.splits:
            # Stores expand splits on read (and expanding a part again changes nothing);
            # a stored event handed in some other way is expanded here.
            for part in self.registry.expand(event):
                self._dispatch(part, None)
        else:
            self._dispatch(event, domain)
        self.version = event.version

    def _dispatch(self, event: Event, domain: object | None) -> None:
        handlers = type(self)._event_handlers
        if handlers:
            event_class = type(domain) if domain is not None else self.registry.class_for(
                event.event_type
            )
            method = handlers.get(event_class) if event_class is not None else None
            if method is None:
                method = handlers.get(event.event_type)  # marked with a type name
            if method is not None:
                if domain is None:
                    domain = self.registry.to_domain(event)
                getattr(self, method)(domain)
                return
        handler = getattr(self, f"handle_{event.event_type}", None)
        if handler is not None:
            handler(event.event_data)
        elif not self.ignore_unknown_events:
            raise UnknownEventTypeError(
                event.event_type, stream_id=event.aggregate_id, version=event.version,
                detail=f"; {type(self).__name__} has no handler for it",
            )
