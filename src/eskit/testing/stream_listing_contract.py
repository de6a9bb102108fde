"""The contract of :meth:`EventStore.list_streams_page`: streams by id, a page at a time.

Mixed into :class:`~eskit.testing.EventStoreContract`, so every store that runs the
contract runs these cases too.
"""

from __future__ import annotations

import uuid

import pytest

from eskit import EventStore, InvalidInputError, NewEvent

__all__ = ["StreamListingContract"]

# Code-point order, which differs from most locales' and from UTF-16's: "Z" < "a",
# "é" (U+00E9) < "\uff5a" (fullwidth z) < "😀" (U+1F600) < U+10FFFF.
_IDS = ["cat-%", "cat-_x", "cat-\\\\", "cat-a", "cat-b", "cat-é", "cat-\uff5a", "cat-😀",
        "cat-\U0010ffff", "cat", "Cat-Z", "dog-1", "category-1"]


class StreamListingContract:
    def _fill(self, store: EventStore) -> None:
        for i, stream in enumerate(reversed(_IDS)):  # created out of id order
            store.append(stream, [NewEvent("Listed", {"i": n}) for n in range(i % 3 + 1)])

    def test_list_streams_page_orders_streams_by_id_in_code_point_order(
        self, store: EventStore
    ) -> None:
        self._fill(store)
        assert [s.stream_id for s in store.list_streams_page(limit=1000)] == sorted(_IDS)

    def test_list_streams_page_describes_each_stream_as_list_streams_does(
        self, store: EventStore
    ) -> None:
        self._fill(store)
        listed = {s.stream_id: s for s in store.list_streams()}
        paged = store.list_streams_page(limit=1000)
        assert paged == [listed[s.stream_id] for s in paged]

    def test_following_the_cursor_visits_every_stream_once(self, store: EventStore) -> None:
        self._fill(store)
        seen: list[str] = []
        page = store.list_streams_page(limit=4)
        while page:
            assert len(page) <= 4
            seen += [str(s.stream_id) for s in page]
            page = store.list_streams_page(after=page[-1].stream_id, limit=4)
        assert seen == sorted(_IDS)

    def test_a_prefix_selects_exactly_the_ids_that_start_with_it(self, store: EventStore) -> None:
        self._fill(store)
        for prefix in ["cat-", "cat", "cat-%", "cat-_", "cat-\\", "cat-\U0010ffff", "Cat",
                       "c", "dog-1", "zebra", "cat-é"]:
            got = [s.stream_id for s in store.list_streams_page(prefix, limit=1000)]
            assert got == sorted(i for i in _IDS if i.startswith(prefix)), prefix

    def test_prefix_and_cursor_combine_and_the_cursor_is_exclusive(
        self, store: EventStore
    ) -> None:
        self._fill(store)
        got = [s.stream_id for s in store.list_streams_page("cat-", after="cat-b", limit=2)]
        assert got == ["cat-é", "cat-\uff5a"]
        # A cursor need not be a stored id; one past every id gives an empty page.
        assert [s.stream_id for s in store.list_streams_page(after="cat-aa")][:1] == ["cat-b"]
        assert store.list_streams_page(after="\U0010ffff" * 3) == []

    def test_a_page_does_not_shift_when_streams_are_created_before_it(
        self, store: EventStore
    ) -> None:
        self._fill(store)
        before = store.list_streams_page(after="cat-b", limit=3)
        store.append("cat-0", [NewEvent("Listed")])
        store.append("a", [NewEvent("Listed")])
        assert store.list_streams_page(after="cat-b", limit=3) == before

    def test_uuid_stream_ids_page_by_their_text(self, store: EventStore) -> None:
        ids = sorted(uuid.uuid4() for _ in range(3))
        for stream in ids:
            store.append(stream, [NewEvent("Listed")])
        page = store.list_streams_page(limit=2)
        assert [s.stream_id for s in page] == sorted(ids, key=str)[:2]
        rest = store.list_streams_page(after=page[-1].stream_id)
        assert [s.stream_id for s in rest] == sorted(ids, key=str)[2:]

    def test_limit_zero_is_an_empty_page_and_a_huge_limit_reads_everything(
        self, store: EventStore
    ) -> None:
        self._fill(store)
        assert store.list_streams_page(limit=0) == []
        assert len(store.list_streams_page(limit=2**70)) == len(_IDS)
        assert len(store.list_streams_page()) == len(_IDS)  # the default limit is 100

    @pytest.mark.parametrize(("kwargs", "match"), [
        ({"prefix": None}, "prefix must be a str"),
        ({"prefix": "a\x00"}, "NUL"),
        ({"prefix": "\ud800"}, "stream prefix"),
        ({"after": ""}, "stream id"),
        ({"after": 5}, "stream id"),
        ({"limit": -1}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 1.0}, "limit"),
    ])
    def test_malformed_listing_arguments_raise_before_any_io(
        self, store: EventStore, kwargs: dict[str, object], match: str
    ) -> None:
        with pytest.raises(InvalidInputError, match=match):
            store.list_streams_page(**kwargs)  # type: ignore[arg-type]
