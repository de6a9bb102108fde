"""The contract of :meth:`EventStore.locate_event`: where an event id is stored.

Mixed into :class:`~eskit.testing.EventStoreContract`; the case for deleted streams is
in :class:`~eskit.testing.deletion_contract.DeletionContract`.
"""

from __future__ import annotations

import uuid

import pytest

from eskit import EventStore, InvalidInputError, NewEvent

__all__ = ["EventLookupContract"]


class EventLookupContract:
    def test_locate_event_names_the_stream_and_version_of_each_event(
        self, store: EventStore
    ) -> None:
        first = store.append("lookup-a", [NewEvent("A"), NewEvent("B"), NewEvent("C")])
        other = store.append("lookup-b", [NewEvent("D")])
        for event in (*first.events, *other.events):
            assert store.locate_event(event.event_id) == (event.aggregate_id, event.version)
        stream, version = store.locate_event(first.events[1].event_id) or ("", 0)
        (found,) = store.read_stream(stream, version - 1, version)
        assert found.event_id == first.events[1].event_id

    def test_locate_event_takes_uuid_text_and_finds_uuid_streams(self, store: EventStore) -> None:
        stream = uuid.uuid4()
        event = store.append(stream, [NewEvent("A")]).events[0]
        assert store.locate_event(str(event.event_id)) == (stream, 1)
        assert store.locate_event(str(event.event_id).upper()) == (stream, 1)

    def test_an_unknown_event_id_is_located_nowhere(self, store: EventStore) -> None:
        store.append("lookup-a", [NewEvent("A")])
        assert store.locate_event(uuid.uuid4()) is None

    @pytest.mark.parametrize("event_id", ["", "not-a-uuid", 5, None, b"\x00" * 16, "x" * 100])
    def test_a_malformed_event_id_raises_before_any_io(
        self, store: EventStore, event_id: object
    ) -> None:
        with pytest.raises(InvalidInputError, match="event id"):
            store.locate_event(event_id)  # type: ignore[arg-type]
