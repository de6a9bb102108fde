"""The argument checks and append decisions every store shares, written once, with no I/O.

Everything here runs before a store touches its database: names, versions,
positions and limits are checked (a typed :class:`~eskit.errors.InvalidInputError`,
nothing written), batches are encoded (:func:`prepare_batch`), and a refused
append is turned into a conflict, a retry result or a duplicate error
(:func:`resolve_conflict`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

import orjson

from eskit import codec
from eskit.context import with_context
from eskit.dcb import check_tags
from eskit.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EncodingError,
    InvalidInputError,
)
from eskit.events import (
    Event,
    EventRegistry,
    NewEvent,
    StreamId,
    as_metadata,
    check_name,
    check_text,
    new_event_id,
    utc_now,
    validate_event_type,
)
from eskit.stores.model import (
    ANY,
    MAX_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Expected,
    ExpectedVersion,
    PendingEvent,
)

__all__: list[str] = []


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


def check_event_id(value: object) -> UUID:
    """An event id to look up: a ``UUID``, or its text (any form ``UUID()`` reads)."""
    if isinstance(value, UUID):
        return value
    if type(value) is str and len(value) <= 64:
        try:
            return UUID(value)
        except ValueError:
            pass
    shown = repr(value) if type(value) is str and len(value) <= 64 else type(value).__name__
    raise InvalidInputError(f"an event id must be a UUID or UUID text, got {shown}")


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
    consecutive from its first kept one and never change, so pages read at
    different moments join into one run of the stream; events appended meanwhile
    may be included at the end.
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
        # Each page after the first also names its range of versions, not only a
        # LIMIT: without fresh statistics PostgreSQL scanned and sorted every version
        # after the start for each page (6.6 s instead of 0.8 s for 100,000 events).
        # A full page of a range is exactly ``size`` events, since a stream's
        # versions are consecutive from its first kept one: forwards once a page
        # proved where they start, backwards once a full page proved that every
        # version below its last exists. The first page forwards is a LIMIT alone:
        # truncate_stream may have removed the versions after ``from_version`` (a
        # gap at the stream's start, never elsewhere), and a range there would read
        # as the end. That costs at most one such sort per read, not one per page.
        lo, hi = self.from_version, self.to_version
        if self.first:  # and backwards, to_version may lie beyond the head
            return lo, hi, self.backwards, size
        if not self.backwards:
            end = min(lo + size, MAX_VERSION)
            return lo, end if hi is None else min(hi, end), False, size
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
    encode_data: bool = True,
) -> list[PendingEvent]:
    """Validate and encode a batch. Raises before anything can be written.

    ``encode_data=False`` (internal; the protected store, which encodes each
    payload once, sealed) leaves every event's ``data`` empty and unchecked:
    the caller must encode and size-check the payloads itself.
    """
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
            p = _prepare_one(stream, item, registry, now, encode_data)
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


def _prepare_one(stream: str, item: object, registry: EventRegistry, now: datetime,
                 encode_data: bool = True) -> PendingEvent:
    schema_version: int | None
    tags: object
    if isinstance(item, Event):
        event_id, event_type, data = item.event_id, item.event_type, item.event_data
        metadata, schema_version = item.metadata, item.schema_version
        timestamp: datetime | None = item.timestamp
        tags = item.tags
    elif isinstance(item, NewEvent):
        event_id, event_type, data = item.event_id, item.event_type, item.event_data
        metadata, timestamp, schema_version = item.metadata, item.timestamp, item.schema_version
        tags = item.tags
    elif registry.is_domain_event(item):
        event_type, data, schema_version = registry.from_domain(item)
        event_id, metadata, timestamp = new_event_id(), {}, None
        # A class may say which DCB tags its events carry (see eskit.dcb).
        hook = getattr(item, "dcb_tags", None)
        tags = () if hook is None else hook()
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
    metadata = with_context(metadata)  # actor, correlation and causation ids (eskit.context)
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
        event_id, event_type, codec.encode(data, naive_datetimes=naive) if encode_data else b"",
        codec.encode(metadata, naive_datetimes=naive),
        now if timestamp is None else _to_utc(timestamp), schema_version, data, metadata,
        check_tags(tags),
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
        orjson.dumps(orjson.loads(stored), option=orjson.OPT_SORT_KEYS)
        == orjson.dumps(orjson.loads(retried), option=orjson.OPT_SORT_KEYS)
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


