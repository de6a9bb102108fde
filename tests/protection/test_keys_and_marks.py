"""The pure parts: master-key parsing, marks, envelopes (no store, no I/O)."""

import base64
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID, uuid4

import pytest

from eskit import EventRegistry, InMemoryEventStore, InvalidInputError, domain_event
from eskit.protection import (
    DecryptionError,
    KeyUnavailableError,
    LocalKeyProvider,
    PersonalData,
    PersonalFields,
    generate_master_key,
    protect,
)
from eskit.protection.envelope import (
    DataKey,
    Unopened,
    body_of,
    not_decrypting,
    open_body,
    seal,
)
from eskit.protection.keys import new_wrapped_key, rewrapped, unwrap
from eskit.protection.marking import Marks
from eskit.protection.transcoder import subject_text


def test_key_entries_parse_from_text_env_and_file(tmp_path, monkeypatch) -> None:
    entries = f"{generate_master_key('new')},{generate_master_key('old')}"
    assert LocalKeyProvider.parse(entries).current_key_id() == "new"
    monkeypatch.setenv("MY_KEYS", entries)
    assert LocalKeyProvider.from_env("MY_KEYS").current_key_id() == "new"
    path = tmp_path / "keys"
    path.write_text("# comment\n\n" + entries.replace(",", "\n"))
    assert LocalKeyProvider.from_file(path).current_key_id() == "new"


@pytest.mark.parametrize("text", [
    "", "no-colon", "k:not base64!", f"k:{base64.b64encode(b'short').decode()}",
    f"{generate_master_key('k')},{generate_master_key('k')}",
])
def test_bad_key_entries_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInputError):
        LocalKeyProvider.parse(text)


def test_missing_env_and_file_are_invalid_input(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ESKIT_MASTER_KEYS", raising=False)
    with pytest.raises(InvalidInputError, match="ESKIT_MASTER_KEYS"):
        LocalKeyProvider.from_env()
    with pytest.raises(InvalidInputError, match="cannot read"):
        LocalKeyProvider.from_file(tmp_path / "absent")


def test_a_wrapped_key_unwraps_only_for_its_row_and_master_key() -> None:
    provider = LocalKeyProvider({"a": b"a" * 32})
    key, row = new_wrapped_key("s1", provider)
    assert unwrap(row, provider).material == key.material
    assert len(key.material) == 32
    assert key.material not in row.wrapped
    moved = type(row)(row.key_id, "s2", row.master_key_id, row.wrapped)
    with pytest.raises(KeyUnavailableError, match="changed or moved"):
        unwrap(moved, provider)
    with pytest.raises(KeyUnavailableError, match="does not hold"):
        unwrap(row, LocalKeyProvider({"b": b"b" * 32}))
    both = LocalKeyProvider({"b": b"b" * 32, "a": b"a" * 32})
    again = rewrapped(row, both)
    assert again.master_key_id == "b"
    assert unwrap(again, LocalKeyProvider({"b": b"b" * 32})).material == key.material


def test_an_envelope_opens_only_for_its_event_path_and_key() -> None:
    key = DataKey("k1", "s1", b"x" * 32)
    event_id = uuid4()
    envelope = seal({"deep": [1, 2]}, key, event_id, "a.b", naive=False)
    body = body_of(envelope)
    assert body is not None
    assert seal({"deep": [1, 2]}, key, event_id, "a.b", naive=False) == envelope  # retries
    assert open_body(body, key, event_id.bytes, "a.b") == {"deep": [1, 2]}
    for other_key, other_id, path in ((key, uuid4(), "a.b"), (key, event_id, "a.c"),
                                      (DataKey("k1", "s1", b"y" * 32), event_id, "a.b")):
        with pytest.raises(Unopened) as caught:
            open_body(body, other_key, other_id.bytes, path)
        error = not_decrypting(path, "here", 7, caught.value)
        assert isinstance(error, DecryptionError)
        assert error.position == 7
        assert "'a." in str(error)
        assert "here" in str(error)


def test_marks_come_from_annotations_and_the_mapping() -> None:
    registry = EventRegistry()

    @domain_event("Signed", registry=registry)
    @dataclass(frozen=True)
    class Signed:
        who: str
        email: Annotated[str, PersonalData(subject="who", erased="")]
        plan: str

    marks = Marks(registry, {"Plain": PersonalFields("who", ["a.b"], erased=None)})
    assert [(m.path, m.subject_field, m.erased) for m in marks.for_type("Signed")] == [
        ("email", "who", ""),
    ]
    assert [(m.keys, m.erased) for m in marks.for_type("Plain")] == [(("a", "b"), None)]
    assert marks.for_type("Unknown") == ()


def test_a_mark_naming_a_missing_subject_field_is_refused() -> None:
    registry = EventRegistry()

    @domain_event("Bad", registry=registry)
    @dataclass(frozen=True)
    class Bad:
        email: Annotated[str, PersonalData(subject="nobody")]

    with pytest.raises(InvalidInputError, match="nobody"):
        Marks(registry, {}).for_type("Bad")
    with pytest.raises(InvalidInputError):
        PersonalFields("who", "email")  # a str, not a list of paths


@pytest.mark.parametrize(("value", "text"), [
    ("p-1", "p-1"), (UUID(int=5), str(UUID(int=5))), (42, "42"),
])
def test_subject_ids_are_str_uuid_or_int(value: object, text: str) -> None:
    assert subject_text(value, "subject") == text


@pytest.mark.parametrize("value", [True, 1.5, None, "", "$store", b"x"])
def test_other_subject_ids_are_refused(value: object) -> None:
    with pytest.raises(InvalidInputError):
        subject_text(value, "subject")


def test_pydantic_events_are_marked_too() -> None:
    from pydantic import BaseModel, ConfigDict

    registry = EventRegistry()

    @domain_event("PydanticSigned", registry=registry)
    class PydanticSigned(BaseModel):
        model_config = ConfigDict(frozen=True)
        who: str
        email: Annotated[str, PersonalData(subject="who")]
        plan: str

    assert [m.path for m in Marks(registry, {}).for_type("PydanticSigned")] == ["email"]
    store = protect(InMemoryEventStore(registry=registry), LocalKeyProvider({"k": b"k" * 32}))
    store.append("s", [PydanticSigned(who="u1", email="ann@example.com", plan="pro")])
    assert list(store.inner.read_stream("s")[0].event_data["email"]) == ["$pd"]
    assert store.read_stream("s")[0].to_domain(registry).email == "ann@example.com"
