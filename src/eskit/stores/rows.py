"""Stored rows into events: the read path every backend shares, with no I/O.

:func:`decode_rows` is the hot path of every read; a row that cannot be decoded
raises a :class:`~eskit.errors.DecodingError` naming the event, or, for readers
that asked for it, becomes an :class:`UndecodableEvent` in its place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID, SafeUUID

import orjson
from orjson import JSONDecodeError

from eskit import codec
from eskit.errors import (
    DecodingError,
    InvalidInputError,
)
from eskit.events import (
    Event,
    EventRegistry,
    StreamId,
    UnfrozenEvent,
    recorded_event,
)
from eskit.stores.arguments import (
    stream_id_from_key,
)
from eskit.stores.compression import plain as _plain
from eskit.stores.model import (
    READ_ALL_PAGE_SIZE,
)

__all__ = ["UndecodableEvent"]


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
        # A compressed payload fails the fast path's parse and lands here.
        event_data = _decode(_plain(data))
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
    tags: tuple[str, ...] = ()
    """Its DCB tags, which are stored apart from the payload and so still known."""

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
                item.position or 0, item.schema_version, item.timestamp, exc, item.tags,
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


def decode_tagged(
    rows: Sequence[Any], stream_id: StreamId | None,
    attach: Callable[[list[Any]], None] | None,
) -> list[Event]:
    """:func:`decode_rows`, then ``attach`` (the store's look-up of the events' DCB
    tags). A page that fails on an undecodable row still gets its tags: the events
    decoded before the bad row and its placeholder, which a tolerant reader yields."""
    try:
        events = decode_rows(rows, stream_id)
    except _UndecodableRow as exc:
        if attach is not None:
            attach([*exc.decoded, exc.placeholder])
        raise
    if attach is not None:
        attach(events)
    return events


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
        event.tags = ()  # loaded by read_events only (eskit.dcb)
        event.__class__ = Event
        append(event)
    return events


_new_object = object.__new__


