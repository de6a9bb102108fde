"""Events as JSON documents for HTTP clients, and the response class that writes them.

Positions are written as strings of digits, always: a PostgreSQL position is about
2**82, and JSON readers that hold numbers as doubles (JavaScript, jq) would round
anything past 2**53. One type for every store keeps clients simple. Versions stay
numbers (a stream never nears 2**53 events). Event data written by Python code may
hold values JSON has no type for; they are written the way eskit's CLI writes them
(``Decimal`` as its exact digits, ``bytes`` as hex, sets as lists).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import JSONResponse

from eskit.events import Event, StreamId
from eskit.stores.model import StreamInfo
from eskit.stores.rows import UndecodableEvent

__all__ = ["JSONDocument", "dumps", "event_document", "stream_document", "stream_path"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


def _default(item: Any) -> Any:
    if isinstance(item, Decimal):
        return str(item)  # exact: a float would round money
    if isinstance(item, set | frozenset):
        return list(item)
    if isinstance(item, bytes):
        return item.hex()
    return str(item)


def dumps(document: Any) -> bytes:
    """``document`` as JSON bytes. Integers wider than 64 bits (orjson's range) stay
    exact numbers, written by the standard library instead."""
    try:
        return orjson.dumps(document, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(document, default=_json_default, ensure_ascii=False,
                          separators=(",", ":")).encode()


def _json_default(item: Any) -> Any:
    # The standard library's fallback: what orjson writes natively, written alike.
    if hasattr(item, "isoformat"):
        return item.isoformat()
    return orjson.loads(orjson.dumps(item, default=_default, option=_OPTIONS))


class JSONDocument(JSONResponse):
    """A JSON response rendered by :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def stream_path(stream_id: StreamId) -> str:
    """The API path of a stream: its id percent-encoded as one path segment."""
    return "/api/streams/" + quote(str(stream_id), safe="")


def event_document(event: Event | UndecodableEvent) -> dict[str, Any]:
    """An event as the API shows it (see ``EventOut`` in the OpenAPI spec).

    An event the store cannot decode (in the global log) keeps its place with empty
    ``data`` and ``metadata`` and an ``undecodable`` member saying why, so one bad
    event never stops a reader of the log.
    """
    if isinstance(event, UndecodableEvent):
        return {
            "id": str(event.event_id), "stream_id": str(event.stream_id),
            "type": event.event_type, "version": event.version,
            "position": str(event.position), "timestamp": event.timestamp,
            "schema_version": event.schema_version, "data": {}, "metadata": {},
            "tags": [], "undecodable": str(event.error),
        }
    return {
        "id": event.event_id,  # orjson writes a UUID itself, faster than str() does
        "stream_id": str(event.stream_id),
        "type": event.event_type,
        "version": event.version,
        "position": str(event.position),
        "timestamp": event.timestamp,
        "schema_version": event.schema_version,
        "data": event.event_data,
        "metadata": event.metadata,
        "tags": list(event.tags),
    }


def stream_document(info: StreamInfo) -> dict[str, Any]:
    return {
        "stream_id": str(info.stream_id),
        "version": info.version,
        "last_position": str(info.last_position),
        "last_write": info.last_timestamp,
    }
