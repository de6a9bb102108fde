"""Sealing encodes each event once, gives the same bytes on both of its paths, and refuses
bad input before any key is fetched (no store I/O: the in-memory stores, spies)."""

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

import eskit.codec
from eskit import EncodingError, EventRegistry, InMemoryEventStore, NewEvent, StreamAppend, codec
from eskit.aio import AsyncInMemoryEventStore
from eskit.protection import InMemorySubjectKeyStore, LocalKeyProvider, PersonalFields, protect
from eskit.protection import aio as protection_aio
from eskit.protection.envelope import DataKey
from eskit.protection.marking import Marks
from eskit.protection.transcoder import Transcoder
from eskit.stores.arguments import prepare_batch

KEYS = LocalKeyProvider({"m": b"m" * 32})
MARKS = {
    "Joined": PersonalFields("who", ["email", "address.street", "odd.value"]),
    "Plain": PersonalFields("who", ["email"]),
}


def _payloads() -> list[dict[str, Any]]:
    return [
        {"who": "u1", "email": "a@example.org", "fee": Decimal("1.50"), "on": date(2026, 1, 2),
         "address": {"street": "1 Main St", "city": "Leeds"}},
        {"who": "u2", "email": Decimal("7"), "at": datetime(2026, 1, 2, tzinfo=UTC),
         "address": {"street": {"n": [1, 2.5, None]}, "__eskit__": "a user's tag key"}},
        {"who": "u3", "email": "c@example.org", "odd": {1: "an int key", "value": "x"}},
        {"who": "u4", "fee": Decimal("2")},  # no marked field present
    ]


@pytest.mark.parametrize("encrypt_payloads", [False, True])
def test_the_encoded_and_the_event_paths_seal_to_the_same_bytes(encrypt_payloads: bool) -> None:
    # A retry may take either path (a plain store, or a wrapper with its own append):
    # the stored bytes must not differ, or the retry would not be recognised.
    registry = EventRegistry()
    t = Transcoder(registry, Marks(registry, MARKS), encrypt_payloads=encrypt_payloads)
    events = [NewEvent("Joined", data) for data in _payloads()]
    keys = {s: DataKey(f"k-{s}", s, s.encode() * 16) for s in ("u1", "u2", "u3", "u4", "$store")}
    encoded = prepare_batch("s", events, registry=registry, max_event_bytes=10**6,
                            encode_data=False)
    plan = t.plan(encoded, trees=True)
    fast = t.seal_pending(encoded, plan, keys, max_event_bytes=10**6)
    slow = t.seal(encoded, t.plan(encoded), keys)
    assert [p.data for p in fast] == [codec.encode(e.event_data) for e in slow]
    assert all(b"example.org" not in p.data and b"Main St" not in p.data for p in fast)
    groups = [codec.decode(p.data) for p in fast]
    if not encrypt_payloads:
        assert [len(g.get("$pd", [])) for g in groups] == [1, 1, 1, 0]
        assert groups[1]["address"]["__eskit__"] == "a user's tag key"


def _walks_of_payloads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every payload the codec walks from the top (its depth-0 calls with a ``who``)."""
    walked: list[dict[str, Any]] = []
    original = eskit.codec._to_tree

    def counting(v: Any, depth: int) -> Any:
        if depth == 0 and type(v) is dict and "who" in v:
            walked.append(v)
        return original(v, depth)

    monkeypatch.setattr(eskit.codec, "_to_tree", counting)
    return walked


def _call() -> list[StreamAppend]:
    return [StreamAppend(f"user-{n}", [NewEvent("Plain", {"who": f"u{n}",
                                                          "email": f"{n}@example.org"})])
            for n in range(3)]


def test_append_many_walks_each_payload_once_and_hands_the_sealed_bytes_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inner = InMemoryEventStore()
    store = protect(inner, KEYS, personal_data=MARKS)
    handed: list[int] = []
    original = inner._append_many_prepared
    def handing(prepared: Any, *rest: Any) -> Any:
        handed.append(len(prepared))
        return original(prepared, *rest)

    monkeypatch.setattr(inner, "_append_many_prepared", handing)
    monkeypatch.setattr(inner, "append_many", None)  # the public one would encode again
    walked = _walks_of_payloads(monkeypatch)
    results = store.append_many(_call())
    assert handed == [3]
    assert [w["who"] for w in walked] == ["u0", "u1", "u2"]  # the plaintext, once each
    assert [r.events[0].event_data["email"] for r in results] == [
        f"{n}@example.org" for n in range(3)]
    assert "example.org" not in repr([e.event_data for e in inner.read_all()])


def test_async_append_many_walks_each_payload_once(monkeypatch: pytest.MonkeyPatch) -> None:
    walked = _walks_of_payloads(monkeypatch)

    async def main() -> list[str]:
        store = await protection_aio.protect(AsyncInMemoryEventStore(), KEYS,
                                             personal_data=MARKS)
        await store.append_many(_call())
        await store.append("user-9", [NewEvent("Plain", {"who": "u9", "email": "x"})])
        return [e.event_data["email"] async for e in store.read_all()]

    assert asyncio.run(main()) == ["0@example.org", "1@example.org", "2@example.org", "x"]
    assert [w["who"] for w in walked] == ["u0", "u1", "u2", "u9"]


class _CountingKeys(InMemorySubjectKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def key_changes(self) -> int:
        self.asked += 1
        return super().key_changes()


@pytest.mark.parametrize(("data", "error"), [
    ({"who": "u1", "email": object()}, "event 1 of the batch"),
    ({"who": "u1", "email": datetime(2026, 1, 2)}, "naive|time zone"),
    ({"who": "u1", "email": "x", "$pd": []}, "sealed"),
])
def test_bad_input_is_refused_before_any_key_is_fetched(data: dict[str, Any], error: str
                                                         ) -> None:
    keys = _CountingKeys()
    inner = InMemoryEventStore()
    store = protect(inner, KEYS, keys=keys, personal_data=MARKS)
    good = NewEvent("Plain", {"who": "u0", "email": "fine"})
    with pytest.raises(Exception, match=error) as caught:
        store.append("user-1", [good, NewEvent("Plain", data)])
    assert isinstance(caught.value, EncodingError | eskit.InvalidInputError)
    with pytest.raises(Exception, match=r"appends\[1\]"):
        store.append_many([StreamAppend("user-0", [good]),
                           StreamAppend("user-1", [NewEvent("Plain", data)])])
    assert keys.asked == 0
    assert keys.count() == 0
    assert inner.head_position() == 0


def test_append_many_with_a_condition_seals_and_is_refused_whole_when_it_fails() -> None:
    from eskit import AppendCondition, AppendConditionFailed, Query, QueryItem

    inner = InMemoryEventStore()
    store = protect(inner, KEYS, personal_data=MARKS)
    query = Query((QueryItem(types=("Plain",)),))
    store.append_many(_call(), condition=AppendCondition(query, after=0))
    assert inner.head_position() == 3
    with pytest.raises(AppendConditionFailed):
        store.append_many([StreamAppend("user-9", [NewEvent("Plain", {"who": "u9",
                                                                      "email": "late"})])],
                          condition=AppendCondition(query, after=0))
    assert inner.head_position() == 3
    assert "example.org" not in repr([e.event_data for e in inner.read_all()])
