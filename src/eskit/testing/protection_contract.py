"""The data-protection contract: sealed personal data, erasure, export, key rotation.

Subclass :class:`ProtectionContract` and implement ``open_protected``: a fresh,
empty protected store wrapped in a :class:`Protected` (the sync
:class:`SyncProtected` for :class:`~eskit.protection.ProtectedEventStore`;
eskit's tests drive the asyncio store through the same interface).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Protocol

import pytest

from eskit import NO_STREAM, Event, EventStore, InvalidInputError, NewEvent, codec, domain_event
from eskit.protection import (
    ERASED,
    ERASED_METADATA,
    ERASURES_STREAM,
    SUBJECT_ERASED,
    Erasure,
    KeyUnavailableError,
    LocalKeyProvider,
    PersonalData,
    PersonalFields,
    ProtectedEventStore,
)
from eskit.protection.envelope import DataKey

__all__ = ["Protected", "ProtectionContract", "SyncProtected", "provider_with"]


@domain_event("eskit.contract.PatientRegistered")
@dataclass(frozen=True)
class PatientRegistered:
    patient_id: str
    name: Annotated[str, PersonalData(subject="patient_id")]
    born: Annotated[date | None, PersonalData(subject="patient_id", erased=None)]
    ward: str
    fee: Decimal


PERSONAL_DATA = {"NoteTaken": PersonalFields("patient", ["text", "contact.phone"])}


def provider_with(*ids: str) -> LocalKeyProvider:
    """A provider holding master keys ``ids`` (first current), the same bytes per id."""
    return LocalKeyProvider({i: (i.encode() * 32)[:32] for i in ids})


class Protected(Protocol):
    """A protected store as the contract drives it (sync calls)."""

    store: EventStore
    """The protected store's event API (append, read_stream, read_all, ...)."""

    def raw(self, stream_id: str) -> list[Event]:
        """The stream's events as stored: sealed."""
        ...

    def export(self, subject: str) -> list[Event]: ...

    def erase(self, subject: str, **options: Any) -> Erasure: ...

    def rewrap(self, **options: Any) -> int: ...

    def set_provider(self, provider: LocalKeyProvider) -> None: ...

    def append_stored(self, stream_id: str, events: list[NewEvent]) -> None:
        """Append ``events`` to the wrapped store as they are (no sealing): rows as an
        older eskit wrote them, or as someone with write access forged them."""
        ...

    def data_key(self, subject: str) -> DataKey:
        """``subject``'s data key, unwrapped (created if the subject has none)."""
        ...

    def close(self) -> None: ...


class SyncProtected:
    """:class:`Protected` for a :class:`~eskit.protection.ProtectedEventStore`."""

    def __init__(self, store: ProtectedEventStore) -> None:
        self.store: EventStore = store
        self._protected = store

    def raw(self, stream_id: str) -> list[Event]:
        return self._protected.inner.read_stream(stream_id)

    def export(self, subject: str) -> list[Event]:
        return list(self._protected.export_subject(subject))

    def erase(self, subject: str, **options: Any) -> Erasure:
        return self._protected.erase_subject(subject, **options)

    def rewrap(self, **options: Any) -> int:
        return self._protected.rewrap(**options)

    def set_provider(self, provider: LocalKeyProvider) -> None:
        self._protected.provider = provider

    def append_stored(self, stream_id: str, events: list[NewEvent]) -> None:
        self._protected.inner.append(stream_id, events)

    def data_key(self, subject: str) -> DataKey:
        return self._protected._keys_for([subject])[subject]

    def close(self) -> None:
        self._protected.close()


def _patient(pid: str, name: str, ward: str = "W1") -> PatientRegistered:
    return PatientRegistered(pid, name, date(1815, 12, 10), ward, Decimal("12.50"))


def _note(pid: str, text: str, phone: str = "+44 20 7946 0000") -> NewEvent:
    return NewEvent("NoteTaken", {"patient": pid, "text": text,
                                  "contact": {"phone": phone, "kind": "mobile"}})


def _shape(e: Event) -> tuple[Any, ...]:
    return (e.event_id, str(e.aggregate_id), e.event_type, e.version, e.position, e.timestamp,
            e.schema_version)


class ProtectionContract:
    """The guarantees of :mod:`eskit.protection`, for one kind of store."""

    def open_protected(self, tmp_path: Path, provider: LocalKeyProvider,
                       **options: Any) -> Protected:
        raise NotImplementedError("a contract test class must implement open_protected")

    @pytest.fixture
    def protected(self, tmp_path: Path) -> Any:
        opened = self.open_protected(tmp_path, provider_with("m1"), personal_data=PERSONAL_DATA)
        try:
            yield opened
        finally:
            opened.close()

    # -- sealing ----------------------------------------------------------------------------

    def test_marked_fields_are_stored_sealed_and_read_back_exactly(
        self, protected: Protected
    ) -> None:
        protected.store.append("patient-1", [_patient("p1", "Ada Lovelace"),
                                             _note("p1", "allergic to penicillin")], NO_STREAM)
        raw = protected.raw("patient-1")
        stored = codec.encode([e.event_data for e in raw])
        for plaintext in (b"Ada Lovelace", b"penicillin", b"7946", b"1815"):
            assert plaintext not in stored
        assert raw[0].event_data["ward"] == "W1"  # unmarked fields stay in clear
        assert raw[1].event_data["contact"]["kind"] == "mobile"
        events = protected.store.read_stream("patient-1")
        assert events[0].to_domain() == _patient("p1", "Ada Lovelace")
        assert events[1].event_data == _note("p1", "allergic to penicillin").event_data
        assert [_shape(e) for e in events] == [_shape(e) for e in raw]
        assert [e.event_data for e in protected.store.read_all()] == [
            e.event_data for e in events
        ]

    def test_append_result_carries_the_plaintext(self, protected: Protected) -> None:
        result = protected.store.append("patient-1", [_patient("p1", "Ada")])
        assert result.events[0].event_data["name"] == "Ada"

    def test_retried_append_is_recognised_as_a_duplicate(self, protected: Protected) -> None:
        event = NewEvent("NoteTaken", {"patient": "p1", "text": "x"})
        first = protected.store.append("patient-1", [event], NO_STREAM)
        again = protected.store.append("patient-1", [event], NO_STREAM)
        assert again.duplicate
        assert again.version == first.version == 1
        assert len(protected.raw("patient-1")) == 1

    def test_a_personal_field_without_its_subject_is_refused_and_nothing_written(
        self, protected: Protected
    ) -> None:
        head = protected.store.head_position()
        with pytest.raises(InvalidInputError, match="patient"):
            protected.store.append("patient-1", [
                _note("p1", "fine"), NewEvent("NoteTaken", {"text": "whose?"}),
            ])
        assert protected.store.head_position() == head
        assert protected.raw("patient-1") == []

    def test_a_payload_that_looks_sealed_is_refused(self, protected: Protected) -> None:
        fake = {"$pd": {"v": 1, "s": "p1", "k": "k", "n": "", "c": ""}}
        with pytest.raises(InvalidInputError, match="sealed"):
            protected.store.append("patient-1", [NewEvent("Other", {"x": fake})])

    def test_reserved_subject_ids_are_refused(self, protected: Protected) -> None:
        with pytest.raises(InvalidInputError, match="reserved"):
            protected.store.append("patient-1", [_note("$store", "x")])

    def test_a_wrong_master_key_raises_instead_of_redacting(self, protected: Protected) -> None:
        protected.store.append("patient-1", [_patient("p1", "Ada")])
        protected.set_provider(provider_with("other"))
        with pytest.raises(KeyUnavailableError):
            protected.store.read_stream("patient-1")

    # -- erasure ------------------------------------------------------------------------------

    def test_erased_subject_reads_redacted_and_nothing_else_changes(
        self, protected: Protected
    ) -> None:
        protected.store.append("patient-1", [_patient("p1", "Ada"), _note("p1", "secret")])
        protected.store.append("patient-2", [_patient("p2", "Grace"), _note("p2", "other")])
        before = list(protected.store.read_all())
        erasure = protected.erase("p1")
        assert erasure.keys_deleted == 1
        assert erasure.streams == ("patient-1",)
        after = [e for e in protected.store.read_all() if e.aggregate_id != ERASURES_STREAM]
        assert [_shape(e) for e in after] == [_shape(e) for e in before]
        registered, note = after[0], after[1]
        assert registered.event_data == {**before[0].event_data, "name": ERASED, "born": None}
        assert registered.metadata[ERASED_METADATA] == ["name", "born"]
        assert registered.to_domain() == PatientRegistered("p1", ERASED, None, "W1",
                                                           Decimal("12.50"))
        assert note.event_data == {"patient": "p1", "text": ERASED,
                                   "contact": {"phone": ERASED, "kind": "mobile"}}
        assert after[2:] == before[2:]  # the other subject is untouched
        assert after[2].event_data["name"] == "Grace"

    def test_erasure_records_an_event_and_calls_nothing_twice(
        self, protected: Protected
    ) -> None:
        protected.store.append("patient-1", [_patient("p1", "Ada")])
        first = protected.erase("p1", vacuum=False)
        again = protected.erase("p1", vacuum=False)
        assert (first.keys_deleted, again.keys_deleted) == (1, 0)
        records = protected.store.read_stream(ERASURES_STREAM)
        assert [e.event_type for e in records] == [SUBJECT_ERASED, SUBJECT_ERASED]
        assert records[0].event_data == {"subject": "p1", "streams": ["patient-1"],
                                         "keys_deleted": 1}
        assert first.position == records[0].position
        assert protected.erase("p3", record=False, vacuum=False).position == 0

    def test_events_after_an_erasure_get_a_new_key_and_old_ones_stay_redacted(
        self, protected: Protected
    ) -> None:
        protected.store.append("patient-1", [_note("p1", "before")])
        protected.erase("p1", vacuum=False)
        protected.store.append("patient-1", [_note("p1", "after")])
        texts = [e.event_data["text"] for e in protected.store.read_stream("patient-1")]
        assert texts == [ERASED, "after"]

    def test_erasing_refuses_reserved_and_empty_subjects(self, protected: Protected) -> None:
        for bad in ("$store", ""):
            with pytest.raises(InvalidInputError):
                protected.erase(bad)

    # -- export ------------------------------------------------------------------------------

    def test_export_gives_the_subjects_events_decrypted_in_global_order(
        self, protected: Protected
    ) -> None:
        protected.store.append("patient-1", [_patient("p1", "Ada")])
        protected.store.append("patient-2", [_patient("p2", "Grace")])
        protected.store.append("notes", [_note("p1", "first"), _note("p2", "x"),
                                         NewEvent("Other", {"p": "p1"}), _note("p1", "last")])
        exported = protected.export("p1")
        assert [e.event_type for e in exported] == ["eskit.contract.PatientRegistered",
                                                    "NoteTaken", "NoteTaken"]
        assert [e.position for e in exported] == sorted(e.position for e in exported)
        assert exported[0].event_data["name"] == "Ada"
        assert [e.event_data.get("text") for e in exported[1:]] == ["first", "last"]
        assert protected.export("nobody") == []

    # -- rotation ------------------------------------------------------------------------------

    def test_rewrap_moves_every_key_to_the_new_master_key_without_touching_events(
        self, protected: Protected
    ) -> None:
        for n in range(5):
            protected.store.append(f"patient-{n}", [_patient(f"p{n}", f"name {n}")])
        raw_before = [e.event_data for n in range(5) for e in protected.raw(f"patient-{n}")]
        protected.set_provider(provider_with("m2", "m1"))
        progress: list[int] = []
        assert protected.rewrap(batch_size=2, progress=progress.append) == 5
        assert progress == [2, 4, 5]
        assert protected.rewrap() == 0  # nothing left under m1
        protected.set_provider(provider_with("m2"))  # m1 destroyed
        assert [e.event_data["name"] for n in range(5)
                for e in protected.store.read_stream(f"patient-{n}")] == [
            f"name {n}" for n in range(5)
        ]
        assert [e.event_data for n in range(5) for e in protected.raw(f"patient-{n}")] == (
            raw_before
        )


class PayloadEncryptionContract:
    """``encrypt_payloads=True``: whole payloads sealed with the store key."""

    def open_protected(self, tmp_path: Path, provider: LocalKeyProvider,
                       **options: Any) -> Protected:
        raise NotImplementedError("a contract test class must implement open_protected")

    def test_whole_payloads_are_sealed_and_personal_fields_still_erasable(
        self, tmp_path: Path
    ) -> None:
        protected = self.open_protected(tmp_path, provider_with("m1"),
                                        personal_data=PERSONAL_DATA, encrypt_payloads=True)
        try:
            protected.store.append("patient-1", [_patient("p1", "Ada"), _note("p1", "x")])
            protected.store.append("other", [NewEvent("Other", {"ward": "W7"})])
            for e in protected.raw("patient-1") + protected.raw("other"):
                assert list(e.event_data) == ["$pd"]
            assert b"W7" not in base64.b64decode(
                protected.raw("other")[0].event_data["$pd"]["c"]
            )
            assert protected.store.read_stream("other")[0].event_data == {"ward": "W7"}
            assert [e.event_type for e in protected.export("p1")] == [
                "eskit.contract.PatientRegistered", "NoteTaken",
            ]
            protected.erase("p1", vacuum=False)
            first = protected.store.read_stream("patient-1")[0]
            assert first.event_data["name"] == ERASED
            assert first.event_data["ward"] == "W1"
        finally:
            protected.close()

    def test_marked_metadata_is_sealed_and_read_back(self, tmp_path: Path) -> None:
        protected = self.open_protected(tmp_path, provider_with("m1"),
                                        encrypt_metadata=["ip"])
        try:
            result = protected.store.append("s", [NewEvent(
                "Seen", {"n": 1}, metadata={"ip": "203.0.113.9", "app": "web"},
            )])
            assert result.events[0].metadata["ip"] == "203.0.113.9"
            raw = protected.raw("s")[0].metadata
            assert list(raw["ip"]) == ["$pd"]
            assert raw["app"] == "web"
            assert b"203.0.113.9" not in codec.encode(raw)
            assert protected.store.read_stream("s")[0].metadata == {
                "ip": "203.0.113.9", "app": "web",
            }
            assert next(iter(protected.store.read_all())).metadata["ip"] == "203.0.113.9"
        finally:
            protected.close()
