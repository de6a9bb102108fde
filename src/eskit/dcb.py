"""Dynamic consistency boundaries (DCB): tags, queries and conditional appends.

Pure values and decisions, no I/O; the stores do the reading and the locking.

An event may carry **tags** (``NewEvent(..., tags=("course:c1", "student:s7"))``,
or a ``dcb_tags()`` method on a domain event class). A :class:`Query` selects
events by type and tags: it matches an event if *any* of its items does, and a
:class:`QueryItem` matches an event whose type is one of ``item.types`` (or any
type when ``types`` is empty) and which carries *all* of ``item.tags``.

The decision loop::

    result = store.read_events(query)          # the events that decide, and the
    state = fold(result.events)                # position the read is consistent with
    events = decide(state, command)
    store.append(stream, events,
                 condition=AppendCondition(query, after=result.position))

The append succeeds only if no event matching ``query`` was stored after
``result.position``, checked atomically with the insert; otherwise it raises
:class:`~eskit.errors.AppendConditionFailed` and writes nothing: read again and
decide again. A condition and an expected version may be given together; both
must hold.

What is guaranteed: a conditional append never succeeds when an event matching
its query and positioned after ``after`` exists or is being committed
concurrently. What is not: that two appends whose queries do not overlap never
wait for each other (on PostgreSQL they may share a lock key by hash collision
and then queue, never fail).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eskit.errors import InvalidInputError
from eskit.events import Event, check_name, validate_event_type

__all__ = [
    "MAX_QUERY_ITEMS",
    "MAX_TAGS",
    "AppendCondition",
    "Query",
    "QueryItem",
    "ReadResult",
]

MAX_TAGS = 32
"""The most tags one event may carry (and one query item may require)."""

MAX_QUERY_ITEMS = 64
"""The most items one query may have: each becomes a sub-query and a lock key."""


def _names(kind: str, values: object, limit: int) -> tuple[str, ...]:
    """A tuple of distinct, valid names (each like an event type: see ``check_name``)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidInputError(
            f"{kind}s must be a tuple or list of str, got {type(values).__name__}"
        )
    out = tuple(values)
    if len(out) > limit:
        raise InvalidInputError(f"at most {limit} {kind}s are allowed, got {len(out)}")
    for value in out:
        check_name(kind, value)
    if len(set(out)) != len(out):
        raise InvalidInputError(f"{kind}s must be distinct, got {out!r}")
    return out


def check_tags(tags: object) -> tuple[str, ...]:
    """The tags of an event: at most :data:`MAX_TAGS` distinct non-empty names.

    Each tag follows the rules of event types (no NUL, valid UTF-8, at most
    :data:`~eskit.events.MAX_NAME_BYTES` bytes), else :class:`~eskit.InvalidInputError`.
    """
    if type(tags) is tuple and not tags:
        return ()
    return _names("tag", tags, MAX_TAGS)


@dataclass(frozen=True, slots=True)
class QueryItem:
    """Matches an event whose type is in ``types`` (any type if empty) AND that has
    every tag in ``tags`` (any tags if empty). ``QueryItem()`` matches every event."""

    types: Sequence[str] = ()
    tags: Sequence[str] = ()
    """Stored as tuples, whatever sequence is given (a str alone is refused)."""

    def __post_init__(self) -> None:
        types = _names("event type", self.types, MAX_QUERY_ITEMS)
        for t in types:
            validate_event_type(t)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "tags", _names("tag", self.tags, MAX_TAGS))

    def matches(self, event_type: str, tags: Iterable[str]) -> bool:
        """Whether an event of ``event_type`` carrying ``tags`` matches this item."""
        if self.types and event_type not in self.types:
            return False
        have = set(tags)
        return all(t in have for t in self.tags)


@dataclass(frozen=True, slots=True)
class Query:
    """Any of ``items`` (at least one, at most :data:`MAX_QUERY_ITEMS`).

    Build with ``Query([QueryItem(...), ...])``, ``Query.of(types=..., tags=...)``
    for one item, or ``Query.all()`` for every event.
    """

    items: Sequence[QueryItem]
    """Stored as a tuple."""

    def __post_init__(self) -> None:
        if isinstance(self.items, QueryItem) or not isinstance(self.items, Iterable):
            raise InvalidInputError(
                f"a query's items must be a list of QueryItem, got {type(self.items).__name__}"
            )
        items = tuple(self.items)
        if not items:
            raise InvalidInputError(
                "a query needs at least one item (Query.all() matches every event)"
            )
        if len(items) > MAX_QUERY_ITEMS:
            raise InvalidInputError(
                f"a query may have at most {MAX_QUERY_ITEMS} items, got {len(items)}"
            )
        for item in items:
            if not isinstance(item, QueryItem):
                raise InvalidInputError(
                    f"a query's items must be QueryItem, got {type(item).__name__}"
                )
        object.__setattr__(self, "items", items)

    @classmethod
    def all(cls) -> Query:
        """The query that matches every event."""
        return cls((QueryItem(),))

    @classmethod
    def of(cls, *, types: Sequence[str] = (), tags: Sequence[str] = ()) -> Query:
        """A query of one item: events of one of ``types`` carrying all of ``tags``."""
        return cls((QueryItem(types, tags),))

    @property
    def matches_all(self) -> bool:
        """Whether the query matches every event (an item with no types and no tags)."""
        return any(not i.types and not i.tags for i in self.items)

    def matches(self, event: Event) -> bool:
        """Whether a stored event matches the query (uses ``event.tags``)."""
        return self.matches_type_and_tags(event.event_type, event.tags)

    def matches_type_and_tags(self, event_type: str, tags: Iterable[str]) -> bool:
        have = tuple(tags)
        return any(item.matches(event_type, have) for item in self.items)


_set_tags = Event.__dict__["tags"].__set__  # the slot itself: Event is frozen


def set_tags(event: Any, tags: tuple[str, ...]) -> None:
    """Give an event just decoded by a store its tags (internal: stores only); also
    an ``UndecodableEvent`` placeholder (a frozen dataclass of its own)."""
    if isinstance(event, Event):
        _set_tags(event, tags)
    else:
        object.__setattr__(event, "tags", tags)


def check_query(query: object) -> Query:
    if not isinstance(query, Query):
        raise InvalidInputError(f"query must be an eskit.Query, got {type(query).__name__}")
    return query


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Append only if no event matching ``fail_if_events_match`` is positioned after
    ``after`` (``None``: no matching event may exist at all).

    Pass the :attr:`ReadResult.position` of the read the decision was made on.
    """

    fail_if_events_match: Query
    after: int | None = None

    def __post_init__(self) -> None:
        check_query(self.fail_if_events_match)
        after = self.after
        # The rules of every position argument: an int from 0 to 2**128 - 1.
        if after is not None and (type(after) is not int or not 0 <= after < 2**128):
            raise InvalidInputError(
                f"after must be None or an int between 0 and 2**128 - 1, got {after!r}"
            )

    @property
    def after_position(self) -> int:
        return 0 if self.after is None else self.after


def check_condition(condition: object) -> AppendCondition | None:
    if condition is not None and not isinstance(condition, AppendCondition):
        raise InvalidInputError(
            f"condition must be an eskit.AppendCondition or None, got {type(condition).__name__}"
        )
    return condition


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What :meth:`~eskit.EventStore.read_events` returns.

    ``events`` are the matching events in global order, each with its ``tags``.
    ``position`` is the store position the read is consistent with: every
    matching event at or before it is in ``events`` (unless ``limit`` cut the
    read short: then it is the last returned event's position). Use it as
    ``AppendCondition(query, after=result.position)``.
    """

    events: tuple[Event, ...] = field(default=())
    position: int = 0

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


def read_result(
    events: list[Event], head: int, after: int, limit: int | None,
    upcast: Callable[[list[Event]], list[Event]],
) -> ReadResult:
    """What ``read_events`` returns for a store's ``(events, head)`` (sync and async).

    A read cut short by ``limit`` is consistent only up to its last event.
    """
    if limit is not None and len(events) == limit and events:
        position = events[-1].position
    else:
        position = max(head, after)
    return ReadResult(tuple(upcast(events)), position)


# -- lock keys (PostgreSQL) ------------------------------------------------------------
#
# A conditional append must not miss an event that a concurrent transaction is
# inserting. Each event has lock keys such that every query item it matches names
# one of them: (type, tag) for each tag, (type, -), (-, tag) for each tag and
# (-, -). An item locks exactly one key: (t, first tag) for each of its types, or
# (t, -), or (-, first tag), or (-, -). Appends take their events' keys shared;
# a conditional append takes its query's keys exclusive, waits for the appends in
# flight that hold them, and only then checks (in a later statement, with a newer
# snapshot). Plain appends never wait for each other (shared and shared).

_ANY = ""  # stands for "any type" / "no tag": real names are never empty


def _key(event_type: str, tag: str) -> tuple[int, int]:
    # Names hold no NUL, so the encoding is unambiguous. 64 bits, as two int4s: the
    # two-key advisory lock space is apart from the one-bigint space eskit's stream
    # locks use, so the two can never collide.
    digest = hashlib.blake2b(
        f"{event_type}\x00{tag}".encode(), digest_size=8, person=b"eskit-dcb"
    ).digest()
    return (int.from_bytes(digest[:4], "big", signed=True),
            int.from_bytes(digest[4:], "big", signed=True))


def event_lock_keys(events: Iterable[tuple[str, Sequence[str]]]) -> set[tuple[int, int]]:
    """The keys an append of events ``(type, tags)`` takes shared."""
    keys = {_key(_ANY, _ANY)}
    for event_type, tags in events:
        keys.add(_key(event_type, _ANY))
        for tag in tags:
            keys.add(_key(event_type, tag))
            keys.add(_key(_ANY, tag))
    return keys


def query_lock_keys(query: Query) -> set[tuple[int, int]]:
    """The keys a conditional append takes exclusive: one per (item, type)."""
    keys: set[tuple[int, int]] = set()
    for item in query.items:
        tag = min(item.tags) if item.tags else _ANY  # any one tag of the item will do
        for event_type in item.types or (_ANY,):
            keys.add(_key(event_type, tag))
    return keys


def lock_plan(
    shared: set[tuple[int, int]], exclusive: set[tuple[int, int]]
) -> tuple[list[int], list[int], list[bool]]:
    """Keys sorted (every transaction locks in one order: no deadlock between them),
    each once, exclusive where both are wanted: ``(hi, lo, exclusive)`` arrays."""
    wanted = {k: False for k in shared}
    wanted.update({k: True for k in exclusive})
    order = sorted(wanted)
    return [k[0] for k in order], [k[1] for k in order], [wanted[k] for k in order]
