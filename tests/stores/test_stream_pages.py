"""The paging decision of read_stream / iter_stream, checked against a plain model (no I/O)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eskit.codec import encode
from eskit.stores.arguments import READ_STREAM_PAGE_SIZE, StreamPages, same_payload
from eskit.stores.model import MAX_VERSION


class _E:
    def __init__(self, version: int) -> None:
        self.version = version


def _read(head: int, args: tuple[int, int | None, bool, int], first: int = 1) -> list[Any]:
    """What a store returns for one page of a stream with versions first..head."""
    lo, hi, backwards, limit = args
    versions = [v for v in range(max(lo, first - 1) + 1,
                                 min(head, MAX_VERSION if hi is None else hi) + 1)]
    if backwards:
        versions.reverse()
    return [_E(v) for v in versions[:limit]]


@given(
    head=st.integers(0, 3 * READ_STREAM_PAGE_SIZE + 5),
    from_version=st.integers(0, 3 * READ_STREAM_PAGE_SIZE + 10),
    to_version=st.none() | st.integers(0, 4 * READ_STREAM_PAGE_SIZE),
    backwards=st.booleans(),
    limit=st.none() | st.integers(0, 2 * READ_STREAM_PAGE_SIZE + 3) | st.just(2**70),
)
def test_pages_join_into_exactly_the_requested_run_of_the_stream(
    head: int, from_version: int, to_version: int | None, backwards: bool, limit: int | None
) -> None:
    top = head if to_version is None else min(head, to_version)
    want = list(range(from_version + 1, top + 1))
    if backwards:
        want.reverse()
    if limit is not None:
        want = want[:limit]
    pages = StreamPages(from_version, to_version, backwards, limit)
    got: list[int] = []
    reads = 0
    while (args := pages.next()) is not None:
        assert args[3] <= READ_STREAM_PAGE_SIZE, "never more than a page"
        assert args[1] is None or args[1] <= MAX_VERSION, "never beyond a bigint"
        page = _read(head, args)
        pages.advance(page)
        got += [e.version for e in page]
        reads += 1
    assert got == want
    assert reads <= len(want) // READ_STREAM_PAGE_SIZE + 1


@given(
    head=st.integers(1, 3 * READ_STREAM_PAGE_SIZE + 5),
    cut=st.integers(0, 3 * READ_STREAM_PAGE_SIZE + 5),
    from_version=st.integers(0, 3 * READ_STREAM_PAGE_SIZE + 10),
    to_version=st.none() | st.integers(0, 4 * READ_STREAM_PAGE_SIZE),
    backwards=st.booleans(),
    limit=st.none() | st.integers(0, 2 * READ_STREAM_PAGE_SIZE + 3),
)
def test_pages_of_a_truncated_stream_pass_over_the_gap_at_its_start(
    head: int, cut: int, from_version: int, to_version: int | None, backwards: bool,
    limit: int | None,
) -> None:
    first = max(1, min(cut, head))  # truncate_stream keeps versions first..head
    top = head if to_version is None else min(head, to_version)
    want = list(range(max(from_version, first - 1) + 1, top + 1))
    if backwards:
        want.reverse()
    if limit is not None:
        want = want[:limit]
    pages = StreamPages(from_version, to_version, backwards, limit)
    got: list[int] = []
    reads = 0
    while (args := pages.next()) is not None:
        page = _read(head, args, first)
        pages.advance(page)
        got += [e.version for e in page]
        reads += 1
    assert got == want
    assert reads <= len(want) // READ_STREAM_PAGE_SIZE + 1


def test_forward_pages_after_the_first_name_a_bounded_range_of_versions() -> None:
    # A LIMIT alone let PostgreSQL sort the rest of the stream for every page. The
    # first page is a LIMIT alone: a truncated stream may start anywhere after it.
    size = READ_STREAM_PAGE_SIZE
    pages = StreamPages(0, None, False, None)
    assert pages.next() == (0, None, False, size)
    pages.advance([_E(v) for v in range(5001, 5001 + size)])  # truncated: starts at 5001
    assert pages.next() == (5000 + size, 5000 + 2 * size, False, size)
    pages = StreamPages(MAX_VERSION - 2 * size, None, False, None)
    pages.next()
    pages.advance([_E(v) for v in range(MAX_VERSION - 2 * size + 1, MAX_VERSION - size + 1)])
    assert pages.next() == (MAX_VERSION - size, MAX_VERSION, False, size)


def test_payloads_compare_with_their_keys_sorted_and_nothing_else() -> None:
    stored = encode({"a": 1, "b": {"x": 1, "y": 2}})
    assert same_payload(stored, encode({"b": {"y": 2, "x": 1}, "a": 1}))
    assert not same_payload(encode({"a": 1}), encode({"a": 1.0}))
    assert not same_payload(encode({"a": [1, 2]}), encode({"a": [2, 1]}))
    assert not same_payload(encode({"a": Decimal("1.0")}), encode({"a": Decimal("1.00")}))
    assert same_payload(encode({"n": Decimal("NaN")}), encode({"n": Decimal("NaN")}))
