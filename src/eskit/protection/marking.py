"""Which fields of an event hold personal data, and whose (pure, no I/O).

Typed events mark a field with :class:`PersonalData` in its annotation::

    @domain_event("PatientRegistered")
    @dataclass(frozen=True)
    class PatientRegistered:
        patient_id: str
        name: Annotated[str, PersonalData(subject="patient_id")]
        born: Annotated[date | None, PersonalData(subject="patient_id", erased=None)]

Plain-dict events (``NewEvent``) are described by a mapping given to
:func:`~eskit.protection.protect`: event type -> :class:`PersonalFields`.

The subject field names another field of the same event whose value (a str,
UUID or int, read as its ``str``) identifies the data subject. That field is
stored in clear, for ever: make it a pseudonymous id, never an e-mail address.
"""

from __future__ import annotations

import sys
import threading
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eskit import codec
from eskit.errors import InvalidInputError
from eskit.events import EventRegistry, check_name

__all__ = ["ERASED", "PersonalData", "PersonalFields"]

ERASED = "[erased]"
"""What a personal-data field reads as once its subject's key is erased, unless
the field says otherwise (``erased=``)."""


@dataclass(frozen=True, slots=True)
class PersonalData:
    """Annotation marker: this field is personal data of the subject named by ``subject``.

    ``subject`` is the name of another field of the event (top level) holding
    the subject's id. ``erased`` is the value the field reads as after
    :meth:`~eskit.protection.ProtectedEventStore.erase_subject` (default
    :data:`ERASED`, a str; give ``None`` or another value for fields of other
    types, so that the event class still builds and handlers still work).
    """

    subject: str
    erased: Any = ERASED

    def __post_init__(self) -> None:
        check_name("subject field", self.subject)


@dataclass(frozen=True, slots=True)
class PersonalFields:
    """The personal-data fields of one plain-dict event type.

    ``fields`` are paths: a top-level key, or keys joined by dots into nested
    dicts (``"address.street"``). A path absent from a payload is skipped.
    """

    subject: str
    fields: tuple[str, ...]
    erased: Any = ERASED

    def __init__(self, subject: str, fields: Iterable[str], erased: Any = ERASED) -> None:
        check_name("subject field", subject)
        if isinstance(fields, str):
            raise InvalidInputError("fields must be a list of paths, not one str")
        paths = tuple(fields)
        for path in paths:
            check_name("personal-data field path", path)
        object.__setattr__(self, "subject", subject)
        object.__setattr__(self, "fields", paths)
        object.__setattr__(self, "erased", erased)


@dataclass(frozen=True, slots=True)
class FieldMark:
    """One personal-data field of an event type (internal)."""

    path: str
    keys: tuple[str, ...]
    subject_field: str
    erased: Any


class Marks:
    """Resolves the marked fields of each event type, from classes and the mapping (internal).

    The mapping wins over annotations for the types it names. Results are
    cached per (type name, class), so a class registered later is still seen.
    """

    def __init__(self, registry: EventRegistry, mapping: Mapping[str, PersonalFields]) -> None:
        for name, fields in mapping.items():
            check_name("event type", name)
            if not isinstance(fields, PersonalFields):
                raise InvalidInputError(
                    f"personal_data[{name!r}] must be a PersonalFields, got {type(fields).__name__}"
                )
        self._registry = registry
        self._mapping = {
            name: tuple(
                FieldMark(path, tuple(path.split(".")), spec.subject, spec.erased)
                for path in spec.fields
            )
            for name, spec in mapping.items()
        }
        self._cache: dict[tuple[str, type | None], tuple[FieldMark, ...]] = {}
        self._lock = threading.Lock()

    def for_type(self, event_type: str) -> tuple[FieldMark, ...]:
        """The marked fields of ``event_type`` (empty when it has none)."""
        found = self._mapping.get(event_type)
        if found is not None:
            return found
        cls = self._registry.class_for(event_type)
        key = (event_type, cls)
        cached = self._cache.get(key)
        if cached is None:
            cached = () if cls is None else _marks_of_class(cls)
            with self._lock:
                self._cache[key] = cached
        return cached

    def erased_value(self, event_type: str, path: str) -> Any:
        """The redacted value of ``path`` in ``event_type`` (:data:`ERASED` if unmarked now)."""
        for mark in self.for_type(event_type):
            if mark.path == path:
                return mark.erased
        return ERASED


def _hints(cls: type) -> dict[str, Any]:
    """The annotations of a record class with their ``Annotated`` extras kept.

    Not the record kind's own hints: pydantic's have the extras moved out of the
    annotation (into ``FieldInfo.metadata``, read too, see :func:`_marks_of_class`),
    and a mark lost here would store the field in clear. Field by field when the
    whole class does not resolve (a local class naming another local class): an
    unresolvable field that mentions ``PersonalData`` is an error, since its
    subject cannot be known; any other is not marked.
    """
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:
        pass
    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module is not None else {}
    hints: dict[str, Any] = {}
    for name, raw in getattr(cls, "__annotations__", {}).items():
        def holder() -> None: ...

        holder.__annotations__ = {name: raw}
        try:
            hints.update(typing.get_type_hints(holder, namespace, include_extras=True))
        except Exception as exc:
            if "PersonalData" in str(raw):
                raise InvalidInputError(
                    f"cannot resolve the annotation of {cls.__qualname__}.{name}, a "
                    f"personal-data field: {exc}"
                ) from exc
    return hints


def _extras(cls: type, name: str, hint: Any) -> list[Any]:
    """What a field is annotated with: ``Annotated`` extras, and pydantic's field metadata."""
    found = list(hint.__metadata__) if typing.get_origin(hint) is typing.Annotated else []
    fields = getattr(cls, "model_fields", None)  # a pydantic model
    if isinstance(fields, dict) and name in fields:
        found += [m for m in getattr(fields[name], "metadata", ()) if m not in found]
    return found


def _marks_of_class(cls: type) -> tuple[FieldMark, ...]:
    hints = _hints(cls)
    kind = codec.record_kind(cls)
    ordered = kind.field_names(cls) if kind is not None else tuple(hints)
    names = set(ordered)
    marks = []
    for name in ordered:
        for extra in _extras(cls, name, hints.get(name)):
            if isinstance(extra, PersonalData):
                if extra.subject == name:
                    raise InvalidInputError(
                        f"{cls.__qualname__}.{name} cannot be its own subject field"
                    )
                if extra.subject not in names:
                    raise InvalidInputError(
                        f"{cls.__qualname__}.{name} names subject field {extra.subject!r}, "
                        "which the class does not have"
                    )
                marks.append(FieldMark(name, (name,), extra.subject, extra.erased))
    return tuple(marks)
