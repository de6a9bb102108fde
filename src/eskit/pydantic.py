"""Pydantic models as domain events and payload values, with the codec's exact round trip.

A frozen pydantic ``BaseModel`` is a domain event like a frozen dataclass::

    from pydantic import BaseModel, ConfigDict

    @domain_event("shop.ItemAdded")
    class ItemAdded(BaseModel):
        model_config = ConfigDict(frozen=True)
        sku: str
        price: Decimal

Nothing needs importing from here: the codec loads this module the first time
it meets a class it does not know while pydantic is imported, so eskit itself
never imports pydantic. Importing it explicitly does no harm.

What is stored: every field in ``model_fields`` under its *field name* (never
its alias), plus the extra fields of a model with ``extra="allow"``; each value
goes through the codec, so ``Decimal``, aware ``datetime``, ``UUID``, enums,
tuples, sets and nested models (pydantic or dataclass) come back as they were.
What is not: computed fields and private attributes (``PrivateAttr``), which
the model rebuilds or resets itself.

On the way back the model is built with ``model_validate(values, by_name=True)``:
its validators run (in lax mode), and values that no longer fit (an event
stored before a field changed type) are a :class:`~eskit.DecodingError`
naming the stream and version, like a dataclass that cannot be built. On the
way in, eskit checks the values against the annotations as for a dataclass
(a naive ``datetime`` is refused unless the registry allows them), after
pydantic's own validation. A value the codec cannot store (a pydantic
``HttpUrl``, say) is an :class:`~eskit.EncodingError` before anything is
written; use ``str`` fields for such values.
"""

from __future__ import annotations

from typing import Any

from eskit.errors import MissingExtraError

try:
    from pydantic import BaseModel, ValidationError
except ImportError as exc:
    raise MissingExtraError("fastapi", "eskit's pydantic support", name=exc.name) from exc

from eskit.codec import register_record_kind

__all__ = ["PydanticModels"]


class PydanticModels:
    """The codec's :class:`~eskit.codec.RecordKind` for pydantic (v2) models."""

    def owns(self, cls: type) -> bool:
        return issubclass(cls, BaseModel)

    def is_frozen(self, cls: type) -> bool:
        return bool(_model(cls).model_config.get("frozen", False))

    def field_names(self, cls: type) -> tuple[str, ...]:
        return tuple(_model(cls).model_fields)

    def required_names(self, cls: type) -> tuple[str, ...]:
        return tuple(name for name, f in _model(cls).model_fields.items() if f.is_required())

    def hints(self, cls: type) -> dict[str, Any] | None:
        # pydantic has resolved every annotation already (constraints moved to metadata).
        return {name: f.annotation for name, f in _model(cls).model_fields.items()}

    def values(self, obj: Any) -> dict[str, Any]:
        values = {name: getattr(obj, name) for name in type(obj).model_fields}
        extra = obj.__pydantic_extra__
        if extra:
            values.update(extra)
        return values

    def build(self, cls: type, values: dict[str, Any]) -> Any:
        try:
            return _model(cls).model_validate(values, by_name=True, by_alias=False)
        except ValidationError as exc:
            # TypeError, as a dataclass raises for fields that do not fit: the
            # registry turns it into a DecodingError naming stream and version.
            raise TypeError(str(exc)) from exc


def _model(cls: type) -> type[BaseModel]:
    assert issubclass(cls, BaseModel)
    return cls


register_record_kind(PydanticModels())
