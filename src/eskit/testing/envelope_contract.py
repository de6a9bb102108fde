"""The stored envelope formats: what version 2 writes, and that version 1 rows still open.

Mixed into a store's protection contract (it drives the same
:class:`~eskit.testing.protection_contract.Protected`); see
:mod:`eskit.protection.envelope` for the formats. Version 1 rows are written
here from the documented format, independently of eskit's own sealing code (which
writes only version 2), and appended to the wrapped store as an older eskit did.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID, uuid4

import pytest

from eskit import Event, InvalidInputError, NewEvent, codec, domain_event
from eskit.protection import (
    ERASED,
    ERASED_METADATA,
    DecryptionError,
    LocalKeyProvider,
    PersonalData,
)
from eskit.protection._aead import AESGCM
from eskit.protection.envelope import DataKey
from eskit.testing.protection_contract import PERSONAL_DATA, Protected, provider_with

__all__ = ["EnvelopeContract", "seal_version_1"]


@domain_event("eskit.contract.Referral")
@dataclass(frozen=True)
class Referral:
    """Personal data of two subjects in one event: the patient's and the doctor's."""

    patient_id: str
    patient_name: Annotated[str, PersonalData(subject="patient_id")]
    doctor_id: str
    doctor_name: Annotated[str, PersonalData(subject="doctor_id")]
    reason: Annotated[str, PersonalData(subject="patient_id")]
    fee: Decimal


def seal_version_1(value: Any, key: DataKey, event_id: UUID, path: str) -> dict[str, Any]:
    """``value`` sealed as eskit wrote a field before version 2 (one envelope a field)."""
    plaintext = codec.encode(value)
    aad = b"\0".join((b"eskit-pd-v1", event_id.bytes, path.encode(), key.subject.encode(),
                      key.key_id.encode()))
    nonce_key = hmac.digest(key.material, b"eskit field nonce", "sha256")
    nonce = hmac.digest(nonce_key, aad + b"\0" + plaintext, "sha256")[:12]
    aead = AESGCM(hmac.digest(key.material, b"eskit field encryption", "sha256"))
    return {"$pd": {
        "v": 1, "s": key.subject, "k": key.key_id,
        "n": base64.b64encode(nonce).decode(),
        "c": base64.b64encode(aead.encrypt(nonce, plaintext, aad)).decode(),
    }}


def _note(pid: str, text: str) -> NewEvent:
    return NewEvent("NoteTaken", {"patient": pid, "text": text,
                                  "contact": {"phone": "+44 20 7946 0000", "kind": "mobile"}})


class EnvelopeContract:
    """The envelope formats, for one kind of store."""

    def open_protected(self, tmp_path: Path, provider: LocalKeyProvider,
                       **options: Any) -> Protected:
        raise NotImplementedError("a contract test class must implement open_protected")

    @pytest.fixture
    def sealing(self, tmp_path: Path) -> Any:
        opened = self.open_protected(tmp_path, provider_with("m1"), personal_data=PERSONAL_DATA)
        try:
            yield opened
        finally:
            opened.close()

    # -- version 2 ---------------------------------------------------------------------------

    def test_one_subjects_fields_are_sealed_in_one_group_and_keep_their_places(
        self, sealing: Protected
    ) -> None:
        note = _note("p1", "allergic to penicillin")
        sealing.store.append("patient-1", [note])
        (raw,) = sealing.raw("patient-1")
        assert list(raw.event_data) == ["patient", "text", "contact", "$pd"]
        assert raw.event_data["text"] == {"$pd": 0}
        assert raw.event_data["contact"] == {"phone": {"$pd": 0}, "kind": "mobile"}
        (group,) = raw.event_data["$pd"]
        assert set(group) == {"v", "s", "k", "f", "c"}
        assert (group["v"], group["s"], group["f"]) == (2, "p1", ["text", "contact.phone"])
        assert b"penicillin" not in base64.b64decode(group["c"])
        (read,) = sealing.store.read_stream("patient-1")
        assert read.event_data == note.event_data
        assert list(read.event_data) == list(note.event_data)  # the order of the keys too

    def test_two_subjects_of_one_event_get_a_group_each_and_are_erased_apart(
        self, sealing: Protected
    ) -> None:
        referral = Referral("p1", "Ada", "d1", "Dr Who", "a cough", Decimal("30.00"))
        sealing.store.append("referral-1", [referral])
        (raw,) = sealing.raw("referral-1")
        groups = raw.event_data["$pd"]
        assert [(g["s"], g["f"]) for g in groups] == [
            ("p1", ["patient_name", "reason"]), ("d1", ["doctor_name"]),
        ]
        assert raw.event_data["patient_name"] == raw.event_data["reason"] == {"$pd": 0}
        assert raw.event_data["doctor_name"] == {"$pd": 1}
        assert groups[0]["k"] != groups[1]["k"]
        assert sealing.store.read_stream("referral-1")[0].to_domain() == referral
        assert sealing.erase("d1", vacuum=False).streams == ("referral-1",)
        (after,) = sealing.store.read_stream("referral-1")
        assert after.to_domain() == Referral("p1", "Ada", "d1", ERASED, "a cough",
                                             Decimal("30.00"))
        assert after.metadata[ERASED_METADATA] == ["doctor_name"]
        assert [e.event_type for e in sealing.export("p1")] == ["eskit.contract.Referral"]

    def test_a_group_copied_into_another_event_does_not_open(self, sealing: Protected) -> None:
        sealing.store.append("patient-1", [_note("p1", "secret")])
        (raw,) = sealing.raw("patient-1")
        sealing.append_stored("patient-2", [NewEvent("NoteTaken", raw.event_data)])  # new id
        assert sealing.store.read_stream("patient-1")[0].event_data["text"] == "secret"
        with pytest.raises(DecryptionError, match="stream 'patient-2'"):
            sealing.store.read_stream("patient-2")

    def test_payloads_holding_the_reserved_key_or_a_marker_are_refused(
        self, sealing: Protected
    ) -> None:
        for data in ({"patient": "p1", "$pd": []}, {"x": {"$pd": 0}}, {"a": {"b": {"$pd": 1}}}):
            with pytest.raises(InvalidInputError, match="sealed"):
                sealing.store.append("patient-1", [NewEvent("NoteTaken", data)])
        assert sealing.raw("patient-1") == []

    # -- version 1, still read -----------------------------------------------------------------

    def _stored_in_version_1(self, sealing: Protected) -> list[UUID]:
        key = sealing.data_key("p1")
        note_id, patient_id = uuid4(), uuid4()
        sealing.append_stored("patient-1", [
            NewEvent("NoteTaken", {
                "patient": "p1", "text": seal_version_1("old note", key, note_id, "text"),
                "contact": {"phone": seal_version_1("+44 1", key, note_id, "contact.phone"),
                            "kind": "mobile"},
            }, event_id=note_id),
            NewEvent("eskit.contract.PatientRegistered", {
                "patient_id": "p1", "name": seal_version_1("Ada", key, patient_id, "name"),
                "born": seal_version_1(date(1815, 12, 10), key, patient_id, "born"),
                "ward": "W1", "fee": Decimal("12.50"),
            }, event_id=patient_id),
        ])
        return [note_id, patient_id]

    def test_rows_sealed_in_version_1_still_open_export_and_erase(
        self, sealing: Protected
    ) -> None:
        self._stored_in_version_1(sealing)
        sealing.store.append("patient-1", [_note("p1", "new note")])  # version 2 beside
        expected = [
            {"patient": "p1", "text": "old note", "contact": {"phone": "+44 1", "kind": "mobile"}},
            {"patient_id": "p1", "name": "Ada", "born": date(1815, 12, 10), "ward": "W1",
             "fee": Decimal("12.50")},
            {**_note("p1", "new note").event_data},
        ]
        assert [e.event_data for e in sealing.store.read_stream("patient-1")] == expected
        assert [e.event_data for e in sealing.store.read_all()] == expected
        assert [e.event_data.get("text") for e in sealing.export("p1")] == [
            "old note", None, "new note",
        ]
        erasure = sealing.erase("p1", vacuum=False)
        assert erasure.streams == ("patient-1",)
        old_note, registered, new_note = sealing.store.read_stream("patient-1")
        assert old_note.event_data == {"patient": "p1", "text": ERASED,
                                       "contact": {"phone": ERASED, "kind": "mobile"}}
        assert old_note.metadata[ERASED_METADATA] == ["text", "contact.phone"]
        assert (registered.event_data["name"], registered.event_data["born"]) == (ERASED, None)
        assert new_note.event_data["text"] == ERASED

    def test_a_version_1_envelope_changed_or_moved_does_not_open(
        self, sealing: Protected
    ) -> None:
        key = sealing.data_key("p1")
        sealed_for = uuid4()
        envelope = seal_version_1("secret", key, sealed_for, "text")
        sealing.append_stored("patient-1", [NewEvent("NoteTaken", {"patient": "p1",
                                                                   "text": envelope})])
        with pytest.raises(DecryptionError, match="'text'"):
            sealing.store.read_stream("patient-1")

    def test_a_whole_payload_and_metadata_sealed_in_version_1_still_open(
        self, sealing: Protected
    ) -> None:
        store_key, key = sealing.data_key("$store"), sealing.data_key("p1")
        event_id = uuid4()
        inner = {"patient": "p1", "text": seal_version_1("hidden", key, event_id, "text")}
        sealing.append_stored("patient-1", [NewEvent(
            "NoteTaken", seal_version_1(inner, store_key, event_id, ""),
            metadata={"ip": seal_version_1("203.0.113.9", store_key, event_id, "$metadata.ip")},
            event_id=event_id,
        )])
        (read,) = sealing.store.read_stream("patient-1")
        assert read.event_data == {"patient": "p1", "text": "hidden"}
        assert read.metadata["ip"] == "203.0.113.9"
        assert _in_clear(next(iter(sealing.store.read_all()))) == _in_clear(read)


def _in_clear(e: Event) -> tuple[Any, ...]:
    return e.event_id, e.event_data, e.metadata
