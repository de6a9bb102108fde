"""prefix_upper_bound: every id with the prefix is inside [prefix, upper), none without."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from eskit.stores.prefix_range import prefix_upper_bound

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)


def _in_range(stream: str, prefix: str) -> bool:
    upper = prefix_upper_bound(prefix)
    return prefix <= stream and (upper is None or stream < upper)


def test_simple_and_edge_bounds() -> None:
    assert prefix_upper_bound("order-") == "order."
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("x\ud7ff") == "x\ue000"


def test_highest_code_point_prefix_keeps_longer_ids() -> None:
    prefix = "a\U0010ffff"
    assert _in_range("a\U0010ffff\U0010ffffz", prefix)
    assert not _in_range("b", prefix)


@given(_text, _text)
def test_range_matches_startswith(prefix: str, stream: str) -> None:
    assert _in_range(stream, prefix) == stream.startswith(prefix)


@given(_text, st.text(string.printable + "\U0010ffff\ud7ff\ue000", max_size=4))
def test_range_matches_startswith_near_bounds(prefix: str, suffix: str) -> None:
    for stream in (prefix + suffix, suffix + prefix, suffix):
        assert _in_range(stream, prefix) == stream.startswith(prefix)
