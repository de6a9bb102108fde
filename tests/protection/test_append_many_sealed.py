"""append_many through a protected store seals every stream's personal data (sync and
async), as append does; the stored form holds no plaintext."""

import asyncio

from eskit import InMemoryEventStore, NewEvent, StreamAppend
from eskit.aio import AsyncInMemoryEventStore
from eskit.protection import LocalKeyProvider, PersonalFields, protect

KEYS = LocalKeyProvider({"m": b"m" * 32})
MARKS = {"Joined": PersonalFields("who", ["email"])}


def _call() -> list[StreamAppend]:
    return [
        StreamAppend("user-1", [NewEvent("Joined", {"who": "u1", "email": "one@example.org"})]),
        StreamAppend("user-2", [NewEvent("Joined", {"who": "u2", "email": "two@example.org"})]),
    ]


def test_append_many_seals_each_streams_personal_data() -> None:
    inner = InMemoryEventStore()
    store = protect(inner, KEYS, personal_data=MARKS)
    call = _call()
    results = store.append_many(call)
    assert [r.events[0].event_data["email"] for r in results] == [
        "one@example.org", "two@example.org"
    ]
    assert "example.org" not in repr([e.event_data for e in inner.read_all()])
    assert [e.event_data["email"] for e in store.read_all()] == [
        "one@example.org", "two@example.org"
    ]
    again = store.append_many(call)  # a retry, opened from the stored form
    assert [r.duplicate for r in again] == [True, True]
    assert again[1].events[0].event_data["email"] == "two@example.org"


def test_async_append_many_seals_each_streams_personal_data() -> None:
    from eskit.protection.aio import protect as protect_async

    async def main() -> None:
        inner = AsyncInMemoryEventStore()
        store = await protect_async(inner, KEYS, personal_data=MARKS)
        results = await store.append_many(_call())
        assert results[0].events[0].event_data["email"] == "one@example.org"
        stored = [e.event_data async for e in inner.read_all()]
        assert "example.org" not in repr(stored)
        assert [e.event_data["email"] async for e in store.read_all()] == [
            "one@example.org", "two@example.org"
        ]

    asyncio.run(main())



def test_dcb_tags_survive_sealing_and_conditions_reach_the_inner_store() -> None:
    import pytest

    from eskit import AppendCondition, AppendConditionFailed, Query, QueryItem

    inner = InMemoryEventStore()
    store = protect(inner, KEYS, personal_data=MARKS)
    joined = NewEvent("Joined", {"who": "u1", "email": "one@example.org"}, tags=("user:u1",))
    store.append("user-1", [joined])
    query = Query((QueryItem(types=("Joined",), tags=("user:u1",)),))
    found = inner.read_events(query)
    assert [e.tags for e in found.events] == [("user:u1",)]  # stored with its tag, sealed
    assert "example.org" not in repr([e.event_data for e in found.events])
    again = NewEvent("Joined", {"who": "u1", "email": "x@example.org"}, tags=("user:u1",))
    with pytest.raises(AppendConditionFailed):
        store.append("user-1b", [again], condition=AppendCondition(query, after=0))
    assert inner.head_position() == 1  # refused whole
