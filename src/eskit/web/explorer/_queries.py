"""What the explorer's pages show, read from a sync :class:`~eskit.EventStore`; no HTTP here.

Every function takes checked arguments and returns plain values the templates
render. Nothing here writes to the store.

Not yet guaranteed (issue 16, item 4): the look-up by correlation id scans the log
on each request (no store indexes metadata), and so does the event-type filter of the
streams page on a store whose ``read_all`` does not filter by type itself. Event ids
are looked up in the store's index (:meth:`~eskit.EventStore.locate_event`); the
streams page without a type filter reads one index range
(:meth:`~eskit.EventStore.list_streams_page`).
"""

from __future__ import annotations

import inspect
import pprint
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from eskit.events import Event
from eskit.stores.arguments import stream_key
from eskit.stores.base import EventStore
from eskit.stores.rows import UndecodableEvent

__all__ = [
    "RELATED_KEYS",
    "StreamRow",
    "StreamsPage",
    "correlated_events",
    "event_at",
    "find_event",
    "log_page",
    "pretty",
    "related_ids",
    "stream_timeline",
    "streams_page",
]

RELATED_KEYS = ("causation_id", "correlation_id")
"""The metadata keys that name other events (process managers set ``causation_id``)."""

_MAX_CORRELATED = 500


@dataclass(frozen=True, slots=True)
class StreamRow:
    """One stream on the streams page."""

    stream_id: str
    version: int
    """Its head version: how many events it holds (no deletion inside a stream)."""
    last_position: int
    last_write: datetime
    matching: int | None
    """With an event-type filter: how many of its events have that type."""


@dataclass(frozen=True, slots=True)
class StreamsPage:
    rows: list[StreamRow]
    total: int | None
    """How many streams match, over every page; known only with an event-type filter."""
    next_after: str | None
    """The cursor of the next page: the last stream id shown; ``None`` on the last page."""


def streams_page(
    store: EventStore, *, prefix: str, event_type: str, after: str | None, limit: int
) -> StreamsPage:
    """The streams whose id starts with ``prefix`` (and holding an ``event_type`` event),
    ordered by id, the first ``limit`` after the id ``after``.

    The cursor is a stream id, never an offset: a page stays the same page when
    streams are added before it. Without a type filter this is one
    :meth:`~eskit.EventStore.list_streams_page` (an index range on the SQL stores);
    the type filter scans the log and is the one case that also counts the total.
    """
    if not event_type:
        infos = store.list_streams_page(prefix, after, limit + 1)  # one more: is there a next?
        rows = [StreamRow(stream_key(i.stream_id), i.version, i.last_position,
                          i.last_timestamp, None) for i in infos[:limit]]
        more = len(infos) > limit
        return StreamsPage(rows, None, rows[-1].stream_id if more and rows else None)
    by_type = _type_counts(store, event_type, prefix)
    matches = sorted(
        (stream_key(info.stream_id), info) for info in store.list_streams()
        if stream_key(info.stream_id) in by_type
        and stream_key(info.stream_id).startswith(prefix)
    )
    after_cursor = [m for m in matches if after is None or m[0] > after]
    page = after_cursor[:limit]
    rows = [StreamRow(key, info.version, info.last_position, info.last_timestamp, by_type[key])
            for key, info in page]
    more = len(after_cursor) > limit
    return StreamsPage(rows, len(matches), page[-1][0] if more and page else None)


def _type_counts(store: EventStore, event_type: str, prefix: str) -> dict[str, int]:
    # A store whose read_all filters by type and prefix in the database reads only
    # the matching events (an index); otherwise this reads the whole log. The test
    # below stays either way: it is what the page promises.
    reader: Any = store.read_all
    filters: dict[str, Any] = {}
    if "event_types" in inspect.signature(reader).parameters:
        filters["event_types"] = [event_type]
        if prefix:
            filters["stream_prefixes"] = [prefix]
    counts: dict[str, int] = {}
    for event in reader(0, on_undecodable="yield", **filters):
        if isinstance(event, UndecodableEvent):
            continue
        if event.event_type == event_type:
            key = stream_key(event.aggregate_id)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _decodable(store: EventStore, after: int) -> Iterator[Event]:
    # An event the registry cannot decode must not take the explorer down: pass it.
    for event in store.read_all(after, on_undecodable="yield"):
        if not isinstance(event, UndecodableEvent):
            yield event


def stream_timeline(
    store: EventStore, stream_id: str, *, after_version: int, limit: int
) -> tuple[list[Event], int]:
    """Up to ``limit`` events of the stream after ``after_version``, and its head version."""
    head = store.head_version(stream_id)
    return store.read_stream(stream_id, after_version, limit=limit), head


def event_at(store: EventStore, stream_id: str, version: int) -> Event | None:
    """The event at ``version`` of the stream, or ``None``."""
    found = store.read_stream(stream_id, version - 1, version)
    return found[0] if found else None


def find_event(store: EventStore, event_id: UUID) -> Event | None:
    """The stored event with this id, or ``None``: located by the store's event-id index
    (:meth:`~eskit.EventStore.locate_event`), then read as every read is (upcast; of an
    event an upcaster splits, the part that keeps the id, else the first part)."""
    where = store.locate_event(event_id)
    if where is None:
        return None
    stream, version = where
    parts = store.read_stream(stream, version - 1, version)
    return next((e for e in parts if e.event_id == event_id), parts[0] if parts else None)


def correlated_events(store: EventStore, correlation: str) -> tuple[list[Event], bool]:
    """Events whose metadata names ``correlation`` as correlation or causation id, or whose
    own id it is, in global order; at most 500 (the flag says whether more exist)."""
    found: list[Event] = []
    for event in _decodable(store, 0):
        if str(event.event_id) == correlation or any(
            str(event.metadata.get(key)) == correlation for key in RELATED_KEYS
            if key in event.metadata
        ):
            if len(found) == _MAX_CORRELATED:
                return found, True
            found.append(event)
    return found, False


def log_page(store: EventStore, *, after: int, limit: int) -> list[Event | UndecodableEvent]:
    """Up to ``limit`` events of the global log after ``after``, undecodable ones in place."""
    return list(store.read_all(after, limit, on_undecodable="yield"))


def related_ids(event: Event) -> list[tuple[str, str, UUID | None]]:
    """``(key, value, event id or None)`` for the metadata keys that name other events; the id
    is set when the value is an event id (a UUID) the explorer can link to."""
    related = []
    for key in RELATED_KEYS:
        if key in event.metadata:
            value = event.metadata[key]
            related.append((key, str(value), _as_uuid(value)))
    return related


def _as_uuid(value: object) -> UUID | None:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            return None
    return None


def pretty(value: Any) -> str:
    """Indented JSON of an event's data, metadata or an aggregate's state, for display."""
    try:
        return orjson.dumps(
            value, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        ).decode()
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits, say
        return pprint.pformat(value, width=100, sort_dicts=False)
