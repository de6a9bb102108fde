"""The fast decoding helpers give exactly what the slow, obvious code gives."""

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from eskit.events import Event, new_event_id, recorded_event, uuid_from_bytes
from eskit.stores.rows import decode_event, decode_rows, micros_to_timestamp, timestamp_to_micros

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=-(2**60), max_value=2**60))
def test_micros_to_timestamp_is_exact_to_the_microsecond(micros: int) -> None:
    try:
        expected = EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return
    got = micros_to_timestamp(micros)
    assert got == expected
    assert got.tzinfo is UTC
    assert timestamp_to_micros(got) == micros


@given(st.binary(min_size=16, max_size=16))
def test_uuid_from_bytes_equals_the_standard_constructor(raw: bytes) -> None:
    fast, slow = uuid_from_bytes(raw), uuid.UUID(bytes=raw)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert str(fast) == str(slow)
    assert fast.version == slow.version
    assert fast.is_safe == slow.is_safe


def test_recorded_event_equals_the_dataclass_constructor() -> None:
    args = (uuid.uuid4(), "s", "T", {"a": 1}, datetime.now(UTC), 3, 7, {"m": 2}, 1)
    assert recorded_event(*args) == Event(*args)


def test_new_event_id_is_a_random_version_4_uuid() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:50]:
        assert type(value) is uuid.UUID
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
        assert hash(value) == hash(uuid.UUID(str(value)))


def _row(seq: int, at: int, data: str | bytes = '{"a": 1}', meta: str | bytes = "{}") -> tuple:
    return (0, seq, uuid.uuid4().bytes, "s", seq, "T", 1, at, data, meta)


def test_decode_rows_gives_what_decode_event_gives_row_by_row() -> None:
    rows = [
        _row(1, 10, '{"a": {"__eskit__": "decimal", "v": "1.50"}, "b": [1, {"c": null}]}'),
        _row(2, 10, '{"x": {"__eskit__": "dict", "v": {"__eskit__": "kept"}}}', '{"user": "u"}'),
        _row(3, 11, b'{"as": "bytes"}', b"{}"),
    ]
    events = decode_rows(rows)
    slow = [
        decode_event(uuid_from_bytes(r[2]), r[3], r[5], r[8], r[9], micros_to_timestamp(r[7]),
                     r[4], r[1], r[6])
        for r in rows
    ]
    assert events == slow
    assert all(type(e) is Event for e in events)
    assert events[1].event_data == {"x": {"__eskit__": "kept"}}


def test_events_of_one_batch_share_one_timestamp_and_others_get_their_own() -> None:
    first, second, third = decode_rows([_row(1, 10), _row(2, 10), _row(3, 12)])
    assert first.timestamp is second.timestamp
    assert third.timestamp == micros_to_timestamp(12)
    # Fresh containers for every event all the same: changing one changes no other.
    first.metadata["x"] = 1
    assert second.metadata == {}
