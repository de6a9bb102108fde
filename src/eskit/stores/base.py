"""The event store contract, and the pure logic every backend shares.

A backend implements four primitives (``_append``, ``_read_stream``,
``_read_all_page``, ``_find_events``) plus a few queries; validation, encoding,
expected-version checks and retry detection live here, written once, with no I/O.

Guarantees every store gives (checked by :mod:`eskit.testing.contract`):

* **Optimistic concurrency.** An append names the version it expects the stream
  to be at; if the stream has moved, :class:`~eskit.errors.ConcurrencyError` is
  raised and nothing is written.
* **Atomic batches.** The events of one append are stored all together, at
  consecutive versions, or not at all.
* **Idempotent retries.** Appending the same events (same event ids, types and
  data; data compared with the keys of its objects sorted, see
  :func:`same_payload`) again at the same place succeeds without storing them
  twice; the result says ``duplicate=True``. As in KurrentDB, "the same place" means every event
  of the batch is already stored, consecutively, where this append would have put
  it, so retrying a consecutive part of an earlier batch is also accepted. A batch
  that mixes stored and new events, an id reused elsewhere, or an id reused for a
  different event is a :class:`~eskit.errors.DuplicateEventError`. (Stores written
  for the seed API only detect ids already in the same stream.)
* **A stable global order.** Every stored event gets a ``position``;
  :meth:`EventStore.read_all` returns events by increasing position, and an
  event visible at some position never moves and is never preceded later by a
  newly visible event. Positions may have gaps.
* **Append only.** Nothing in this API updates or deletes an event.

What is *not* guaranteed: timestamps are informative and may go backwards along
positions (clocks move); positions are not dense (a failed append may use up
numbers); positions are comparable only within one store.

Every store accepts the same input, checked here before any I/O: names (stream
ids, event types, metadata keys) of valid Unicode up to
:data:`~eskit.events.MAX_NAME_BYTES` bytes of UTF-8; versions from 0 to
``2**63 - 1``; positions from 0 to ``2**128 - 1``; any limit >= 0.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Any, Literal, Self, overload
from uuid import UUID, SafeUUID

import orjson
from orjson import JSONDecodeError

from eskit import codec
from eskit.errors import (
    ConcurrencyError,
    DecodingError,
    DuplicateEventError,
    EncodingError,
    InvalidInputError,
)
from eskit.events import (
    Event,
    EventRegistry,
    NewEvent,
    StreamId,
    UnfrozenEvent,
    as_metadata,
    check_name,
    check_text,
    default_registry,
    new_event_id,
    recorded_event,
    utc_now,
    validate_event_type,
)
from eskit.subscription import PollingWaiter, Subscription, Waiter

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "StreamInfo",
    "UndecodableEvent",
]

MAX_VERSION = 2**63 - 1
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
READ_ALL_PAGE_SIZE = 1000


class ExpectedVersion(Enum):
    """Named expectations for :meth:`EventStore.append` besides an exact version."""

    ANY = "any"
    """Append wherever the stream is; no concurrency check."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (same as the exact version ``0``)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must already have at least one event."""

    def __repr__(self) -> str:
        return self.name


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

Expected = int | ExpectedVersion
AppendInput = Event | NewEvent | object


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append stored: the stream's new version and the recorded events."""

    stream_id: StreamId
    version: int
    """The stream's version after the append (the last event's version)."""
    position: int
    """The global position of the last event of the batch."""
    events: tuple[Event, ...]
    duplicate: bool = False
    """True when the batch had been stored before and this call wrote nothing."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream as listed by :meth:`EventStore.list_streams`."""

    stream_id: StreamId
    version: int
    last_position: int
    last_timestamp: datetime


class PendingEvent:
    """A validated, encoded event on its way into a store (internal).

    A plain slotted class rather than a frozen dataclass: one is built per
    appended event, and the frozen ``__init__`` cost a microsecond each.
    """

    __slots__ = (
        "data",
        "event_data",
        "event_id",
        "event_type",
        "metadata",
        "metadata_dict",
        "schema_version",
        "timestamp",
    )

    def __init__(
        self,
        event_id: UUID,
        event_type: str,
        data: bytes,
        metadata: bytes,
        timestamp: datetime,
        schema_version: int,
        event_data: dict[str, Any],
        metadata_dict: dict[str, Any],
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.data = data
        self.metadata = metadata
        self.timestamp = timestamp
        self.schema_version = schema_version
        self.event_data = event_data
        self.metadata_dict = metadata_dict

    def recorded(self, stream_id: StreamId, version: int, position: int) -> Event:
        return recorded_event(
            self.event_id, stream_id, self.event_type, self.event_data, self.timestamp, version,
            position, self.metadata_dict, self.schema_version,
        )


# --------------------------------------------------------------------------- validation

_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def stream_key(stream_id: object) -> str:
    """The text under which a stream is stored. UUIDs use their canonical form.

    A str id must be non-empty, without NUL, valid UTF-8 (no lone surrogates) and
    at most :data:`~eskit.events.MAX_NAME_BYTES` bytes long in UTF-8.
    """
    if isinstance(stream_id, UUID):
        return str(stream_id)
    if type(stream_id) is not str:
        raise InvalidInputError(
            f"stream id must be a UUID or a str, got {type(stream_id).__name__}"
        )
    # The same rules as event types (eskit.events.check_name): refused here, before
    # any I/O, so that every store refuses the same ids with the same error.
    return check_name("stream id", stream_id)


def stream_id_from_key(key: str) -> StreamId:
    """The stream id for stored text: canonical UUID text comes back as a ``UUID``."""
    if len(key) == 36 and _UUID_TEXT.match(key):
        return UUID(key)
    return key


def check_version_arg(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if type(value) is not int:
        raise InvalidInputError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_VERSION:
        raise InvalidInputError(f"{name} must be between 0 and {MAX_VERSION}, got {value}")


MAX_POSITION = 2**128 - 1


def check_position(value: object) -> None:
    # Positions are opaque ordered ints; a store may pack several numbers into one
    # (PostgreSQL packs transaction id and sequence), so they can exceed 64 bits.
    if type(value) is not int:
        raise InvalidInputError(f"from_position must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_POSITION:
        raise InvalidInputError(f"from_position must be between 0 and 2**128 - 1, got {value}")


WAIT_FOR_FIRST_DELAY = 0.001
WAIT_FOR_MAX_DELAY = 0.05
"""``wait_for`` polls ``head_position``, doubling its pause from the first to the max."""


def check_wait_for_args(position: object, timeout: object) -> float:
    """The checked arguments of ``wait_for``: the timeout in seconds."""
    if type(position) is not int:
        raise InvalidInputError(f"position must be an int, got {type(position).__name__}")
    if not 0 <= position <= MAX_POSITION:
        raise InvalidInputError(f"position must be between 0 and 2**128 - 1, got {position}")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 <= timeout < float("inf")  # NaN fails too
    ):
        raise InvalidInputError(f"timeout must be a finite number >= 0, got {timeout!r}")
    return float(timeout)


def check_expected(expected: object) -> Expected:
    if isinstance(expected, ExpectedVersion):
        return expected
    check_version_arg("expected_version", expected)
    return expected  # type: ignore[return-value]


def check_read_stream_args(
    from_version: object, to_version: object, backwards: object, limit: object
) -> bool:
    """Validate read_stream's arguments; ``False`` when the range is empty by itself."""
    check_version_arg("from_version", from_version)
    check_version_arg("to_version", to_version, allow_none=True)
    check_limit(limit)
    if type(backwards) is not bool:
        raise InvalidInputError("backwards must be a bool")
    return not (limit == 0 or (to_version is not None and to_version <= from_version))  # type: ignore[operator]


READ_STREAM_PAGE_SIZE = 1000


class StreamPages:
    """How ``read_stream`` and ``iter_stream`` page through one stream (sync and async).

    The decision only, no I/O: :meth:`next` gives the arguments of the next
    ``_read_stream`` call (``None`` when done), :meth:`advance` takes the page it
    returned. Pages are version ranges walked in the requested direction, so
    memory holds one page of stored rows at a time. Versions of a stream are
    consecutive and never change, so pages read at different moments join into
    one run of the stream; events appended meanwhile may be included at the end.
    """

    __slots__ = (
        "backwards", "done", "first", "from_version", "remaining", "size", "to_version",
    )

    def __init__(
        self, from_version: int, to_version: int | None, backwards: bool, limit: int | None
    ) -> None:
        self.from_version = from_version
        self.to_version = to_version
        self.backwards = backwards
        self.remaining = limit  # any int: a limit beyond every count only ends no page
        self.size = 0
        self.done = False
        self.first = True

    def next(self) -> tuple[int, int | None, bool, int] | None:
        """``(from_version, to_version, backwards, limit)`` of the next page, or ``None``."""
        if self.done or self.remaining == 0:
            return None
        remaining = self.remaining
        size = self.size = READ_STREAM_PAGE_SIZE if remaining is None else min(
            remaining, READ_STREAM_PAGE_SIZE
        )
        # Each page also names its range of versions, not only a LIMIT: without fresh
        # statistics PostgreSQL scanned and sorted every version after the start for
        # each page (6.6 s instead of 0.8 s for 100,000 events). A full page of a
        # range is exactly ``size`` events, since a stream's versions are consecutive
        # from 1: forwards from any version, backwards once a full page proved that
        # every version below its last exists.
        lo, hi = self.from_version, self.to_version
        if not self.backwards:
            end = min(lo + size, MAX_VERSION)
            return lo, end if hi is None else min(hi, end), False, size
        if self.first:  # to_version may lie beyond the head: no range before one page
            return lo, hi, True, size
        assert hi is not None, "a full page backwards ends at a known version"
        return max(lo, hi - size), hi, True, size

    def advance(self, page: Sequence[Event]) -> None:
        self.first = False
        if len(page) < self.size:
            self.done = True
            return
        if self.remaining is not None:
            self.remaining -= len(page)
        if self.backwards:
            self.to_version = page[-1].version - 1
            self.done = self.to_version <= self.from_version
        else:
            self.from_version = page[-1].version
            self.done = self.to_version is not None and self.from_version >= self.to_version


def expected_range(expected: Expected) -> tuple[int, int]:
    """The head versions an expectation accepts, as an inclusive range."""
    if expected is ANY:
        return 0, MAX_VERSION
    if expected is NO_STREAM:
        return 0, 0
    if expected is STREAM_EXISTS:
        return 1, MAX_VERSION
    assert isinstance(expected, int)
    return expected, expected


def expected_matches(expected: Expected, head: int) -> bool:
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return head == 0
    if expected is STREAM_EXISTS:
        return head > 0
    return head == expected


def check_limit(limit: object) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidInputError(f"limit must be None or an int >= 0, got {limit!r}")


def check_as_of(as_of: object) -> datetime:
    """A time-travel moment: an aware ``datetime``, returned in UTC."""
    if not isinstance(as_of, datetime):
        raise InvalidInputError(f"as_of must be a datetime, got {type(as_of).__name__}")
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise InvalidInputError(
            "as_of must be timezone-aware (e.g. datetime(2025, 1, 31, tzinfo=UTC)): "
            "a naive time names no moment"
        )
    return _in_utc("as_of", as_of)


def _in_utc(what: str, moment: datetime) -> datetime:
    # An aware time near year 1 or 9999 may have no UTC equivalent in range.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(
            f"{what} {moment.isoformat()} is out of range once converted to UTC"
        ) from None


VERSION_AT_PAGE = 500


def version_at_by_paging(
    read_stream: Callable[..., list[Event]], stream_id: StreamId, as_of: datetime
) -> int:
    """``version_at`` for stores without a query of their own: pages back from the head."""
    to_version: int | None = None
    while True:
        page = read_stream(
            stream_id, 0, to_version, backwards=True, limit=VERSION_AT_PAGE
        )
        for event in page:
            if event.timestamp <= as_of:
                return event.version
        if len(page) < VERSION_AT_PAGE:
            return 0
        to_version = page[-1].version - 1


def _to_utc(ts: object) -> datetime:
    if type(ts) is datetime and ts.tzinfo is UTC:  # what eskit itself stamps: nothing to do
        return ts
    if not isinstance(ts, datetime):
        raise InvalidInputError(f"timestamp must be a datetime, got {type(ts).__name__}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidInputError("timestamp must be timezone-aware (eskit stores UTC)")
    return _in_utc("timestamp", ts)


def prepare_batch(
    stream: str,
    events: object,
    *,
    registry: EventRegistry,
    max_event_bytes: int,
) -> list[PendingEvent]:
    """Validate and encode a batch. Raises before anything can be written."""
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Sequence):
        raise InvalidInputError(
            f"events must be a list of events, got {type(events).__name__}"
        )
    if not events:
        raise InvalidInputError("cannot append an empty batch of events")
    pending: list[PendingEvent] = []
    seen: set[int] = set()  # ids as ints: hashing a UUID runs Python code, an int's does not
    now = utc_now()
    verified_owner: object = None
    for index, item in enumerate(events):
        if isinstance(item, Event):
            owner = item.aggregate_id
            # The events of one aggregate share one id object: check it once per batch
            # (its key costs a microsecond: str() of a UUID).
            if owner is not None and owner is not verified_owner:
                if stream_key(owner) != stream:
                    raise InvalidInputError(
                        f"event {index} of the batch belongs to stream {str(owner)!r}, "
                        f"not {stream!r}"
                    )
                verified_owner = owner
        try:
            p = _prepare_one(stream, item, registry, now)
        except EncodingError as exc:
            raise EncodingError(f"event {index} of the batch: {exc.bare_message}",
                                path=exc.path) from None
        except InvalidInputError as exc:
            raise InvalidInputError(f"event {index} of the batch: {exc}") from None
        if len(p.data) + len(p.metadata) > max_event_bytes:
            raise InvalidInputError(
                f"event {index} of the batch ({p.event_type!r}) encodes to "
                f"{len(p.data) + len(p.metadata)} bytes, over the limit of {max_event_bytes}"
            )
        key = p.event_id.int
        if key in seen:
            raise InvalidInputError(f"event id {p.event_id} appears twice in one batch")
        seen.add(key)
        pending.append(p)
    return pending


def _prepare_one(stream: str, item: object, registry: EventRegistry, now: datetime) -> PendingEvent:
    schema_version: int | None
    if isinstance(item, Event):
        event_id, event_type, data = item.event_id, item.event_type, item.event_data
        metadata, schema_version = item.metadata, item.schema_version
        timestamp: datetime | None = item.timestamp
    elif isinstance(item, NewEvent):
        event_id, event_type, data = item.event_id, item.event_type, item.event_data
        metadata, timestamp, schema_version = item.metadata, item.timestamp, item.schema_version
    elif registry.is_domain_event(item):
        event_type, data, schema_version = registry.from_domain(item)
        event_id, metadata, timestamp = new_event_id(), {}, None
    else:
        raise InvalidInputError(
            f"cannot append a {type(item).__name__}: pass eskit.Event, eskit.NewEvent "
            "or an instance of a registered @domain_event class"
        )
    # The ``type(...) is`` tests short-cut the common case; the isinstance checks
    # behind them (an ABC check costs a few hundred ns) still admit subclasses.
    if type(event_id) is not UUID and not isinstance(event_id, UUID):
        raise InvalidInputError(f"event_id must be a UUID, got {type(event_id).__name__}")
    validate_event_type(event_type)
    if type(data) is not dict and not isinstance(data, Mapping):
        raise InvalidInputError(f"event_data must be a dict, got {type(data).__name__}")
    if schema_version is None:  # a NewEvent that leaves it to the registry
        schema_version = registry.write_version(event_type, data)
    if type(schema_version) is not int or not 1 <= schema_version <= 2**31 - 1:
        raise InvalidInputError(f"schema_version must be an int >= 1, got {schema_version!r}")
    data = dict(data)
    if type(metadata) is dict and not metadata:
        metadata = {}
    else:
        metadata = as_metadata(metadata)
        for key in metadata:
            # Metadata keys follow the rules of names (no lone surrogate, at most
            # MAX_NAME_BYTES); a key that is not a str is the codec's to refuse.
            if type(key) is str:
                check_text("metadata key", key)
    naive = registry.naive_datetimes
    return PendingEvent(
        event_id, event_type, codec.encode(data, naive_datetimes=naive),
        codec.encode(metadata, naive_datetimes=naive),
        now if timestamp is None else _to_utc(timestamp), schema_version, data, metadata,
    )


def same_payload(stored: bytes, retried: bytes) -> bool:
    """Whether two encoded payloads hold the same data, whatever the order of their keys.

    The canonical form is the codec's JSON with the keys of every object sorted
    (sets are already encoded in a canonical order). Values are not compared as
    Python values: ``Decimal('NaN')`` is not equal to itself, and ``1 == 1.0 ==
    True`` or ``Decimal('1.0') == Decimal('1.00')`` would call different stored
    data the same. Only the order of keys, which a dict built another way
    changes, is ignored.
    """
    if stored == retried:
        return True
    return bool(
        _dumps(_loads(stored), option=orjson.OPT_SORT_KEYS)
        == _dumps(_loads(retried), option=orjson.OPT_SORT_KEYS)
    )


def resolve_conflict(
    stream_id: StreamId,
    stream: str,
    expected: Expected,
    head: int,
    batch: Sequence[PendingEvent],
    found: Mapping[UUID, Event],
) -> AppendResult:
    """Decide what an append that could not simply insert means.

    Called when the head did not match ``expected`` or an event id already
    exists. ``found`` maps the batch's event ids that are already stored to
    their stored events. Either the whole batch is already stored, in order, at
    the place this append asked for (a retry: return its result), or it is an
    error.
    """
    if not found:
        raise ConcurrencyError(stream_id, expected, head)
    stored = [found.get(p.event_id) for p in batch]
    first = stored[0]
    # A retry repeats the same events: same ids, same place, same type and data
    # (timestamps and metadata may differ between attempts). Data is compared as
    # canonical encodings (see same_payload), not as values.
    complete = first is not None and all(
        e is not None
        and stream_key(e.aggregate_id) == stream
        and e.version == first.version + i
        and e.event_type == p.event_type
        and same_payload(codec.encode(e.event_data), p.data)
        for i, (e, p) in enumerate(zip(stored, batch, strict=True))
    )
    if complete and first is not None:
        expected_ok = (
            expected is ANY
            or expected is STREAM_EXISTS
            or (expected is NO_STREAM and first.version == 1)
            or (isinstance(expected, int) and first.version == expected + 1)
        )
        if expected_ok:
            events = tuple(e for e in stored if e is not None)
            return AppendResult(
                stream_id, events[-1].version, events[-1].position or 0, events, duplicate=True
            )
    clash = next(p.event_id for p in batch if p.event_id in found)
    where = found[clash]
    raise DuplicateEventError(
        f"event id {clash} is already stored at version {where.version} of stream "
        f"{str(where.aggregate_id)!r}; a retry must repeat the same events, all already "
        "stored, at the same place",
        event_id=clash,
    )


# --------------------------------------------------------------------------- decoding

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def timestamp_to_micros(ts: datetime) -> int:
    """A UTC datetime as integer microseconds since the Unix epoch (exact)."""
    return (ts - _EPOCH) // _MICROSECOND


_FLOAT_EXACT_MICROS = 2**52  # about the year 2112


def micros_to_timestamp(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the epoch, exactly."""
    if -_FLOAT_EXACT_MICROS < micros < _FLOAT_EXACT_MICROS:
        # Fast path, still exact: below 2**52 microseconds a double's error at this
        # magnitude stays under a quarter microsecond, and fromtimestamp rounds to
        # the nearest microsecond.
        return _fromtimestamp(micros / 1e6, UTC)
    return _EPOCH + timedelta(microseconds=micros)


_fromtimestamp = datetime.fromtimestamp


def decode_event(
    event_id: UUID,
    stream_id: StreamId,
    event_type: str,
    data: str | bytes,
    metadata: str | bytes,
    timestamp: datetime,
    version: int,
    position: int,
    schema_version: int,
) -> Event:
    """Build an :class:`Event` from stored columns, naming the event on failure."""
    # The careful path: decode_rows handles every row in bulk and comes here only for
    # a row it cannot take, so that the error names the event.
    try:
        event_data = _decode(data)
        meta = {} if metadata == "{}" or metadata == b"{}" else _decode(metadata)
    except DecodingError as exc:
        raise DecodingError(
            f"cannot decode event {event_type!r} at version {version} of stream "
            f"{str(stream_id)!r} (position {position}): {exc}",
            position=position,
        ) from exc
    if type(event_data) is not dict or type(meta) is not dict:
        raise DecodingError(
            f"event {event_type!r} at version {version} of stream {str(stream_id)!r} "
            "does not hold a JSON object",
            position=position,
        )
    return recorded_event(
        event_id, stream_id, event_type, event_data, timestamp, version, position, meta,
        schema_version,
    )


_decode = codec.decode
_loads = orjson.loads
_dumps = orjson.dumps
_decode_tree = codec.decode_tree
_TAG_TEXT = codec.TAG
_new_uuid = UUID.__new__
_set_uuid_int = UUID.__dict__["int"].__set__
_set_uuid_safety = UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = SafeUUID.unknown

StoredRow = tuple[int, int, "bytes | UUID", str, int, str, int, "int | datetime", "str | bytes",
                  "str | bytes"]
"""A stored event as the stores select it: ``(tx, seq, event id, stream key, version,
event type, schema version, recorded at, data, metadata)``. The position is
``tx << 64 | seq`` (SQLite and memory: tx 0, seq the position); the event id
is 16 bytes or a ``UUID``; recorded at is microseconds since the epoch (UTC) or
an aware ``datetime``; data and metadata are the codec's JSON."""


@dataclass(frozen=True, slots=True)
class UndecodableEvent:
    """A stored event that cannot be decoded or upcast, in its place in the global order.

    Readers see these only when they ask for them
    (``read_all(..., on_undecodable="yield")`` or a callback); by default reading
    such an event raises its :class:`~eskit.errors.DecodingError`. It carries what
    is known without decoding the payload: where the event is and what type it has.
    It is not an :class:`~eskit.Event` and has no data: nothing can be applied from it.
    """

    event_id: UUID
    aggregate_id: StreamId
    event_type: str
    version: int
    position: int
    schema_version: int
    timestamp: datetime
    error: DecodingError
    """Why it cannot be read, naming stream, version, type and position."""

    @property
    def stream_id(self) -> StreamId:
        return self.aggregate_id


class _UndecodableRow(DecodingError):
    """What :func:`decode_rows` raises: also the events decoded before the bad row.

    A :class:`~eskit.errors.DecodingError` like any other for callers; readers that
    asked to pass undecodable events (:func:`iter_tolerant`) use the prefix and the
    placeholder to deliver the page in order and go on after the bad row.
    """

    def __init__(
        self, error: DecodingError, decoded: list[Event], placeholder: UndecodableEvent
    ) -> None:
        super().__init__(str(error), position=placeholder.position)
        self.decoded = decoded
        self.placeholder = placeholder


OnUndecodable = Literal["raise", "yield"] | Callable[[UndecodableEvent], object]
"""What a reader does at an event it cannot decode: raise its
:class:`~eskit.errors.DecodingError` (the default), yield an :class:`UndecodableEvent`
in its place, or call the function with it and go on."""


def check_on_undecodable(value: object) -> None:
    if value not in ("raise", "yield") and not callable(value):
        raise InvalidInputError(
            f"on_undecodable must be 'raise', 'yield' or a callable, not {value!r}"
        )


def upcast_tolerant(
    registry: EventRegistry, page: list[Event | UndecodableEvent]
) -> list[Event | UndecodableEvent]:
    """``registry.upcast`` per event, an upcast failure becoming a placeholder."""
    out: list[Event | UndecodableEvent] = []
    for item in page:
        if isinstance(item, UndecodableEvent):
            out.append(item)
            continue
        try:
            out.extend(registry.upcast([item]))
        except DecodingError as exc:
            out.append(UndecodableEvent(
                item.event_id, item.aggregate_id, item.event_type, item.version,
                item.position or 0, item.schema_version, item.timestamp, exc,
            ))
    return out


def undecodable_page(error: DecodingError) -> list[Event | UndecodableEvent] | None:
    """The page a failed read stands for: the events decoded before the bad row, then
    its placeholder (``None`` if ``error`` did not come from :func:`decode_rows`).

    The rest of the page was not decoded: the reader goes on after the placeholder.
    """
    if isinstance(error, _UndecodableRow):
        return [*error.decoded, error.placeholder]
    return None


def tolerant_items(
    registry: EventRegistry, page: list[Event | UndecodableEvent], on_undecodable: OnUndecodable
) -> list[Any]:
    """What a reader that passes undecodable events gets from one page, in order:
    upcast events, and placeholders (yielded, or handed to the callback and dropped)."""
    items = upcast_tolerant(registry, page)
    if on_undecodable == "yield":
        return items
    out = []
    for item in items:
        if isinstance(item, UndecodableEvent):
            on_undecodable(item)  # type: ignore[operator]
        else:
            out.append(item)
    return out


def iter_tolerant(
    read_page: Callable[[int, int], list[Event]],
    registry: EventRegistry,
    after: int,
    limit: int | None,
    on_undecodable: OnUndecodable,
) -> Iterator[Any]:
    """``read_all``'s paging for a reader that passes undecodable events.

    ``limit`` counts undecodable events too: they take a position like any event.
    """
    remaining = limit
    while remaining is None or remaining > 0:
        size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
        try:
            page: list[Event | UndecodableEvent] = list(read_page(after, size))
            more = len(page) == size
        except DecodingError as exc:
            cut = undecodable_page(exc)
            if cut is None:
                raise
            page, more = cut, True
        yield from tolerant_items(registry, page, on_undecodable)
        if not more:
            return
        after = page[-1].position or after
        if remaining is not None:
            remaining -= len(page)


def decode_rows(rows: Iterable[Any], stream_id: StreamId | None = None) -> list[Event]:
    """Events from stored rows (see :data:`StoredRow`): the read path of every store.

    One loop with the per-event work inlined, because at a few microseconds per
    event every call shows (``benchmarks/README.md``). Events of one batch share
    their timestamp, so the ``datetime`` is built once per run of equal values.
    A row that fails to decode is decoded again by :func:`decode_event`, whose
    error names the event; the error raised also carries the events decoded before
    it and an :class:`UndecodableEvent` for it, so that a reader that passes
    undecodable events loses neither.
    """
    ids: dict[str, StreamId] = {}
    events: list[Event] = []
    append = events.append
    last_at: object = None
    timestamp: Any = None
    sid: Any = stream_id
    for tx, seq, event_id, stream, version, event_type, schema_version, at, data, meta in rows:
        if stream_id is None:
            sid = ids.get(stream)
            if sid is None:
                sid = ids[stream] = stream_id_from_key(stream)
        if type(event_id) is bytes:
            raw = event_id
            event_id = _new_uuid(UUID)
            _set_uuid_int(event_id, int.from_bytes(raw, "big"))
            _set_uuid_safety(event_id, _UNKNOWN_SAFETY)
        if at != last_at:
            last_at = at
            timestamp = micros_to_timestamp(at) if type(at) is int else at
        try:
            # codec.decode, inlined: parse, then walk only a payload that holds a tag.
            event_data = _loads(data)
            if _TAG_TEXT in data:
                event_data = _decode_tree(event_data)
            metadata = {} if meta == "{}" else _decode(meta)
        except (DecodingError, JSONDecodeError, TypeError):
            event_data = metadata = None
        if type(event_data) is not dict or type(metadata) is not dict:
            # The slow path: raises an error that names the event (or decodes a payload
            # the fast path does not take, such as bytes).
            try:
                append(decode_event(
                    event_id, sid, event_type, data, meta, timestamp, version,
                    tx << 64 | seq, schema_version,
                ))
            except DecodingError as exc:
                raise _UndecodableRow(exc, events, UndecodableEvent(
                    event_id, sid, event_type, version, tx << 64 | seq, schema_version,
                    timestamp, exc,
                )) from exc
            continue
        # recorded_event, inlined: fill the twin's slots, then make it an Event.
        event: Any = _new_object(UnfrozenEvent)
        event.event_id = event_id
        event.aggregate_id = sid
        event.event_type = event_type
        event.event_data = event_data
        event.timestamp = timestamp
        event.version = version
        event.position = tx << 64 | seq
        event.metadata = metadata
        event.schema_version = schema_version
        event.__class__ = Event
        append(event)
    return events


_new_object = object.__new__


# --------------------------------------------------------------------------- wake-ups

_WAITERS_LOCK = threading.Lock()


class _LocalWaiter(PollingWaiter):
    """Woken by appends through the same store object; polls for everything else."""

    def __init__(self, store: EventStore) -> None:
        super().__init__()
        self._store = store

    def close(self) -> None:
        super().close()
        with _WAITERS_LOCK:
            self._store.__dict__.get("_waiters", set()).discard(self)


# --------------------------------------------------------------------------- the contract


# No @abstractmethod: a seed-style subclass implements save_events/get_events, a
# modern backend the underscore primitives; either is enough (see _implements).
class EventStore(ABC):  # noqa: B024
    """An append-only event store with optimistic locking.

    The modern API is :meth:`append`, :meth:`read_stream`, :meth:`read_all`,
    :meth:`head_version`; the seed tutorial's :meth:`save_events` and
    :meth:`get_events` are thin wrappers over it. A class written for the seed
    tutorial that overrides only ``save_events`` and ``get_events`` still works
    with :class:`~eskit.Repository`: the modern methods then call those.
    """

    registry: EventRegistry = default_registry
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    # -- the modern API ---------------------------------------------------------------

    def append(
        self, stream_id: StreamId, events: Sequence[AppendInput], expected_version: Expected = ANY
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` if the stream is at ``expected_version``.

        ``expected_version`` is an exact version (``0`` means the stream has no
        events yet), or :data:`ANY`, :data:`NO_STREAM`, :data:`STREAM_EXISTS`.
        The batch is stored whole or not at all. Raises
        :class:`~eskit.errors.ConcurrencyError` if the stream has moved,
        :class:`~eskit.errors.DuplicateEventError` if an event id is stored
        elsewhere, :class:`~eskit.errors.InvalidInputError` for bad input; in
        each case nothing is written.
        """
        stream = stream_key(stream_id)
        expected = check_expected(expected_version)
        batch = prepare_batch(
            stream, events, registry=self.registry, max_event_bytes=self.max_event_bytes
        )
        if not self._implements("_append"):
            return self._append_via_seed_api(stream_id, batch, expected)
        result = self._append(stream_id, stream, expected, batch)
        if not result.duplicate:
            self._wake_waiters()
        return result

    def read_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Event]:
        """The events of one stream with ``from_version < version <= to_version``.

        ``from_version`` is exclusive, like the seed's ``get_events``: ``0``
        reads from the first event, and passing the version you already have
        reads only what came after it. ``to_version=None`` reads to the head.
        ``backwards=True`` returns the same range newest first; ``limit`` keeps
        that many events from the start of the returned order (any int >= 0; a
        limit beyond the stream's length reads it all). An unknown stream reads
        as empty.

        The stream is read in pages of 1,000 events, so only the returned list
        grows with the stream; :meth:`iter_stream` does not hold it either.
        """
        stream = stream_key(stream_id)
        if not check_read_stream_args(from_version, to_version, backwards, limit):
            return []
        if not self._implements("_read_stream"):
            events = [
                e for e in self.get_events(stream_id, from_version)
                if to_version is None or e.version <= to_version
            ]
            if backwards:
                events.reverse()
            return self.registry.upcast(events if limit is None else events[:limit])
        return list(
            self._iter_stream(stream_id, stream, from_version, to_version, backwards, limit)
        )

    def iter_stream(
        self,
        stream_id: StreamId,
        from_version: int = 0,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The events :meth:`read_stream` returns, fetched lazily in pages.

        Memory holds one page (1,000 events), however long the stream: use this
        to fold a long stream (repositories load aggregates page by page too).
        Bad arguments raise here, at the call. The pages are separate reads:
        events appended while iterating may be included at the end (never in
        the middle, never twice), like a later :meth:`read_stream`.
        """
        stream = stream_key(stream_id)
        if not check_read_stream_args(from_version, to_version, backwards, limit):
            return iter(())
        if not self._implements("_read_stream"):
            return iter(self.read_stream(
                stream_id, from_version, to_version, backwards=backwards, limit=limit
            ))
        return self._iter_stream(stream_id, stream, from_version, to_version, backwards, limit)

    def _iter_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> Iterator[Event]:
        pages = StreamPages(from_version, to_version, backwards, limit)
        while (args := pages.next()) is not None:
            page = self._read_stream(stream_id, stream, *args)
            pages.advance(page)
            yield from self.registry.upcast(page)

    @overload
    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: Literal["raise"] | Callable[[UndecodableEvent], object] = "raise",
    ) -> Iterator[Event]: ...

    @overload
    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: Literal["yield"],
    ) -> Iterator[Event | UndecodableEvent]: ...

    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: OnUndecodable = "raise",
    ) -> Iterator[Any]:
        """Every event with ``position > from_position``, in global order.

        ``from_position`` is exclusive: pass the position of the last event you
        processed (a checkpoint) unchanged to continue after it. Events are
        fetched lazily in pages, so reading a large store keeps memory flat.
        The order is stable: events become visible only in increasing position
        order, so a reader that continues from its checkpoint never skips one.

        A stored event that cannot be decoded or upcast raises
        :class:`~eskit.errors.DecodingError` (naming its stream, version, type and
        position; ``error.position`` is where to resume to pass it). With
        ``on_undecodable="yield"`` it is yielded instead, in its place, as an
        :class:`UndecodableEvent`; with a function, that function is called with the
        placeholder and reading goes on. Either way the reader keeps its place.
        """
        check_position(from_position)
        check_limit(limit)
        check_on_undecodable(on_undecodable)
        if not self._implements("_read_all_page"):
            raise NotImplementedError(
                f"{type(self).__name__} implements only the seed API and has no global order"
            )
        if on_undecodable == "raise":
            return self._iter_all(from_position, limit)
        # Page by page without any store's read-ahead: readers that pass undecodable
        # events (runners, subscriptions) read at most one page per call anyway.
        return iter_tolerant(
            self._read_all_page, self.registry, from_position, limit, on_undecodable
        )

    def _iter_all(self, after: int, limit: int | None) -> Iterator[Event]:
        remaining = limit
        while remaining is None or remaining > 0:
            size = READ_ALL_PAGE_SIZE if remaining is None else min(remaining, READ_ALL_PAGE_SIZE)
            page = self._read_all_page(after, size)
            yield from self.registry.upcast(page)
            if len(page) < size:
                return
            after = page[-1].position or after
            if remaining is not None:
                remaining -= len(page)

    def subscribe(
        self,
        from_position: int = 0,
        *,
        page_size: int = 500,
        poll_interval: float = 1.0,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
        on_undecodable: OnUndecodable = "raise",
    ) -> Subscription:
        """Every event after ``from_position``: history first, then live, until stopped.

        See :class:`~eskit.Subscription`. New events wake the subscription at once
        when the store can signal them (PostgreSQL LISTEN/NOTIFY, appends through
        this store object); otherwise it polls every ``poll_interval`` seconds.
        ``event_types`` and ``stream_prefixes`` keep only matching events; the
        checkpoint still moves past the others. ``on_undecodable`` is as for
        :meth:`read_all`.
        """
        return Subscription(
            self, from_position, page_size=page_size, poll_interval=poll_interval,
            event_types=event_types, stream_prefixes=stream_prefixes,
            on_undecodable=on_undecodable,
        )

    def _new_waiter(self) -> Waiter:
        """A waiter woken by appends through this object, polling otherwise."""
        waiter = _LocalWaiter(self)
        with _WAITERS_LOCK:
            self.__dict__.setdefault("_waiters", set()).add(waiter)
        return waiter

    def _wake_waiters(self) -> None:
        waiters = self.__dict__.get("_waiters")
        if waiters:
            with _WAITERS_LOCK:
                current = list(waiters)
            for waiter in current:
                waiter.wake()

    def head_version(self, stream_id: StreamId) -> int:
        """The version of the stream's last event; ``0`` if the stream has none."""
        stream = stream_key(stream_id)
        if not self._implements("_head_version"):
            events = self.get_events(stream_id)
            return events[-1].version if events else 0
        return self._head_version(stream)

    def version_at(self, stream_id: StreamId, as_of: datetime) -> int:
        """The version of the stream's last event recorded at or before ``as_of``; ``0`` if none.

        "Last" goes by version: this is the highest version whose timestamp is
        at or before ``as_of`` (timezone-aware, else
        :class:`~eskit.InvalidInputError`). Timestamps are informative and may
        go backwards along a stream when clocks move, so an earlier version may
        carry a later timestamp; it is still part of the state at this version.
        """
        stream = stream_key(stream_id)
        moment = check_as_of(as_of)
        if not self._implements("_version_at"):
            return version_at_by_paging(self.read_stream, stream_id, moment)
        return self._version_at(stream, moment)

    def head_position(self) -> int:
        """The position of the newest visible event in the store; ``0`` if empty."""
        return self._head_position()

    def wait_for(self, position: int, timeout: float = 10.0) -> bool:
        """Wait until :meth:`read_all` returns the event at ``position``: read your writes.

        Pass the ``position`` of an :meth:`append` result (or of an event). Returns
        ``True`` as soon as :meth:`head_position` has reached it, so every reader
        of this store that starts now gets the event (a PostgreSQL reader can lag
        behind a commit while an older append is still open; see
        docs/postgres.md), and ``False`` if ``timeout`` seconds pass first. It
        polls, with pauses growing from 1 ms to 50 ms; it does not say whether
        an event exists at ``position``.
        """
        limit = check_wait_for_args(position, timeout)
        deadline = time.monotonic() + limit
        delay = WAIT_FOR_FIRST_DELAY
        while self.head_position() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(2 * delay, WAIT_FOR_MAX_DELAY)
        return True

    def list_streams(self) -> list[StreamInfo]:
        """Every stream in the store, in order of its first event."""
        return self._list_streams()

    def close(self) -> None:  # noqa: B027 - stores without connections need not override
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the seed tutorial's API ------------------------------------------------------

    def save_events(
        self, aggregate_id: StreamId, events: Sequence[AppendInput], expected_version: int
    ) -> AppendResult:
        """Save events for an aggregate with optimistic locking (seed API).

        Raises :class:`~eskit.errors.ConcurrencyError`, a ``ValueError``, when
        the aggregate's stream is not at ``expected_version``.
        """
        return self.append(aggregate_id, events, expected_version)

    def get_events(self, aggregate_id: StreamId, from_version: int = 0) -> list[Event]:
        """The aggregate's events after ``from_version`` (seed API)."""
        if not self._implements("_read_stream"):
            raise NotImplementedError(
                f"{type(self).__name__} must implement get_events or the modern API"
            )
        return self.read_stream(aggregate_id, from_version)

    # -- what a backend implements ----------------------------------------------------

    def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        raise NotImplementedError

    def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        raise NotImplementedError

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        raise NotImplementedError

    def _head_version(self, stream: str) -> int:
        raise NotImplementedError

    def _version_at(self, stream: str, as_of: datetime) -> int:
        raise NotImplementedError

    def _head_position(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} has no global order")

    def _list_streams(self) -> list[StreamInfo]:
        raise NotImplementedError(f"{type(self).__name__} cannot list streams")

    # -- compatibility with seed-style subclasses --------------------------------------

    def _implements(self, name: str) -> bool:
        return getattr(type(self), name) is not getattr(EventStore, name)

    def _append_via_seed_api(
        self, stream_id: StreamId, batch: list[PendingEvent], expected: Expected
    ) -> AppendResult:
        if not self._implements("save_events"):
            raise NotImplementedError(
                f"{type(self).__name__} must implement save_events or the modern API"
            )
        stored = self.get_events(stream_id)
        head = stored[-1].version if stored else 0
        ids = {p.event_id for p in batch}
        found = {e.event_id: e for e in stored if e.event_id in ids}
        if found or not expected_matches(expected, head):
            return resolve_conflict(stream_id, stream_key(stream_id), expected, head, batch, found)
        events = [p.recorded(stream_id, head + i + 1, 0) for i, p in enumerate(batch)]
        self.save_events(stream_id, events, head)
        return AppendResult(stream_id, head + len(events), 0, tuple(events))
