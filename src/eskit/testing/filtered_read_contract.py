"""Contract cases about filtered reads, mixed into :class:`EventStoreContract`.

They need only the ``store`` fixture of the contract class. ``read_all`` with
``event_types`` and ``stream_prefixes`` must return exactly the events an
unfiltered ``read_all`` followed by a Python test (``type in types`` and
``str(stream).startswith(prefix)``) returns, in the same global order, paging
included; prefixes are plain text, so SQL wildcards, backslashes, U+10FFFF and
non-ASCII text match only themselves. Bad filters are typed errors raised at the
call, before any I/O. Deleted streams stay hidden: see the deletion contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from eskit.errors import InvalidInputError
from eskit.events import MAX_NAME_BYTES, NewEvent
from eskit.stores.base import EventStore
from eskit.stores.filtered import ReadFilter, read_filter
from eskit.stores.model import READ_ALL_PAGE_SIZE
from eskit.stores.partitions import partition_of

__all__ = ["FilteredReadContract"]

HOSTILE_STREAMS = [
    "a%b", "a_b", "a\\b", "ab", "aXb", "a%", "a", "a\\%", "%", "_",
    "\U0010ffff", "\U0010ffff-1", "z\U0010ffff", "z\U0010ffff\U0010ffff", "{",
    "é-1", "e-1", "\ud7ff-1", "\ue000-1", "order-1", "order.1", "ORDER-1",
]
HOSTILE_PREFIXES = [
    "a%", "a_", "a\\", "a\\%", "%", "_", "a", "\U0010ffff", "z\U0010ffff", "é", "e",
    "\ud7ff", "order-", "order", "ORDER",
]

# Filters read_all refuses with InvalidInputError, before any I/O.
BAD_FILTERS: list[dict[str, Any]] = [
    {"event_types": "Opened"}, {"event_types": b"Opened"}, {"event_types": [1]},
    {"event_types": [""]}, {"event_types": ["a\x00b"]}, {"event_types": ["\ud800"]},
    {"event_types": ["x" * (MAX_NAME_BYTES + 1)]}, {"event_types": 3},
    {"stream_prefixes": "account-"}, {"stream_prefixes": [""]}, {"stream_prefixes": [None]},
    {"stream_prefixes": ["\x00"]}, {"stream_prefixes": ["\udfff"]},
]


def _expected(store: EventStore, after: int = 0, *, types: Iterable[str] | None = None,
              prefixes: Iterable[str] | None = None) -> list[uuid.UUID]:
    wanted = None if types is None else set(types)
    starts = None if prefixes is None else list(prefixes)
    return [
        e.event_id for e in store.read_all(after)
        if (wanted is None or e.event_type in wanted)
        and (starts is None or any(str(e.aggregate_id).startswith(p) for p in starts))
    ]


def _ids(events: Iterable[Any]) -> list[uuid.UUID]:
    return [e.event_id for e in events]


class FilteredReadContract:
    """What ``read_all(event_types=..., stream_prefixes=...)`` guarantees on every store."""

    def _fill_filtered(self, store: EventStore) -> None:
        store.append("account-1", [NewEvent("Opened"), NewEvent("Deposited", {"n": 1})])
        store.append("order-1", [NewEvent("Placed"), NewEvent("Deposited", {"n": 2})])
        store.append("account-2", [NewEvent("Opened"), NewEvent("Closed")])
        store.append("order-2", [NewEvent("Placed"), NewEvent("Shipped")])
        store.append("account-1", [NewEvent("Deposited", {"n": 3})])

    def test_a_type_filter_returns_those_types_in_global_order(self, store: EventStore) -> None:
        self._fill_filtered(store)
        got = list(store.read_all(event_types=["Deposited"]))
        assert [e.event_data["n"] for e in got] == [1, 2, 3]
        assert _ids(store.read_all(event_types={"Placed", "Closed"})) == _expected(
            store, types={"Placed", "Closed"}
        )
        positions = [e.position or 0 for e in store.read_all(event_types=("Opened", "Shipped"))]
        assert positions == sorted(positions)
        assert len(positions) == 3
        assert list(store.read_all(event_types=["Missing"])) == []

    def test_a_category_filter_returns_the_streams_with_the_prefix_in_global_order(
        self, store: EventStore
    ) -> None:
        self._fill_filtered(store)
        got = list(store.read_all(stream_prefixes=["order-"]))
        assert [(str(e.aggregate_id), e.event_type) for e in got] == [
            ("order-1", "Placed"), ("order-1", "Deposited"), ("order-2", "Placed"),
            ("order-2", "Shipped"),
        ]
        both = ["order-", "account-2"]
        assert _ids(store.read_all(stream_prefixes=both)) == _expected(store, prefixes=both)
        # A prefix covered by another adds nothing, and returns nothing twice.
        assert _ids(store.read_all(stream_prefixes=["order-", "order-1"])) == _ids(got)

    def test_a_uuid_stream_matches_a_prefix_of_its_canonical_text(
        self, store: EventStore
    ) -> None:
        stream = uuid.UUID("12345678-1234-5678-1234-567812345678")
        store.append(stream, [NewEvent("Opened")])
        store.append("12345678-other", [NewEvent("Opened")])
        got = list(store.read_all(stream_prefixes=["12345678-1234"]))
        assert [e.aggregate_id for e in got] == [stream]

    def test_types_and_prefixes_together_must_both_match(self, store: EventStore) -> None:
        self._fill_filtered(store)
        got = list(store.read_all(event_types=["Deposited", "Opened"],
                                  stream_prefixes=["account-"]))
        assert [(str(e.aggregate_id), e.event_type) for e in got] == [
            ("account-1", "Opened"), ("account-1", "Deposited"), ("account-2", "Opened"),
            ("account-1", "Deposited"),
        ]
        assert list(store.read_all(event_types=["Placed"], stream_prefixes=["account-"])) == []

    def test_hostile_prefixes_match_only_streams_that_start_with_them_as_text(
        self, store: EventStore
    ) -> None:
        for stream in HOSTILE_STREAMS:
            store.append(stream, [NewEvent("Hit"), NewEvent("Miss")])
        for prefix in HOSTILE_PREFIXES:
            got = _ids(store.read_all(stream_prefixes=[prefix]))
            assert got == _expected(store, prefixes=[prefix]), prefix
            assert got, prefix  # every prefix above names at least one stream
            typed = _ids(store.read_all(event_types=["Hit"], stream_prefixes=[prefix]))
            assert typed == _expected(store, types=["Hit"], prefixes=[prefix]), prefix
        several = ["a%", "\U0010ffff", "é"]
        assert _ids(store.read_all(stream_prefixes=several)) == _expected(
            store, prefixes=several
        )

    def test_empty_lists_match_nothing(self, store: EventStore) -> None:
        self._fill_filtered(store)
        assert list(store.read_all(event_types=[])) == []
        assert list(store.read_all(stream_prefixes=[])) == []
        assert list(store.read_all(event_types=["Opened"], stream_prefixes=[])) == []
        # None is no restriction: the plain read_all.
        assert _ids(store.read_all(event_types=None, stream_prefixes=None)) == _expected(store)

    @pytest.mark.parametrize("bad", BAD_FILTERS, ids=lambda bad: repr(bad)[:40])
    def test_bad_filters_raise_invalid_input_at_the_call_before_any_io(
        self, store: EventStore, bad: dict[str, Any]
    ) -> None:
        store.close()  # any I/O would now fail with another error
        with pytest.raises(InvalidInputError):
            store.read_all(**bad)

    def test_from_position_is_exclusive_and_a_limit_counts_matching_events(
        self, store: EventStore
    ) -> None:
        self._fill_filtered(store)
        deposits = list(store.read_all(event_types=["Deposited"]))
        after_first = list(store.read_all(deposits[0].position or 0, event_types=["Deposited"]))
        assert _ids(after_first) == _ids(deposits[1:])
        assert list(store.read_all(deposits[-1].position or 0, event_types=["Deposited"])) == []
        assert _ids(store.read_all(limit=2, event_types=["Deposited"])) == _ids(deposits[:2])
        assert list(store.read_all(limit=0, event_types=["Deposited"])) == []
        # Paging by hand with a limit of one, from each event's position, joins up.
        seen: list[Any] = []
        after = 0
        while page := list(store.read_all(after, 1, stream_prefixes=["account-"])):
            seen.extend(page)
            after = page[-1].position or 0
        assert _ids(seen) == _expected(store, prefixes=["account-"])

    def test_a_filtered_read_pages_over_more_than_one_page_in_order(
        self, store: EventStore
    ) -> None:
        # Three types interleaved, two of them wanted: more than a page of matches, so
        # the union of per-type reads must merge by position at each page boundary.
        total = 2 * READ_ALL_PAGE_SIZE + 100
        batch = 300
        for start in range(0, total, batch):
            store.append(f"load-{start // 600}", [
                NewEvent(("A", "B", "C")[n % 3], {"n": n}) for n in range(start, start + batch)
            ])
        store.append("other-1", [NewEvent("A", {"n": -1})])
        got = [e.event_data["n"] for e in store.read_all(event_types=["A", "C"])]
        assert got == [n for n in range(total) if n % 3 != 1] + [-1]
        by_prefix = [e.event_data["n"] for e in store.read_all(stream_prefixes=["load-"])]
        assert by_prefix == list(range(total))
        both = store.read_all(event_types=["B"], stream_prefixes=["load-1", "load-3"])
        assert [e.event_data["n"] for e in both] == [
            n for n in range(total) if n % 3 == 1 and n // 600 in (1, 3)
        ]

    # -- partitions (eskit.stores.partitions): what partitioned projections read --------

    def _partitioned(
        self, store: EventStore, count: int, held: Iterable[int], *, after: int = 0,
        limit: int = READ_ALL_PAGE_SIZE, types: Iterable[str] | None = None,
    ) -> tuple[list[Any], int, bool, int]:
        wanted = (read_filter(types, None) or ReadFilter(None, None)).in_partitions(count, held)
        return store._filtered_page(after, limit, wanted, False)

    def test_a_partitioned_read_returns_exactly_the_streams_of_its_partitions(
        self, store: EventStore
    ) -> None:
        streams = [f"p-{n}" for n in range(40)] + [uuid.UUID(int=n) for n in range(1, 9)]
        for round_ in range(3):
            for stream in streams:
                store.append(stream, [NewEvent("Hit", {"r": round_}), NewEvent("Miss")])
        every = list(store.read_all())
        for count in (2, 3, 7):
            seen: list[Any] = []
            for p in range(count):
                got, upto, more, rows = self._partitioned(store, count, [p])
                assert not more
                assert upto >= (every[-1].position or 0)
                assert _ids(got) == [e.event_id for e in every
                                     if partition_of(e.aggregate_id, count) == p], (count, p)
                # The database sent only these rows (the memory store scans alike).
                assert rows == len(got), (count, p)
                seen.extend(got)
            assert sorted(_ids(seen)) == sorted(e.event_id for e in every)
        two, _, _, rows = self._partitioned(store, 5, [1, 3], types=["Hit"])
        assert _ids(two) == [e.event_id for e in every if e.event_type == "Hit"
                             and partition_of(e.aggregate_id, 5) in (1, 3)]
        assert rows == len(two)

    def test_a_partitioned_read_pages_in_global_order(self, store: EventStore) -> None:
        for n in range(60):
            store.append(f"s-{n % 12}", [NewEvent("E", {"n": n})])
        expected = [e.event_id for e in store.read_all() if partition_of(e.aggregate_id, 3) == 2]
        got: list[Any] = []
        after, more = 0, True
        while more:
            page, after, more, _ = self._partitioned(store, 3, [2], after=after, limit=4)
            got.extend(page)
        assert _ids(got) == expected
        positions = [e.position for e in got]
        assert positions == sorted(positions)
