"""The fast decoding helpers give exactly what the slow, obvious code gives."""

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from eskit.events import Event, recorded_event
from eskit.stores.base import micros_to_timestamp, timestamp_to_micros, uuid_from_bytes

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
