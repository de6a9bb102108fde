"""Projections: classes that turn events into a read model.

A projection has a ``name`` (its checkpoint is stored under it) and one handler
per event type it cares about. Handlers are methods taking ``(event, tx)``: the
stored :class:`~eskit.Event` (``event.to_domain()`` gives the typed object) and
the :class:`~eskit.projections.Tx` of the transaction the runner commits the
checkpoint in. Two ways to declare them, mixable::

    class Balances(Projection):
        name = "balances"

        @handles(MoneyDeposited)          # a registered domain event class, or a type name
        def _deposited(self, event, tx): ...

        def handle_AccountOpened(self, event, tx): ...   # the seed tutorial's convention

Events without a handler are skipped (and never even dispatched: the runner
filters by the handled types). A handler must be deterministic given the event
and the read model: it may run again after a crash, in a transaction whose
earlier attempt was rolled back.

**Typos are reported when the projection is created** (that is, before a runner
starts): a handler for a type the projection's registry does not know but that is
a near miss of a registered one (``handle_OrderPlace`` beside ``OrderPlaced``)
emits an :class:`UnknownHandlerWarning` naming the handler and the nearest
registered types; so does a handler for an old name that an alias renames on read
(it would never run). Other unregistered names are taken for plain event types
(the classic tutorial's ``NewEvent("OrderPlaced", {...})``), which are allowed and
cannot be checked.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from typing import Any, ClassVar
from uuid import UUID, uuid5

from eskit.context import handling
from eskit.errors import InvalidInputError
from eskit.events import Event, EventRegistry, default_registry
from eskit.projections.sql import Tx, quote_identifier
from eskit.subscription import EventFilter

__all__ = ["Projection", "UnknownHandlerWarning", "idempotency_key"]


class UnknownHandlerWarning(UserWarning):
    """A projection's handler names an event type the registry does not know.

    Usually a typo (``handle_OrderPlace`` for ``OrderPlaced``): such a handler is
    never called. See :mod:`eskit.projections.projection`.
    """

_KEY_NAMESPACE = UUID("6f1c2a4e-5d0b-4c53-9a55-2d1b8c0e7f31")


def idempotency_key(projection_name: str, event: Event) -> UUID:
    """A key that is the same every time ``projection_name`` handles ``event``.

    For side effects outside the database (an email, an HTTP call) delivery is
    at least once: after a crash between the effect and the checkpoint commit,
    the event is handled again. Send this key with the request (an
    ``Idempotency-Key`` header, a unique message id) so the receiver can drop the
    repeat.
    """
    return uuid5(_KEY_NAMESPACE, f"{projection_name}\x00{event.event_id}")


class Projection:
    """Base class for projections. Subclasses set ``name`` and define handlers."""

    name: ClassVar[str] = ""
    """Stable name; the checkpoint and the status row are stored under it."""

    tables: ClassVar[tuple[str, ...]] = ()
    """Read-model tables kept per generation behind a view, for blue/green rebuilds.

    Create them in :meth:`setup` as ``tx.table(name)`` and write them through
    ``tx.table(name)``; queries read the view ``name``.
    """

    stream_prefixes: ClassVar[tuple[str, ...] | None] = None
    """Only events of streams whose id starts with one of these (``None``: all)."""

    transactional: ClassVar[bool] = True
    """Handlers write through ``tx`` and commit with the checkpoint. Process managers,
    whose effects are idempotent appends to the event store, set it to ``False``."""

    registry: ClassVar[EventRegistry] = default_registry

    _handler_names: ClassVar[dict[str | type, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str | type, str] = {}
        for klass in reversed(cls.__mro__):
            for attr_name, attr in vars(klass).items():
                if attr_name.startswith("handle_") and callable(attr):
                    found[attr_name.removeprefix("handle_")] = attr_name
                for key in getattr(attr, "__eskit_handles__", ()):
                    found[key] = attr_name
        cls._handler_names = found

    def __init__(self) -> None:
        if not self.name or type(self.name) is not str:
            raise InvalidInputError(f"{type(self).__name__} must set a non-empty str name")
        for table in self.tables:
            quote_identifier(table)
        handlers: dict[str, Callable[[Event, Tx], None]] = {}
        names: dict[str, str] = {}
        for key, attr_name in self._handler_names.items():
            event_type = key if isinstance(key, str) else self.registry.name_for(key)
            if event_type is None:
                raise InvalidInputError(
                    f"{type(self).__name__}.{attr_name} handles {key!r}, which is not a "
                    "registered @domain_event class"
                )
            handlers[event_type] = getattr(self, attr_name)
            names[event_type] = attr_name
        self._handlers = handlers
        for event_type in sorted(handlers):
            problem = self._unknown(event_type)
            if problem:
                warnings.warn(
                    f"{type(self).__name__}.{names[event_type]} handles "
                    f"{event_type!r}, {problem}",
                    UnknownHandlerWarning, stacklevel=2,
                )

    def _unknown(self, event_type: str) -> str | None:
        """Why a handler for ``event_type`` looks like a mistake, or ``None``."""
        registry = self.registry
        aliases = registry.rules.aliases
        if event_type in aliases:
            return (f"but events stored as {event_type!r} are read as "
                    f"{registry.rules.current_name(event_type)!r}: the handler never runs")
        # The registry has no public list of its names; the projection only reads it.
        known = [*registry._by_name, *aliases.values()]
        if not known or registry.class_for(event_type) is not None or event_type in known:
            return None
        # Only a near miss is reported: an unregistered name far from every registered
        # one is taken for a plain event type, which is allowed.
        near = difflib.get_close_matches(event_type, sorted(set(known)), n=3, cutoff=0.8)
        if not near:
            return None
        return (f"which is not a registered event type; did you mean "
                f"{' or '.join(map(repr, near))}?")

    @property
    def event_types(self) -> frozenset[str]:
        """The stored event types this projection has handlers for."""
        return frozenset(self._handlers)

    def event_filter(self) -> EventFilter:
        """What the runner dispatches: the handled types, in the wanted streams."""
        return EventFilter(self.event_types, self.stream_prefixes)

    def setup(self, tx: Tx) -> None:
        """Create the read model (idempotently: ``CREATE TABLE IF NOT EXISTS``)."""

    def handle(self, event: Event, tx: Tx) -> None:
        """Apply one event: call its handler, if there is one."""
        handler = self._handlers.get(event.event_type)
        if handler is not None:
            with handling(event):  # events the handler writes are caused by this one
                handler(event, tx)
