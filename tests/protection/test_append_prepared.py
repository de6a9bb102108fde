"""The protected store hands plain stores its sealed batch already encoded
(``EventStore._append_prepared``): the same limits, the same stored bytes, and a
wrapper with its own ``append`` still gets called through its API."""

import pytest

from eskit import InMemoryEventStore, InvalidInputError, NewEvent
from eskit.protection import LocalKeyProvider, PersonalFields, generate_master_key, protect
from eskit.stores.base import EventStore

KEYS = LocalKeyProvider.parse(generate_master_key("t"))
MARKS = {"Contacted": PersonalFields("who", ["name"])}


def contacted(name: str, event_id=None) -> NewEvent:
    if event_id is None:
        return NewEvent("Contacted", {"who": "c-1", "name": name})
    return NewEvent("Contacted", {"who": "c-1", "name": name}, event_id=event_id)


def test_the_limit_applies_to_the_sealed_form_and_nothing_is_written() -> None:
    inner = InMemoryEventStore(max_event_bytes=600)
    store = protect(inner, KEYS, personal_data=MARKS)
    store.append("s", [contacted("x" * 100)])  # sealed: about 300 bytes
    plain_fits = "x" * 400  # fits as plaintext (about 430 bytes), not once sealed
    with pytest.raises(InvalidInputError, match="once sealed, over the limit of 600"):
        store.append("s", [contacted("y"), contacted(plain_fits)])
    assert [e.event_data["name"] for e in store.read_stream("s")] == ["x" * 100]
    assert inner.head_version("s") == 1


def test_the_fast_path_stores_what_the_api_path_stores() -> None:
    fast, slow = InMemoryEventStore(), InMemoryEventStore()

    class OwnAppend(InMemoryEventStore):  # an append of its own: called through the API
        calls = 0

        def append(self, *args, **kwargs):
            OwnAppend.calls += 1
            return slow.append(*args, **kwargs)

    assert type(fast).append is EventStore.append
    ids = [contacted("Ada").event_id, contacted("Bob").event_id]
    batch = [contacted("Ada", ids[0]), contacted("Bob", ids[1])]
    protect(fast, KEYS, personal_data=MARKS).append("s", batch)
    protect(OwnAppend(), KEYS, personal_data=MARKS, keys=None).append("s", batch)
    assert OwnAppend.calls == 1
    stored_fast = [(e.event_id, e.event_type) for e in fast.read_stream("s")]
    stored_slow = [(e.event_id, e.event_type) for e in slow.read_stream("s")]
    assert stored_fast == stored_slow
    for e in fast.read_stream("s"):
        assert "$pd" in e.event_data["name"]


def test_a_retried_append_is_still_a_duplicate_and_a_bad_condition_writes_nothing() -> None:
    inner = InMemoryEventStore()
    store = protect(inner, KEYS, personal_data=MARKS)
    event = contacted("Ada")
    first = store.append("s", [event], 0)
    again = store.append("s", [event], 0)
    assert again.duplicate
    assert again.events[0].event_data["name"] == "Ada"
    assert first.position == again.position
    with pytest.raises(InvalidInputError):
        store.append("s", [contacted("Bob")], condition="not a condition")  # type: ignore[arg-type]
    assert inner.head_version("s") == 1
