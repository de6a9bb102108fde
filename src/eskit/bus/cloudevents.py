"""The one message format of the event bus: CloudEvents 1.0, structured JSON (pure, no I/O).

Every sink publishes the bytes :func:`to_cloudevent` makes and every consumer
reads them back with :func:`from_cloudevent`, whatever the broker. Attributes are
validated by the ``cloudevents`` SDK's ``CloudEvent``; the JSON is written and
parsed with orjson, several times faster than through the SDK's ``JSONFormat``
(measured), and the tests check that it is the document the SDK writes and
reads. eskit adds the mapping below.

==================  =======================================================
attribute           value
==================  =======================================================
``specversion``     ``"1.0"``
``id``              the event id (a UUID, canonical text)
``source``          the relay's ``source`` (default ``"eskit"``)
``type``            the event type
``subject``         the stream id (a UUID stream id in canonical text)
``time``            the event's timestamp (RFC 3339, UTC, microseconds)
``datacontenttype`` ``"application/json"``
``data``            the payload exactly as eskit's codec stores it (tagged
                    ``Decimal``, big ints, datetimes: see :mod:`eskit.codec`)
``eskitversion``    the event's version in its stream (String)
``eskitposition``   its global position in the store (String)
``eskitschema``     its schema version (String)
``eskitmetadata``   the metadata as the codec stores it (JSON text; absent
                    when the metadata is empty)
``correlationid``   ``metadata["correlation_id"]`` as text, when present
``causationid``     ``metadata["causation_id"]`` as text, when present
==================  =======================================================

Numbers ride as Strings: a CloudEvents Integer is 32-bit, while PostgreSQL
positions reach about 2**96 and versions 2**63. ``correlationid`` and
``causationid`` are for brokers and tools that route or trace on attributes;
decoding takes the metadata from ``eskitmetadata`` alone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from eskit.errors import EskitError, InvalidInputError, InvalidMessageError, MissingExtraError

try:
    from cloudevents.core.base import BaseCloudEvent
    from cloudevents.core.exceptions import BaseCloudEventException
    from cloudevents.core.v1.event import CloudEvent
except ImportError as exc:  # every broker extra (rabbitmq, nats, redis) installs it
    raise MissingExtraError(
        "rabbitmq", "the event bus (any of the rabbitmq, nats or redis extras)",
        name=exc.name or "cloudevents",
    ) from exc

from eskit import codec
from eskit.events import Event, recorded_event
from eskit.stores.arguments import stream_id_from_key

__all__ = ["DATA_CONTENT_TYPE", "cloudevent_attributes", "from_cloudevent", "to_cloudevent"]

DATA_CONTENT_TYPE = "application/json"
"""The ``datacontenttype`` of every eskit CloudEvent: ``data`` is JSON."""

VERSION = "eskitversion"
POSITION = "eskitposition"
SCHEMA = "eskitschema"
METADATA = "eskitmetadata"
CORRELATION = "correlationid"
CAUSATION = "causationid"

_DIGITS = re.compile(r"[0-9]{1,40}\Z")  # int() would also take "+1", " 1" and "1_0"
_MAX_SOURCE = 2048


def _check_source(source: object) -> str:
    if type(source) is not str or not source:
        raise InvalidInputError(f"source must be a non-empty str, got {source!r}")
    if len(source.encode("utf-8", "replace")) > _MAX_SOURCE or codec.has_lone_surrogate(source):
        raise InvalidInputError("source must be valid UTF-8 text of at most 2,048 bytes")
    return source


def cloudevent_attributes(event: Event, *, source: str = "eskit") -> dict[str, Any]:
    """The CloudEvents attributes of ``event`` (everything but ``data``), as JSON values.

    ``time`` is RFC 3339 text in UTC (``...Z``), as the SDK writes it.
    """
    return _attributes(event, _check_source(source))


_time_cache: tuple[datetime | None, str] = (None, "")


def _time_text(stamp: Any) -> str:
    # The events of one append share one datetime object (the stores build it once
    # per run of equal values), so the last one's text is usually the answer.
    global _time_cache
    cached = _time_cache
    if cached[0] is stamp:
        return cached[1]
    if not isinstance(stamp, datetime) or stamp.utcoffset() is None:
        raise InvalidInputError("a CloudEvent's time must be timezone-aware")
    text = stamp.astimezone(UTC).isoformat()
    text = text[:-6] + "Z" if text.endswith("+00:00") else text
    _time_cache = (stamp, text)
    return text


def _attributes(event: Event, source: str) -> dict[str, Any]:
    if not isinstance(event, Event):
        raise InvalidInputError(f"to_cloudevent takes an Event, got {type(event).__name__}")
    event_type = event.event_type
    subject = event.aggregate_id
    if type(subject) is not str:
        subject = str(subject)
    if type(event_type) is not str or not event_type or not subject:
        raise InvalidInputError("a CloudEvent needs a non-empty event type and stream id")
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event.event_id),
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": _time_text(event.timestamp),
        "datacontenttype": DATA_CONTENT_TYPE,
        VERSION: str(event.version),
        POSITION: str(event.position),
        SCHEMA: str(event.schema_version),
    }
    metadata = event.metadata
    if metadata:
        attributes[METADATA] = codec.encode(metadata).decode("utf-8")
        for key, name in (("correlation_id", CORRELATION), ("causation_id", CAUSATION)):
            value = metadata.get(key)
            if value is not None:
                attributes[name] = str(value)
    return attributes


def to_cloudevent(event: Event, *, source: str = "eskit") -> bytes:
    """The structured-JSON CloudEvent (UTF-8 bytes) for a recorded ``event``.

    Raises :class:`~eskit.InvalidInputError` for a bad ``source`` or an event no
    store could have recorded (an :class:`~eskit.EncodingError` for a payload the
    codec refuses).
    """
    return cloudevent_body(event, _check_source(source))


def cloudevent_body(event: Event, source: str) -> bytes:
    """:func:`to_cloudevent` for a ``source`` checked before (the relay's hot path)."""
    try:
        head = orjson.dumps(_attributes(event, source))
    except orjson.JSONEncodeError as exc:  # a lone surrogate: no store records one
        raise InvalidInputError(f"the event cannot be a CloudEvent: {exc}") from None
    # The envelope is written with orjson and the codec's own JSON spliced in as
    # ``data`` (it is one JSON object). Through the SDK (CloudEvent + JSONFormat,
    # stdlib json) this took ~10x longer; tests/bus/test_cloudevents.py checks that
    # the SDK writes the same document and reads these bytes back.
    return b"".join((head[:-1], b',"data":', codec.encode(event.event_data), b"}"))


def from_cloudevent(body: bytes) -> Event:
    """The :class:`~eskit.Event` a body made by :func:`to_cloudevent` carries.

    Equal to the event that was published (id, stream, type, data, timestamp,
    version, position, metadata, schema version). Anything else (not UTF-8 JSON,
    not CloudEvents 1.0, missing or malformed eskit attributes, a payload the codec
    cannot decode) raises :class:`~eskit.InvalidMessageError`.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidMessageError(f"a message body is bytes, got {type(body).__name__}")
    try:
        parsed = _parse(body)
    except InvalidMessageError:
        raise
    except (BaseCloudEventException, ValueError, TypeError, OverflowError,
            RecursionError) as exc:
        raise InvalidMessageError(
            f"the message is not a CloudEvents 1.0 JSON body: {exc}") from None
    try:
        return _to_event(parsed)
    except InvalidMessageError:
        raise
    except (EskitError, ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise InvalidMessageError(f"the message is not an eskit event: {exc}") from None


def _parse(body: bytes | bytearray | memoryview) -> CloudEvent:
    """The SDK's CloudEvent of a structured-JSON body; the SDK validates the attributes.

    Parsed with orjson and ``datetime.fromisoformat`` rather than the SDK's
    ``JSONFormat.read`` (stdlib json and dateutil): 40% of a consumer's decoding
    time, measured. The SDK's CloudEvent also fills in a missing id and time (a
    fresh UUID, now): on the reading side that would invent facts, so both must
    be in the body.
    """
    attributes = orjson.loads(body)
    if type(attributes) is not dict:
        raise InvalidMessageError("a CloudEvent in structured JSON is a JSON object")
    for name in ("specversion", "id", "time"):
        if name not in attributes:
            raise InvalidMessageError(f"the CloudEvent has no {name!r} attribute")
    if "data_base64" in attributes:
        raise InvalidMessageError("data must be JSON (datacontenttype application/json)")
    stamp = attributes["time"]
    if type(stamp) is not str:
        raise InvalidMessageError("time must be an RFC 3339 String")
    attributes["time"] = datetime.fromisoformat(stamp)
    data = attributes.pop("data", None)
    return CloudEvent(attributes, data)


def _to_event(parsed: BaseCloudEvent) -> Event:
    attributes = parsed.get_attributes()
    if attributes.get("datacontenttype") != DATA_CONTENT_TYPE:
        raise InvalidMessageError(
            f"datacontenttype must be {DATA_CONTENT_TYPE!r}, got "
            f"{attributes.get('datacontenttype')!r}"
        )
    data = parsed.get_data()
    if type(data) is not dict:
        raise InvalidMessageError("data must be a JSON object")
    event_data = codec.decode_tree(data)
    if type(event_data) is not dict:
        raise InvalidMessageError("data must decode to a dict")
    text = attributes.get(METADATA)
    if text is None:
        metadata: Any = {}
    elif type(text) is str:
        metadata = codec.decode(text)
    else:
        raise InvalidMessageError(f"{METADATA} must be a String")
    if type(metadata) is not dict:
        raise InvalidMessageError(f"{METADATA} must hold a JSON object")
    stamp = parsed.get_time()
    if not isinstance(stamp, datetime) or stamp.utcoffset() is None:
        raise InvalidMessageError("time must be an RFC 3339 timestamp with an offset")
    subject = parsed.get_subject()
    if type(subject) is not str or not subject:
        raise InvalidMessageError("subject (the stream id) is missing")
    # The same checks the stores apply to a stream id and an event type.
    from eskit.events import check_name, validate_event_type

    check_name("stream id", subject)
    event_type = validate_event_type(parsed.get_type())
    version = _number(attributes, VERSION)
    if version < 1:
        raise InvalidMessageError(f"{VERSION} must be >= 1")
    schema_version = _number(attributes, SCHEMA)
    if schema_version < 1:
        raise InvalidMessageError(f"{SCHEMA} must be >= 1")
    return recorded_event(
        UUID(parsed.get_id()), stream_id_from_key(subject), event_type, event_data,
        stamp.astimezone(UTC), version, _number(attributes, POSITION), metadata,
        schema_version,
    )


def _number(attributes: dict[str, Any], name: str) -> int:
    text = attributes.get(name)
    if type(text) is not str or not _DIGITS.match(text):
        raise InvalidMessageError(f"{name} must be a String of decimal digits, got {text!r}")
    return int(text)
