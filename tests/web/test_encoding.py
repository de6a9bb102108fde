"""Event documents: positions as exact strings, payloads JSON has no type for written
the way the CLI writes them."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import orjson

from eskit.events import Event
from eskit.web.encoding import dumps, event_document, stream_path


def test_a_position_past_2_53_is_an_exact_string() -> None:
    position = 2**81 + 12345
    event = Event(uuid4(), "s", "T", {"n": 1}, datetime(2026, 1, 1, tzinfo=UTC), 1, position)
    document = orjson.loads(dumps(event_document(event)))
    assert document["position"] == str(position)
    assert document["timestamp"] == "2026-01-01T00:00:00Z"
    assert document["id"] == str(event.event_id)


def test_values_json_lacks_are_written_readably_and_big_ints_exactly() -> None:
    data = {"money": Decimal("10.50"), "tags": {"a"}, "raw": b"\x01\xff", "big": 2**100 + 1}
    written = json.loads(dumps(data))
    assert written == {"money": "10.50", "tags": ["a"], "raw": "01ff", "big": 2**100 + 1}
    assert type(written["big"]) is int


def test_a_stream_path_is_one_encoded_segment() -> None:
    assert stream_path("a/b c%ü") == "/api/streams/a%2Fb%20c%25%C3%BC"
