"""The codec round-trips every supported value exactly and refuses the rest before writing."""

import math
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit import DecodingError, EncodingError, InvalidInputError, register_type
from eskit.codec import MAX_DEPTH, MAX_INT_DIGITS, decode, encode


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Shade(Enum):
    DARK = "dark"


@dataclass(frozen=True)
class Point:
    x: Decimal
    y: Decimal


@dataclass(frozen=True)
class Line:
    start: Point
    end: Point
    label: str | None = None


register_type(Line, "tests.Line")


@pytest.mark.parametrize(
    "value",
    [
        Decimal("0.1"), Decimal("-1E+3"), Decimal("NaN"), Decimal("Infinity"),
        datetime(2026, 1, 1, 12, 30, tzinfo=UTC), datetime(2026, 1, 1, 12, 30),
        date(1999, 12, 31), timedelta(microseconds=-1), uuid.uuid4(),
        Level.HIGH, Shade.DARK, Line(Point(Decimal(1), Decimal(2)), Point(Decimal(3), Decimal(4))),
        (1, 2), ((),), [(), []], frozenset({"a"}), {1.5}, b"\x00\x01", 2**64, -(2**80),
        math.inf, -math.inf, "", "\u0000 nul inside a payload string", 0.1, 1e308,
        {"__eskit__": {"__eskit__": 1}},
    ],
)
def test_value_round_trips_with_its_exact_type(value: object) -> None:
    decoded = decode(encode({"v": value}))["v"]
    assert type(decoded) is type(value)
    if isinstance(value, Decimal) and value.is_nan():
        assert decoded.is_nan()
    else:
        assert decoded == value
        assert repr(decoded) == repr(value)


def test_nan_float_round_trips_as_nan_not_null() -> None:
    assert math.isnan(decode(encode({"v": math.nan}))["v"])


def test_plain_json_payloads_are_stored_as_plain_json() -> None:
    payload = {"a": 1, "b": [True, None, "x"], "c": {"d": 2.5}}
    assert orjson.loads(encode(payload)) == payload


def test_unencodable_value_names_its_path() -> None:
    with pytest.raises(EncodingError) as caught:
        encode({"order": {"lines": [1, {"price": object()}]}})
    assert caught.value.path == ".order.lines[1].price"
    assert "object" in str(caught.value)


def test_non_string_dict_keys_round_trip_with_their_type_and_order() -> None:
    owner = uuid.UUID(int=7)
    value = {
        "by_owner": {owner: 3, uuid.UUID(int=1): 1},
        "cells": {(0, 1): "a", (2, 3): "b"},
        "mixed": {"x": 1, 2: "two", Level.LOW: [1], Shade.DARK: None, Decimal("1.5"): True},
        "when": {datetime(2026, 1, 1, tzinfo=UTC): date(2026, 1, 2), frozenset({1}): b"x"},
        "flags": {True: 1, None: 0},
    }
    decoded = decode(encode(value))
    assert decoded == value
    for name, mapping in value.items():
        assert list(decoded[name]) == list(mapping), "keys keep their order"
        assert [type(k) for k in decoded[name]] == [type(k) for k in mapping]


def test_non_string_dict_key_that_cannot_be_encoded_names_its_path() -> None:
    with pytest.raises(EncodingError) as caught:
        encode({"counts": {object(): "one"}})
    assert caught.value.path.startswith(".counts[key")


_keys = st.one_of(
    st.text(), st.integers(), st.uuids(), st.booleans(), st.none(),
    st.decimals(allow_nan=False), st.dates(),
    st.datetimes(timezones=st.just(UTC)), st.tuples(st.integers(), st.text()),
    st.sampled_from(list(Level) + list(Shade)), st.frozensets(st.integers(), max_size=3),
)
_values = st.recursive(
    st.one_of(st.integers(), st.text(), st.decimals(allow_nan=False), st.uuids(), st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(_keys, _values, max_size=5))
@settings(max_examples=150, deadline=None)
def test_any_dict_with_encodable_keys_round_trips_exactly(value: dict[object, object]) -> None:
    decoded = decode(encode({"v": value}))["v"]
    assert decoded == value
    assert [(type(k), k) for k in decoded] == [(type(k), k) for k in value]
    assert encode({"v": decoded}) == encode({"v": value}), "the encoding is stable"


def _nested_lists(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_limit_round_trips_and_deeper_is_an_encoding_error() -> None:
    # Tuples and non-string-keyed dicts take the most JSON levels per container.
    deepest: object = "leaf"
    for i in range(MAX_DEPTH - 1):
        deepest = {(i,): deepest} if i % 2 else (deepest,)
    assert decode(encode({"v": deepest}))["v"] == deepest
    with pytest.raises(EncodingError, match="nested more than 64"):
        encode({"v": _nested_lists(MAX_DEPTH)})
    with pytest.raises(EncodingError, match="nested more than 64"):
        encode({"v": _nested_lists(10_000)})


def test_a_container_that_contains_itself_is_an_encoding_error_not_a_recursion_error() -> None:
    loop: list[object] = []
    loop.append(loop)
    looped: dict[str, object] = {}
    looped["self"] = looped
    for value in (loop, looped):
        with pytest.raises(EncodingError, match="contains itself"):
            encode({"v": value})


def test_ints_up_to_4300_digits_round_trip_and_longer_ones_are_an_encoding_error() -> None:
    assert MAX_INT_DIGITS == 4300
    largest = 10**4300 - 1
    assert decode(encode({"v": -largest}))["v"] == -largest
    with pytest.raises(EncodingError, match="4300 decimal digits"):
        encode({"v": 10**4300})
    with pytest.raises(EncodingError, match="4300 decimal digits"):
        encode({"v": 10**5000})


@pytest.mark.parametrize(
    "payload", [{"v": "a\ud800b"}, {"k\udfff": 1}, {"v": ["ok", {"x": "\udc80"}]}]
)
def test_lone_surrogates_are_an_encoding_error(payload: dict[str, object]) -> None:
    with pytest.raises(EncodingError, match="lone surrogate"):
        encode(payload)


def test_naive_datetimes_are_refused_only_when_asked() -> None:
    naive = {"at": [datetime(2026, 1, 1, 12, 0)]}
    assert decode(encode(naive)) == naive
    with pytest.raises(EncodingError, match="no time zone") as caught:
        encode(naive, naive_datetimes=False)
    assert caught.value.path == ".at[0]"
    aware = {"at": datetime(2026, 1, 1, tzinfo=UTC)}
    assert decode(encode(aware, naive_datetimes=False)) == aware
    assert decode(encode(naive)) == naive, "the refusal does not stick to the thread"


def test_stored_payload_nested_too_deeply_is_a_decoding_error() -> None:
    raw = "[" * 2000 + "]" * 2000
    with pytest.raises(DecodingError):
        decode(raw)
    tagged = '{"v":' + "[" * 1000 + '{"__eskit__":"decimal","v":"1"}' + "]" * 1000 + "}"
    with pytest.raises(DecodingError):
        decode(tagged)


def test_registered_type_name_is_what_is_stored_so_renames_keep_working() -> None:
    stored = encode({"line": Line(Point(Decimal(0), Decimal(0)), Point(Decimal(1), Decimal(1)))})
    assert b'"tests.Line"' in stored


def test_one_name_cannot_be_registered_for_two_classes() -> None:
    @dataclass(frozen=True)
    class Other:
        x: int

    with pytest.raises(InvalidInputError, match="already used"):
        register_type(Other, "tests.Line")


def test_only_enums_and_dataclasses_can_be_registered() -> None:
    with pytest.raises(InvalidInputError):
        register_type(int, "int")  # type: ignore[type-var]


def test_stored_data_cannot_name_arbitrary_callables() -> None:
    data = b'{"x": {"__eskit__": "dataclass", "t": "os:system", "v": {}}}'
    with pytest.raises(DecodingError, match="unknown type"):
        decode(data)


def test_invalid_json_is_a_decoding_error() -> None:
    with pytest.raises(DecodingError):
        decode(b"{nope")


def test_sets_encode_to_the_same_bytes_in_every_process() -> None:
    import subprocess
    import sys

    code = "from eskit.codec import encode; print(encode({'s': {'pear', 'apple', 'fig', 'kiwi'}}))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3, 4)
    }
    assert len(outputs) == 1, "set order leaked into the encoding"


def test_decoding_depth_is_bounded_whatever_the_recursion_limit() -> None:
    # The bound is the codec's own, not Python's recursion limit, which other code
    # may raise (and whose headroom differs between Python versions).
    tagged = '{"v":' + "[" * 600 + '{"__eskit__":"decimal","v":"1"}' + "]" * 600 + "}"
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        with pytest.raises(DecodingError, match="nested too deeply"):
            decode(tagged)
    finally:
        sys.setrecursionlimit(old)


def test_the_deepest_value_the_encoder_writes_decodes() -> None:
    value: Any = Decimal("1.5")
    for level in range(MAX_DEPTH):
        value = (value,) if level % 2 else {"k": value, 1: level}
    assert decode(encode(value)) == value
