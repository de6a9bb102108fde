"""CloudEvents mapping: exact round trips, the attributes other tools read, typed errors."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit import EncodingError, Event, InvalidInputError, InvalidMessageError
from eskit.bus.cloudevents import from_cloudevent, to_cloudevent

_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                min_size=1, max_size=40)
_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False) | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC)) | st.uuids() | _text | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    stream = draw(st.uuids() | _text)
    stamp = draw(st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.just(UTC)))
    return Event(
        draw(st.uuids()), stream, draw(_text), draw(st.dictionaries(_text, _values, max_size=5)),
        stamp, draw(st.integers(1, 2**63 - 1)), draw(st.integers(1, 2**128 - 1)),
        draw(st.dictionaries(_text, _values, max_size=3)), draw(st.integers(1, 2**31)),
    )


@settings(max_examples=300, deadline=None)
@given(events())
def test_every_recorded_event_round_trips_exactly(event: Event) -> None:
    body = to_cloudevent(event)
    assert from_cloudevent(body) == event
    assert type(from_cloudevent(body).stream_id) is type(event.stream_id) or (
        isinstance(event.stream_id, str)  # canonical UUID text reads back as a UUID, as stores do
    )


def _sample(**metadata: object) -> Event:
    return Event(uuid.UUID(int=7), "account-1", "Deposited",
                 {"amount": Decimal("10.50"), "at": datetime(2026, 1, 1, tzinfo=UTC)},
                 datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=UTC), 2**63 - 1, 2**96 + 1,
                 dict(metadata), 3)


def test_attributes_follow_cloudevents_1_0() -> None:
    event = _sample(correlation_id=uuid.UUID(int=1), causation_id="cmd-9", user="zoë")
    doc = json.loads(to_cloudevent(event, source="bank/api"))
    assert doc["specversion"] == "1.0"
    assert doc["id"] == str(event.event_id)
    assert doc["source"] == "bank/api"
    assert doc["type"] == "Deposited"
    assert doc["subject"] == "account-1"
    assert doc["time"] == "2026-12-02T01:02:03.456789Z"
    assert doc["datacontenttype"] == "application/json"
    assert doc["data"]["amount"] == {"__eskit__": "decimal", "v": "10.50"}
    # Beyond a CloudEvents Integer (32-bit): Strings.
    assert doc["eskitversion"] == str(2**63 - 1)
    assert doc["eskitposition"] == str(2**96 + 1)
    assert doc["eskitschema"] == "3"
    assert doc["correlationid"] == str(uuid.UUID(int=1))
    assert doc["causationid"] == "cmd-9"
    for name in doc:
        assert name == "data" or (name.isalnum() and name.islower() and len(name) <= 20)
    assert from_cloudevent(to_cloudevent(event)) == event


def test_empty_metadata_adds_no_attribute_and_other_zones_read_back_as_utc() -> None:
    event = _sample()
    doc = json.loads(to_cloudevent(event))
    assert "eskitmetadata" not in doc
    assert "correlationid" not in doc
    shifted = Event(event.event_id, event.stream_id, event.event_type, event.event_data,
                    event.timestamp.astimezone(timezone(timedelta(hours=5))), event.version,
                    event.position, {}, event.schema_version)
    back = from_cloudevent(to_cloudevent(shifted))
    assert back == event
    assert back.timestamp.tzinfo is UTC


def test_bad_source_or_payload_is_refused_before_anything_is_made() -> None:
    for source in ("", None, "\ud800", "x" * 3000):
        with pytest.raises(InvalidInputError):
            to_cloudevent(_sample(), source=source)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        to_cloudevent("not an event")  # type: ignore[arg-type]
    bad = Event(uuid.uuid4(), "s", "T", {"x": object()}, datetime.now(UTC), 1, 1)
    with pytest.raises(EncodingError):
        to_cloudevent(bad)


def _doc() -> dict[str, object]:
    return json.loads(to_cloudevent(_sample(k="v")))


@pytest.mark.parametrize("change", [
    {"specversion": "0.3"}, {"id": "not-a-uuid"}, {"id": ""}, {"type": ""},
    {"subject": None}, {"subject": "a\x00b"}, {"subject": "x" * 3000},
    {"eskitversion": "0"}, {"eskitversion": "+1"}, {"eskitversion": " 1"},
    {"eskitversion": "1_0"}, {"eskitversion": 5}, {"eskitposition": "-1"},
    {"eskitschema": "0"}, {"eskitmetadata": "[1]"}, {"eskitmetadata": "{bad"},
    {"datacontenttype": "text/plain"}, {"data": [1, 2]}, {"data": None},
    {"data": {"x": {"__eskit__": "nope"}}}, {"time": "yesterday"}, {"time": None},
    {"time": "2026-01-01T00:00:00"},
])
def test_malformed_bodies_are_invalid_messages(change: dict[str, object]) -> None:
    doc = _doc()
    for key, value in change.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    with pytest.raises(InvalidMessageError):
        from_cloudevent(json.dumps(doc).encode())


@pytest.mark.parametrize("body", [
    b"", b"\xff\xfe", b"[]", b"null", b"{", b'{"specversion": "1.0"}', "str",
    b"[" * 100_000, b'{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":"eA=="}',
])
def test_garbage_is_an_invalid_message(body: object) -> None:
    with pytest.raises(InvalidMessageError):
        from_cloudevent(body)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(events())
def test_the_bytes_are_the_document_the_sdk_writes(event: Event) -> None:
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    from eskit import codec
    from eskit.bus.cloudevents import cloudevent_attributes

    attributes = cloudevent_attributes(event, source="svc")
    attributes["time"] = event.timestamp
    sdk = JSONFormat().write(CloudEvent(attributes, json.loads(codec.encode(event.event_data))))
    ours = to_cloudevent(event, source="svc")
    assert json.loads(ours) == json.loads(sdk)
    read = JSONFormat().read(None, ours)  # what any SDK consumer does with our bytes
    assert read.get_id() == str(event.event_id)
    assert read.get_time() == event.timestamp
    assert read.get_extension("eskitposition") == str(event.position)
