"""Command handlers: load a decider's state, decide, append, retry on conflict.

:class:`CommandHandler` runs one command against one stream::

    handler = CommandHandler(store, account, stream_id_of=lambda c: c.account_id)
    handled = handler.handle(Deposit("acc-1", 10))

``handle`` reads the stream, folds its events into the state
(:func:`eskit.decider.fold`), calls ``decide`` and appends what it returned,
expecting the version it read. If another writer appended in between, the
append raises :class:`~eskit.ConcurrencyError`, writes nothing, and the whole
command runs again on the fresh stream, as often as the :class:`~eskit.Retry`
policy allows (then :class:`~eskit.CommandRetriesExhausted`). An empty decision
appends nothing.

The steps that decide (what to append, the state after it) are the pure
functions below, shared with :class:`eskit.aio.AsyncCommandHandler`. The
consistency boundary is one stream today; a handler that loads by a DCB query
would replace only :meth:`CommandHandler._load` and the append condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from eskit.decider import Decider, as_decider_event
from eskit.errors import ConcurrencyError, InvalidInputError
from eskit.events import Event, EventRegistry, NewEvent, StreamId, as_metadata
from eskit.retry import DEFAULT_RETRY, Retry, check_retry
from eskit.stores.base import EventStore
from eskit.stores.model import AppendResult

__all__ = ["CommandHandler", "CommandResult"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class CommandResult(Generic[S]):
    """What handling a command did.

    ``state`` is the decider's state after the new events (after those read, if
    the decision was empty); ``version`` the stream's version that state is at;
    ``appended`` the store's :class:`~eskit.AppendResult`, or ``None`` when
    ``decide`` returned no events; ``attempts`` how many times the command ran
    (``1`` without a conflict).
    """

    state: S
    version: int
    appended: AppendResult | None
    attempts: int

    @property
    def events(self) -> tuple[Event, ...]:
        """The events recorded by this command (empty for an empty decision)."""
        return () if self.appended is None else self.appended.events


# -- the pure steps, shared with eskit.aio.command_handler ----------------------------


class Folding(Generic[S, E]):
    """The state and version of a stream, built one read event at a time (internal)."""

    __slots__ = ("decider", "registry", "state", "version")

    def __init__(self, decider: Decider[Any, S, E], registry: EventRegistry) -> None:
        self.decider = decider
        self.registry = registry
        self.state: S = decider.initial_state
        self.version = 0

    def add(self, event: Event) -> None:
        self.state = self.decider.evolve(self.state, as_decider_event(event, self.registry))
        self.version = event.version

    def add_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)


def decided_events(
    decider: Decider[C, Any, Any], command: C, state: object,
    metadata: Mapping[str, Any] | None, registry: EventRegistry,
) -> list[object]:
    """What ``decide`` returned, as a list, with ``metadata`` merged into each event.

    Checked before any I/O: a non-sequence result is an
    :class:`~eskit.InvalidInputError`. Keys an event already has in its
    metadata win over ``metadata``.
    """
    decided = decider.decide(command, state)
    if isinstance(decided, str | bytes | Mapping) or not isinstance(decided, Sequence):
        raise InvalidInputError(
            f"decide must return a sequence of events, got {type(decided).__name__}"
        )
    events = list(decided)
    if metadata:
        events = [_with_metadata(e, metadata, registry) for e in events]
    return events


def _with_metadata(event: object, metadata: Mapping[str, Any], registry: EventRegistry) -> object:
    if isinstance(event, NewEvent | Event):
        return replace(event, metadata={**metadata, **event.metadata})
    if registry.is_domain_event(event):
        name, data, schema_version = registry.from_domain(event)
        return NewEvent(name, data, metadata=dict(metadata), schema_version=schema_version)
    return event  # not an event: the store's checks say so, before any I/O


def check_stream_id_of(stream_id_of: object) -> None:
    if not callable(stream_id_of):
        raise InvalidInputError(
            f"stream_id_of must be a callable taking a command, got {type(stream_id_of).__name__}"
        )


# -- the sync front end ---------------------------------------------------------------


class CommandHandler(Generic[C, S, E]):
    """Handles commands of one :class:`~eskit.decider.Decider` against an event store.

    ``stream_id_of(command)`` names the stream (the consistency boundary) a
    command acts on. ``retry`` bounds the attempts after conflicts (default
    ``Retry()``: 5 attempts, short jittered waits).

    Guaranteed: each attempt decides on the whole stream as read and appends
    with that version expected, so a command's events are stored only if no
    other event reached the stream in between; a batch is stored whole or not
    at all. Not guaranteed: exactly-once handling of a command that is itself
    sent twice (give its events stable ids, or make ``decide`` idempotent).
    """

    def __init__(
        self,
        store: EventStore,
        decider: Decider[C, S, E],
        *,
        stream_id_of: Callable[[C], StreamId],
        retry: Retry = DEFAULT_RETRY,
    ) -> None:
        if not isinstance(store, EventStore):
            raise InvalidInputError(f"store must be an EventStore, got {type(store).__name__}")
        check_stream_id_of(stream_id_of)
        self.store = store
        self.decider = decider
        self.stream_id_of = stream_id_of
        self.retry = check_retry(retry)

    def state(self, stream_id: StreamId) -> S:
        """The decider's current state of ``stream_id`` (initial for an empty stream)."""
        return self._load(stream_id).state

    def handle(
        self, command: C, *, metadata: Mapping[str, Any] | None = None
    ) -> CommandResult[S]:
        """Load, decide and append ``command``'s events, retrying on conflict.

        ``metadata`` is merged into every event (keys an event has win). Errors
        from ``decide`` propagate unretried and write nothing.
        """
        extra = as_metadata(metadata)
        stream_id = self.stream_id_of(command)
        attempt = 1
        while True:
            try:
                return self._attempt(command, stream_id, extra, attempt)
            except ConcurrencyError as conflict:
                wait = self.retry.after_conflict(attempt, conflict)
            if wait > 0:
                time.sleep(wait)
            attempt += 1

    def _attempt(
        self, command: C, stream_id: StreamId, metadata: dict[str, Any], attempt: int
    ) -> CommandResult[S]:
        loaded = self._load(stream_id)
        events = decided_events(self.decider, command, loaded.state, metadata, self.store.registry)
        if not events:
            return CommandResult(loaded.state, loaded.version, None, attempt)
        appended = self.store.append(stream_id, events, loaded.version)
        loaded.add_all(appended.events)
        return CommandResult(loaded.state, appended.version, appended, attempt)

    def _load(self, stream_id: StreamId) -> Folding[S, E]:
        folding: Folding[S, E] = Folding(self.decider, self.store.registry)
        folding.add_all(self.store.iter_stream(stream_id))
        return folding
