"""Property: a filtered read is the unfiltered read tested in Python, on random logs.

Stream ids and prefixes are drawn from an alphabet of characters that break naive
SQL (``%``, ``_``, ``\\``), sort at the edges (U+10FFFF, U+D7FF next to the
surrogates, U+E000) or fold (``é``, ``E``); types, positions and limits at random.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit import InMemoryEventStore, NewEvent, SQLiteEventStore

ALPHABET = ["a", "b", "%", "_", "\\", "é", "E", "e", "\U0010ffff", "\ud7ff", "\ue000", "-"]
names = st.text(alphabet=ALPHABET, min_size=1, max_size=4)
types = st.sampled_from(["A", "B", "C"])
logs = st.lists(st.tuples(names, st.lists(types, min_size=1, max_size=3)), max_size=15)
filters = st.tuples(
    st.none() | st.lists(types, max_size=3),
    st.none() | st.lists(names, max_size=3),
)


def _model(store: Any, after: int, wanted_types: Any, prefixes: Any) -> list[Any]:
    return [
        e.event_id for e in store.read_all(after)
        if (wanted_types is None or e.event_type in wanted_types)
        and (prefixes is None or any(str(e.aggregate_id).startswith(p) for p in prefixes))
    ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=30, deadline=None)
@given(log=logs, wanted=filters, after_index=st.integers(0, 30),
       limit=st.none() | st.integers(0, 5))
def test_a_filtered_read_equals_the_unfiltered_read_filtered_in_python(
    kind: str, log: list[tuple[str, list[str]]], wanted: tuple[Any, Any], after_index: int,
    limit: int | None,
) -> None:
    store = InMemoryEventStore() if kind == "memory" else SQLiteEventStore(":memory:")
    try:
        for stream, batch in log:
            store.append(stream, [NewEvent(t) for t in batch])
        positions = [0, *(e.position for e in store.read_all())]
        after = positions[min(after_index, len(positions) - 1)]
        wanted_types, prefixes = wanted
        expected = _model(store, after, wanted_types, prefixes)
        got = [e.event_id for e in store.read_all(
            after, limit, event_types=wanted_types, stream_prefixes=prefixes
        )]
        assert got == (expected if limit is None else expected[:limit])
    finally:
        store.close()
