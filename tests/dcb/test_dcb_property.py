"""Property tests of DCB reads and conditions against a brute-force model.

The model is a list of ``(type, tags)`` in append order and a matcher written from
the definition (an item: type in its types or no types; every tag of the item
among the event's tags; a query: any item), not from eskit's code. Hypothesis
draws random tagged batches, queries and ``after`` positions; the memory store
and a SQLite store must both agree with the model on every read and on whether
every conditional append is accepted.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eskit import (
    AppendCondition,
    AppendConditionFailed,
    EventStore,
    InMemoryEventStore,
    NewEvent,
    Query,
    QueryItem,
    SQLiteEventStore,
)

TYPES = ["A", "B", "C"]
TAGS = ["t1", "t2", "t3", "t4"]

tag_sets = st.lists(st.sampled_from(TAGS), unique=True, max_size=3).map(tuple)
events = st.tuples(st.sampled_from(TYPES), tag_sets)
items = st.tuples(
    st.lists(st.sampled_from(TYPES), unique=True, max_size=2).map(tuple),
    st.lists(st.sampled_from(TAGS), unique=True, max_size=2).map(tuple),
)
queries = st.lists(items, min_size=1, max_size=3)


def model_matches(item_list: list[tuple[tuple[str, ...], tuple[str, ...]]],
                  event_type: str, tags: tuple[str, ...]) -> bool:
    return any(
        (not types or event_type in types) and set(wanted) <= set(tags)
        for types, wanted in item_list
    )


def as_query(item_list: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> Query:
    return Query([QueryItem(types, tags) for types, tags in item_list])


steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(events, min_size=1, max_size=3)),
        st.tuples(st.just("read"), queries, st.integers(0, 12)),
        st.tuples(st.just("conditional"), queries, st.integers(0, 12),
                  st.lists(events, min_size=1, max_size=2)),
    ),
    min_size=1, max_size=12,
)


def check(store: EventStore, script: list[Any]) -> None:
    log: list[tuple[str, tuple[str, ...]]] = []  # the model: index + 1 = n-th event
    positions: list[int] = []  # the store's position of the n-th event

    def position_of(count: int) -> int:  # "after the first ``count`` events"
        return positions[count - 1] if 0 < count <= len(positions) else 0

    for step in script:
        if step[0] == "append":
            result = store.append("s", [NewEvent(t, tags=g) for t, g in step[1]])
            log.extend(step[1])
            positions.extend(e.position for e in result.events)
        elif step[0] == "read":
            _, item_list, count = step
            count = min(count, len(log))
            read = store.read_events(as_query(item_list), after=position_of(count))
            expected = [i for i, (t, g) in enumerate(log) if i >= count
                        and model_matches(item_list, t, g)]
            assert [e.position for e in read.events] == [positions[i] for i in expected]
            assert [(e.event_type, e.tags) for e in read.events] == [log[i] for i in expected]
            assert read.position == (positions[-1] if positions else 0)
        else:
            _, item_list, count, batch = step
            count = min(count, len(log))
            should_pass = not any(model_matches(item_list, t, g) for t, g in log[count:])
            condition = AppendCondition(as_query(item_list), after=position_of(count))
            try:
                result = store.append("s", [NewEvent(t, tags=g) for t, g in batch],
                                      condition=condition)
            except AppendConditionFailed:
                assert not should_pass
            else:
                assert should_pass
                log.extend(batch)
                positions.extend(e.position for e in result.events)
    assert store.head_position() == (positions[-1] if positions else 0)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_memory_store_agrees_with_the_brute_force_model(script: list[Any]) -> None:
    check(InMemoryEventStore(), script)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_sqlite_store_agrees_with_the_brute_force_model(script: list[Any]) -> None:
    with SQLiteEventStore(":memory:") as store:
        check(store, script)
