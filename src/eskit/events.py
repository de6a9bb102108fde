"""Events: immutable facts, as stored (:class:`Event`) and as declared by a domain.

Two ways to describe what happened, both stored the same way:

* the seed tutorial's way, an ``event_type`` string and an ``event_data`` dict;
* typed domain events, frozen dataclasses with an explicit, stable type name::

      @domain_event("AccountOpened")
      @dataclass(frozen=True)
      class AccountOpened:
          account_number: str
          initial_deposit: Decimal

The stored type name is the one given to :func:`domain_event`, never the class
name, so a class can be renamed or moved without orphaning stored events.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, overload
from uuid import UUID, SafeUUID

from eskit import codec
from eskit.errors import DecodingError, InvalidInputError, UnknownEventTypeError
from eskit.upcasting import UpcastRules
from eskit.validation import Plan, check_fields, plan_for

__all__ = [
    "Event",
    "EventRegistry",
    "NewEvent",
    "StreamId",
    "default_registry",
    "domain_event",
    "upcaster",
    "utc_now",
]

StreamId = UUID | str
"""A stream (aggregate) id: a ``UUID`` or a non-empty string."""

T = TypeVar("T", bound=type)
D = TypeVar("D")
U = TypeVar("U", bound=Callable[[dict[str, Any]], dict[str, Any]])
S = TypeVar("S", bound=Callable[[dict[str, Any]], list[tuple[str, dict[str, Any]]]])


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC ``datetime``."""
    return datetime.now(UTC)


_new_uuid = UUID.__new__
_set_uuid_int = UUID.__dict__["int"].__set__  # the slot itself: UUID.__setattr__ refuses
_set_uuid_safety = UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = SafeUUID.unknown
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)
_urandom = os.urandom


def new_event_id() -> UUID:
    """A random version-4 UUID, the value ``uuid4()`` makes, at under half its cost.

    ``UUID.__init__`` parses every accepted spelling before it stores one int;
    an event id is minted for every event, so it is built here from
    ``os.urandom`` directly, with the same variant and version bits.
    """
    value = _new_uuid(UUID)
    _set_uuid_int(value, int.from_bytes(_urandom(16), "big") & _V4_CLEAR | _V4_SET)
    _set_uuid_safety(value, _UNKNOWN_SAFETY)
    return value


def uuid_from_bytes(raw: bytes) -> UUID:
    """``UUID(bytes=raw)`` at a third of the cost, for ids read back from a store."""
    value = _new_uuid(UUID)
    _set_uuid_int(value, int.from_bytes(raw, "big"))
    _set_uuid_safety(value, _UNKNOWN_SAFETY)
    return value


# ``init=False``: the generated ``__init__`` of a frozen dataclass sets each field
# through ``object.__setattr__``, which made building an event cost 1.4 µs; the one
# below sets the slots directly (the ``_set_*`` slot setters after the class).
@dataclass(frozen=True, slots=True, init=False)
class Event:
    """An event as recorded in a stream.

    The first six fields are the seed tutorial's ``Event``; the store fills in
    the rest. ``version`` is the 1-based place of the event in its stream,
    ``position`` its place in the store's global order: an ``int > 0`` on every
    event a store returns, ``0`` on an event no store has recorded yet (one an
    aggregate raised and the repository has not saved). ``timestamp`` is always
    timezone-aware UTC. Timestamps are informative only: ordering and
    concurrency checks never use them. ``tags`` are the event's DCB tags
    (see :mod:`eskit.dcb`): filled on events returned by an append and by
    ``read_events``; ``read_stream`` and ``read_all`` do not load them yet and
    give ``()``.
    """

    event_id: UUID
    aggregate_id: StreamId
    event_type: str
    event_data: dict[str, Any]
    timestamp: datetime
    version: int
    position: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    tags: tuple[str, ...] = ()

    def __init__(
        self,
        event_id: UUID,
        aggregate_id: StreamId,
        event_type: str,
        event_data: dict[str, Any],
        timestamp: datetime,
        version: int,
        position: int = 0,
        metadata: dict[str, Any] | None = None,
        schema_version: int = 1,
        tags: tuple[str, ...] = (),
    ) -> None:
        _set_id(self, event_id)
        _set_stream(self, aggregate_id)
        _set_type(self, event_type)
        _set_data(self, event_data)
        _set_timestamp(self, timestamp)
        _set_version(self, version)
        _set_position(self, position)
        _set_metadata(self, {} if metadata is None else metadata)
        _set_schema_version(self, schema_version)
        _set_tags(self, tuple(tags))

    @property
    def stream_id(self) -> StreamId:
        """The stream the event belongs to (the seed calls it ``aggregate_id``)."""
        return self.aggregate_id

    @overload
    def to_domain(self, registry: EventRegistry | None = None, *, expect: None = None) -> Any: ...

    @overload
    def to_domain(self, registry: EventRegistry | None = None, *, expect: type[D]) -> D: ...

    def to_domain(
        self, registry: EventRegistry | None = None, *, expect: type[Any] | None = None
    ) -> Any:
        """This event as an instance of its registered domain event class.

        The class depends on the stored type, so the result is typed ``Any``;
        pass ``expect=TheClass`` to have it checked (a
        :class:`~eskit.DecodingError` if the event is of another class) and
        typed as ``TheClass``.
        """
        return (registry or default_registry).to_domain(self, expect=expect)

    def reshaped(
        self, event_type: str, event_data: dict[str, Any], schema_version: int, *,
        event_id: UUID | None = None, metadata: dict[str, Any] | None = None,
    ) -> Event:
        """This event with another type, data and schema version (what upcasting returns).

        Stream, version, position and timestamp stay; id and metadata too unless given.
        """
        return recorded_event(
            self.event_id if event_id is None else event_id, self.aggregate_id, event_type,
            event_data, self.timestamp, self.version, self.position,
            self.metadata if metadata is None else metadata, schema_version, self.tags,
        )


_new_object = object.__new__
(
    _set_id, _set_stream, _set_type, _set_data, _set_timestamp, _set_version, _set_position,
    _set_metadata, _set_schema_version, _set_tags,
) = (getattr(Event, f.name).__set__ for f in dataclasses.fields(Event))


class UnfrozenEvent:
    """:class:`Event`'s exact slot layout without the frozen guard (internal to eskit).

    :func:`recorded_event` fills one with plain attribute stores, the cheapest
    way CPython has to set slots, then turns it into an ``Event`` by assigning
    ``__class__``, which CPython allows between classes of identical layout.
    """

    __slots__ = Event.__slots__

    def __init__(
        self, event_id: UUID, aggregate_id: StreamId, event_type: str,
        event_data: dict[str, Any], timestamp: datetime, version: int, position: int,
        metadata: dict[str, Any], schema_version: int, tags: tuple[str, ...] = (),
    ) -> None:
        self.event_id = event_id
        self.aggregate_id = aggregate_id
        self.event_type = event_type
        self.event_data = event_data
        self.timestamp = timestamp
        self.version = version
        self.position = position
        self.metadata = metadata
        self.schema_version = schema_version
        self.tags = tags


def recorded_event(
    event_id: UUID, aggregate_id: StreamId, event_type: str, event_data: dict[str, Any],
    timestamp: datetime, version: int, position: int, metadata: dict[str, Any],
    schema_version: int, tags: tuple[str, ...] = (),
) -> Event:
    """Build an :class:`Event` read from a store or raised by an aggregate (internal, hot path).

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; this costs about a third of that (see
    :class:`UnfrozenEvent`). The arguments are trusted: callers have checked them.
    """
    event: Any = UnfrozenEvent(
        event_id, aggregate_id, event_type, event_data, timestamp, version, position, metadata,
        schema_version, tags,
    )
    event.__class__ = Event
    return event  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append through the modern API, before the store records it.

    ``schema_version=None`` (the default) stores the event at the version
    :meth:`EventRegistry.write_version` gives: today's version of the type's
    registered class (after checking that the data fits it), or 1 for a type
    without a class. Give an int to say which shape the data has; older shapes
    are upcast when read. ``tags`` are DCB tags (see :mod:`eskit.dcb`): names
    such as ``"course:c1"``, at most :data:`~eskit.dcb.MAX_TAGS` per event.
    """

    event_type: str
    event_data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: UUID = field(default_factory=new_event_id)
    timestamp: datetime | None = None
    schema_version: int | None = None
    tags: tuple[str, ...] = ()


class _EventClassInfo:
    __slots__ = ("check_types", "cls", "field_names", "kind", "name", "plan", "schema_version")

    def __init__(
        self, cls: type, name: str, schema_version: int, field_names: tuple[str, ...],
        check_types: bool, kind: codec.RecordKind,
    ) -> None:
        self.cls = cls
        self.kind = kind
        self.name = name
        self.schema_version = schema_version
        self.field_names = field_names
        self.check_types = check_types
        self.plan: Plan | None = None
        """The field checks, built on first use (annotations may name later classes)."""


class EventRegistry:
    """Maps stored event type names to domain event classes and back.

    It also holds the schema-evolution rules (aliases, upcasters, splits,
    deprecations; see :mod:`eskit.upcasting`) that every read applies.

    ``naive_datetimes`` (default ``False``) decides whether a domain event field
    or an appended payload may hold a ``datetime`` without a time zone: a naive
    time names no moment, so by default it is an
    :class:`~eskit.InvalidInputError` before anything is written. Set it to
    ``True`` (``EventRegistry(naive_datetimes=True)``, or
    ``default_registry.naive_datetimes = True``) to store naive datetimes as
    they are; they then round-trip as naive.
    """

    def __init__(self, *, naive_datetimes: bool = False) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, _EventClassInfo] = {}
        self._by_class: dict[type, _EventClassInfo] = {}
        self.rules = UpcastRules()
        self.naive_datetimes = naive_datetimes

    # -- schema evolution ---------------------------------------------------------------

    def alias(self, old_name: str, new_name: str) -> None:
        """Read events stored as ``old_name`` as ``new_name`` (a renamed event type)."""
        self.rules.add_alias(validate_event_type(old_name), validate_event_type(new_name))

    def upcaster(self, event_type: str, *, from_version: int) -> Callable[[U], U]:
        """Decorator: the function turns ``event_type`` data from ``from_version`` to the next."""

        validate_event_type(event_type)

        def register(function: U) -> U:
            self.rules.add_upcaster(event_type, from_version, function)
            return function

        return register

    def split(self, event_type: str) -> Callable[[S], S]:
        """Decorator: the function turns one stored event's data into several events.

        It returns a non-empty list of ``(event_type, data)`` pairs, in today's
        shape. Every reader sees the parts instead of the stored event (see
        :mod:`eskit.upcasting` for their versions, positions and ids).
        """
        validate_event_type(event_type)

        def register(function: S) -> S:
            self.rules.add_split(event_type, function)
            return function

        return register

    def deprecate(self, event_type: str, reason: str = "") -> None:
        """Warn (once per process) whenever events of this type are read."""
        self.rules.deprecate(validate_event_type(event_type), reason)

    def upcast(self, events: list[Event]) -> list[Event]:
        """Stored events in today's shape, splits expanded (the same list when there are no rules).

        Every store read goes through here: ``read_stream``, ``read_all`` and so
        subscriptions, projections and aggregates see the same events.
        """
        return self.rules.upcast_all(events, self.current_version)

    def expand(self, event: Event) -> list[Event]:
        """The events one stored event stands for once splits are applied.

        Events read from a store are expanded already; expanding one again
        returns it unchanged.
        """
        if not self.rules.splits:
            return [event]
        return self.rules.expand(event, self.current_version)

    def current_version(self, event_type: str) -> int:
        """The schema version today's code writes for ``event_type``."""
        info = self._by_name.get(event_type)
        version = info.schema_version if info else 1
        while (event_type, version) in self.rules.upcasters:
            version += 1
        return version

    def write_version(self, event_type: str, data: Mapping[str, Any]) -> int:
        """The schema version a plain-dict payload of ``event_type`` is written at.

        For a type with a registered class, today's version
        (:meth:`current_version`): the class says what today's shape is, and
        stamping such a dict 1 had every later read upcast it from a version it
        never had, failing forever. When that version is 2 or more, the dict must
        fit the class's fields (no unknown key, every field without a default
        present), else :class:`InvalidInputError`, so that no event is stored
        under a version it does not have. A type without a class is written at
        version 1, as always: nothing says which shape the dict has. Pass an
        explicit ``schema_version`` to :class:`NewEvent` to say it.
        """
        info = self._by_name.get(event_type)
        if info is None:
            return 1
        version = self.current_version(event_type)
        if version > 1:
            unknown = sorted(str(k) for k in data if k not in info.field_names)
            missing = [name for name in info.kind.required_names(info.cls) if name not in data]
            if unknown or missing:
                problems = [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
                problems += [f"missing field(s) {', '.join(missing)}"] if missing else []
                raise InvalidInputError(
                    f"event_data of {event_type!r} does not fit {info.cls.__qualname__}, "
                    f"schema version {version}: {'; '.join(problems)}. Pass the event "
                    "as an instance of the class, or say which schema version the data "
                    "has (NewEvent(..., schema_version=n))"
                )
        return version

    def register(self, cls: T, name: str, *, version: int = 1, check_types: bool = True) -> T:
        """Register ``cls`` (a frozen dataclass or pydantic model) under the stored type ``name``.

        A pydantic ``BaseModel`` needs ``model_config = ConfigDict(frozen=True)``
        (see :mod:`eskit.pydantic`). With ``check_types`` (the default) every
        instance raised or appended has its field values checked against their
        annotations (see :mod:`eskit.validation` for what is and is not checked).
        """
        kind = codec.record_kind(cls)
        if kind is None:
            raise InvalidInputError(
                f"{cls!r} must be a dataclass or a pydantic model to be a domain event"
            )
        if not kind.is_frozen(cls):
            raise InvalidInputError(
                f"{cls.__qualname__} must be frozen (a frozen dataclass, or a pydantic model "
                "with frozen=True): events are immutable facts"
            )
        validate_event_type(name)
        if type(version) is not int or version < 1:
            raise InvalidInputError(f"schema version must be an int >= 1, got {version!r}")
        if type(check_types) is not bool:
            raise InvalidInputError(f"check_types must be a bool, got {check_types!r}")
        info = _EventClassInfo(
            cls, name, version, kind.field_names(cls), check_types, kind,
        )
        with self._lock:
            other = self._by_name.get(name)
            if other is not None and not codec.same_definition(other.cls, cls):
                raise InvalidInputError(
                    f"event type {name!r} is already registered to {other.cls.__qualname__}"
                )
            # The codec's names are global, for events nested in other payloads. A
            # second registry may reuse a name for another class; only then do nested
            # values of that class fall back to their "module:QualName" name.
            if codec.is_type_name_free(name, cls):
                codec.register_type(cls, name)
            self._by_name[name] = info
            self._by_class[cls] = info
        return cls

    def class_for(self, event_type: str) -> type | None:
        """The class registered for ``event_type``, or ``None``."""
        info = self._by_name.get(event_type)
        return info.cls if info else None

    def name_for(self, cls: type) -> str | None:
        """The stored type name of ``cls``, or ``None`` if it is not registered."""
        info = self._by_class.get(cls)
        return info.name if info else None

    def is_domain_event(self, obj: object) -> bool:
        """Whether ``obj`` is an instance of a registered domain event class."""
        return type(obj) in self._by_class

    def from_domain(self, obj: object) -> tuple[str, dict[str, Any], int]:
        """Split a domain event into (event type, event data, schema version).

        Checks the field values against their annotations first (unless the class
        was registered with ``check_types=False``): an
        :class:`~eskit.InvalidInputError` names the event type and the field.
        """
        info = self._by_class.get(type(obj))
        if info is None:
            raise InvalidInputError(
                f"{type(obj).__qualname__} is not a registered domain event; "
                "decorate it with @domain_event(\"TypeName\")"
            )
        if info.kind is codec.DATACLASSES:
            data = {name: getattr(obj, name) for name in info.field_names}
        else:
            data = info.kind.values(obj)
        if info.check_types:
            plan = info.plan
            if plan is None:
                plan = info.plan = plan_for(info.cls, self)
            # The fast path (an identity test per flat field) proves most events good;
            # anything it cannot prove gets the full check, which raises or accepts.
            for name, exact in plan.exact:
                if type(data[name]) is not exact:
                    break
            else:
                for name, check in plan.others:
                    if check(data[name]) is not None:
                        break
                else:
                    return info.name, data, info.schema_version
            check_fields(info.name, obj, plan)
        return info.name, data, info.schema_version

    @overload
    def to_domain(self, event: Event, *, expect: None = None) -> Any: ...

    @overload
    def to_domain(self, event: Event, *, expect: type[D]) -> D: ...

    def to_domain(self, event: Event, *, expect: type[Any] | None = None) -> Any:
        """Build the domain event instance for a recorded event.

        Stored values are not type-checked on the way back (old events stay
        readable). With ``expect``, the instance must be of that class.
        """
        info = self._by_name.get(event.event_type)
        if info is None:
            raise UnknownEventTypeError(
                event.event_type, stream_id=event.aggregate_id, version=event.version,
                detail="; register its class with @domain_event",
            )
        if expect is not None and not issubclass(info.cls, expect):
            raise DecodingError(
                f"event {event.event_type!r} at version {event.version} of stream "
                f"{str(event.aggregate_id)!r} is a {info.cls.__qualname__}, "
                f"not a {expect.__qualname__}"
            )
        try:
            if info.kind is codec.DATACLASSES:
                return info.cls(**event.event_data)
            return info.kind.build(info.cls, event.event_data)
        except TypeError as exc:
            raise DecodingError(
                f"cannot build {info.cls.__qualname__} from event {event.event_type!r} "
                f"at version {event.version} of stream {str(event.aggregate_id)!r}: {exc}"
            ) from exc


default_registry = EventRegistry()
"""The registry :func:`domain_event` uses unless given another."""


def domain_event(
    name: str,
    *,
    version: int = 1,
    aliases: Iterable[str] = (),
    deprecated: str | None = None,
    registry: EventRegistry | None = None,
    check_types: bool = True,
) -> Callable[[T], T]:
    """Class decorator declaring a frozen dataclass (or pydantic model) a domain event ``name``.

    ``version`` is the schema version of the class's fields; ``aliases`` are
    former names of the type, read as ``name``; ``deprecated`` (a reason) makes
    reading such events warn once. ``check_types=False`` turns off the check of
    field values against their annotations (see :meth:`EventRegistry.register`).
    """
    target = registry or default_registry

    def decorate(cls: T) -> T:
        target.register(cls, name, version=version, check_types=check_types)
        for old_name in aliases:
            target.alias(old_name, name)
        if deprecated is not None:
            target.deprecate(name, deprecated)
        return cls

    return decorate


def upcaster(
    event_type: str, *, from_version: int, registry: EventRegistry | None = None
) -> Callable[[U], U]:
    """Decorator registering an upcaster of ``event_type`` data from ``from_version``.

    ::

        @upcaster("UserRegistered", from_version=1)
        def add_phone(data):
            return {**data, "phone": ""}
    """
    return (registry or default_registry).upcaster(event_type, from_version=from_version)


MAX_NAME_LENGTH = 65_536
"""The longest aggregate type name of a snapshot, in characters."""

MAX_NAME_BYTES = 2048
"""The longest stream id, event type or metadata key, in bytes of UTF-8.

PostgreSQL's btree index refuses an entry over 2,704 bytes (a third of a page),
and the stream id is indexed with the version (and, for snapshots, with the
aggregate type): random ids over 2,684 bytes failed there (measured, PostgreSQL
15) while the memory and SQLite stores took them. 2,048 bytes leave room for the
rest of the key; every store enforces the same limit, so the stores agree on
what they accept.
"""


def check_text(kind: str, value: str) -> str:
    """Refuse text no store can keep: lone surrogates (not UTF-8) or over MAX_NAME_BYTES."""
    if value.isascii():  # the common case, decided without encoding
        size = len(value)
    else:
        try:
            size = len(value.encode())
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"{kind} is not valid Unicode text: it holds a lone surrogate "
                f"{value[exc.start]!r} at index {exc.start}, which has no UTF-8 form"
            ) from None
    if size > MAX_NAME_BYTES:
        raise InvalidInputError(
            f"{kind} is {size} bytes long in UTF-8, over the limit of {MAX_NAME_BYTES}"
        )
    return value


def check_name(kind: str, value: object) -> str:
    """Check a stream id or event type: a non-empty str, no NUL, UTF-8, at most MAX_NAME_BYTES."""
    if type(value) is not str:
        raise InvalidInputError(f"{kind} must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{kind} must not be empty")
    if "\x00" in value:
        raise InvalidInputError(f"{kind} must not contain NUL characters")
    if value.isascii() and len(value) <= MAX_NAME_BYTES:  # the common case, one call less
        return value
    return check_text(kind, value)


def validate_event_type(event_type: object) -> str:
    """Check an event type name; return it or raise :class:`InvalidInputError`."""
    return check_name("event type", event_type)


def as_metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy caller metadata into a plain dict, checking its type."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, got {type(value).__name__}")
    return dict(value)
