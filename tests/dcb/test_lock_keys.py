"""The PostgreSQL lock keys cover every match: the invariant the conditional append rests on.

For any query and any event that matches it, the keys the query locks exclusive and
the keys the event's append locks shared must meet; otherwise a conditional append
could miss an append in flight. Pure: no database.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eskit import Query, QueryItem
from eskit.dcb import event_lock_keys, lock_plan, query_lock_keys

names = st.sampled_from(["A", "B", "course:c1", "student:s1", "x"])
tag_sets = st.lists(names, unique=True, max_size=4).map(tuple)
items = st.builds(QueryItem, st.lists(names, unique=True, max_size=3), tag_sets)
queries = st.lists(items, min_size=1, max_size=4).map(Query)


@given(queries, names, tag_sets)
def test_a_matching_event_always_holds_a_key_its_query_locks(
    query: Query, event_type: str, tags: tuple[str, ...]
) -> None:
    if query.matches_type_and_tags(event_type, tags):
        assert query_lock_keys(query) & event_lock_keys([(event_type, tags)])


def test_queries_on_different_tags_share_no_key() -> None:
    one = query_lock_keys(Query.of(types=["Enrolled"], tags=["course:c1"]))
    two = query_lock_keys(Query.of(types=["Enrolled"], tags=["course:c2"]))
    assert not one & two
    # ... and an event of the other course holds none of the first query's keys.
    assert not one & event_lock_keys([("Enrolled", ("course:c2", "student:s1"))])


def test_the_lock_plan_is_sorted_once_each_exclusive_where_both() -> None:
    shared = event_lock_keys([("A", ("t",))])
    exclusive = query_lock_keys(Query.of(tags=["t"]))
    hi, lo, x = lock_plan(shared, exclusive)
    pairs = list(zip(hi, lo, strict=True))
    assert pairs == sorted(set(pairs))
    assert len(pairs) == len(shared | exclusive)
    assert [pair in exclusive for pair in pairs] == x
