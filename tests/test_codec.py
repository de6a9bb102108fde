"""The codec round-trips every supported value exactly and refuses the rest before writing."""

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum, IntEnum

import orjson
import pytest

from eskit import DecodingError, EncodingError, InvalidInputError, register_type
from eskit.codec import decode, encode


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


def test_non_string_dict_keys_are_refused_rather_than_silently_stringified() -> None:
    with pytest.raises(EncodingError, match="keys must be strings"):
        encode({"counts": {1: "one"}})


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
