"""Checking a domain event's field values against its annotations, before it is stored.

A dataclass does not check its fields: ``Deposited(0.1)`` with ``amount: Decimal``
builds fine, and the codec would store a float. The registry therefore checks
every registered domain event when it is raised or appended
(:meth:`eskit.EventRegistry.from_domain`), never when one is read back: stored
events stay readable whatever their shape.

What is checked, by annotation (``X | None`` and ``Optional`` accept ``None``,
a union accepts any member):

* ``str``, ``bytes``, ``bool``, ``Decimal``, ``UUID``, ``time``, ``timedelta``,
  an ``Enum`` class, a dataclass (whose own fields are checked too), any other
  plain class: an instance of it (subclasses included);
* ``int``: an ``int`` that is not a ``bool`` (``True`` is not a count);
* ``float``: a ``float`` or an ``int`` (not a ``bool``), as in Python's typing rules;
* ``Decimal``: a ``Decimal`` only; an ``int`` or ``float`` is refused, since it
  would be stored and read back as one;
* ``datetime``: a ``datetime``, timezone-aware unless the registry allows naive
  ones (:attr:`eskit.EventRegistry.naive_datetimes`); ``date``: a ``date`` that is
  not a ``datetime``;
* ``list[X]``, ``set[X]``, ``frozenset[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
  ``dict[K, V]`` and their ``collections.abc`` counterparts: the container and
  every item, key and value;
* ``Literal[...]``: one of the values, of the same type;
* ``Annotated[X, ...]`` as ``X``, a ``NewType`` as its base type.

Not checked: ``Any``, ``object``, type variables, ``Callable``, protocols, and
annotations that cannot be resolved (a forward reference to a name that does not
exist). The codec still refuses values it cannot store.

The plan for a class is built once, on first use, and cached; checking a flat
event costs one call per field.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import sys
import threading
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, Protocol, Union

from eskit.codec import record_kind
from eskit.errors import InvalidInputError

__all__ = ["FieldCheck", "NaivePolicy", "Plan", "check_fields", "plan_for"]

FieldCheck = Callable[[Any], "str | None"]
"""Returns ``None`` for a good value, else what is wrong with it."""


class NaivePolicy(Protocol):
    """Where a datetime check reads whether naive datetimes are allowed (a registry)."""

    naive_datetimes: bool


def _type_name(t: Any) -> str:
    if isinstance(t, type):
        return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    return repr(t).replace("typing.", "")


def _got(v: Any) -> str:
    t = type(v)
    text = repr(v)
    return f"{t.__qualname__} {text if len(text) <= 40 else text[:37] + '...'}"


def _instance(t: type) -> FieldCheck:
    name = _type_name(t)

    def check(v: Any) -> str | None:
        if type(v) is t or isinstance(v, t):
            return None
        return f"expected {name}, got {_got(v)}"

    return check


def _check_int(v: Any) -> str | None:
    if type(v) is int or (isinstance(v, int) and not isinstance(v, bool)):
        return None
    return f"expected int, got {_got(v)}"


def _check_float(v: Any) -> str | None:
    t = type(v)
    if t is float or t is int or isinstance(v, float) or (
        isinstance(v, int) and not isinstance(v, bool)
    ):
        return None
    return f"expected float, got {_got(v)}"


def _check_bool(v: Any) -> str | None:
    return None if type(v) is bool else f"expected bool, got {_got(v)}"


def _check_decimal(v: Any) -> str | None:
    if type(v) is Decimal or isinstance(v, Decimal):
        return None
    hint = " (write Decimal(\"...\"): a float or int would be stored as one)" if isinstance(
        v, int | float
    ) and not isinstance(v, bool) else ""
    return f"expected Decimal, got {_got(v)}{hint}"


def _check_date(v: Any) -> str | None:
    if isinstance(v, date) and not isinstance(v, datetime):
        return None
    return f"expected date, got {_got(v)}"


def _datetime_check(policy: NaivePolicy) -> FieldCheck:
    def check(v: Any) -> str | None:
        if not isinstance(v, datetime):
            return f"expected datetime, got {_got(v)}"
        if (v.tzinfo is None or v.utcoffset() is None) and not policy.naive_datetimes:
            return (
                f"expected a timezone-aware datetime, got the naive {v.isoformat()} "
                "(add tzinfo=UTC, or allow naive datetimes on the registry)"
            )
        return None

    return check


def _check_none(v: Any) -> str | None:
    return None if v is None else f"expected None, got {_got(v)}"


def _union(checks: list[FieldCheck], names: list[str]) -> FieldCheck:
    expected = " | ".join(names)

    def check(v: Any) -> str | None:
        for c in checks:
            if c(v) is None:
                return None
        if len(checks) == 2 and checks[1] is _check_none and v is not None:
            return checks[0](v)  # Optional[X]: say what is wrong with the X
        return f"expected {expected}, got {_got(v)}"

    return check


def _literal(values: tuple[Any, ...]) -> FieldCheck:
    def check(v: Any) -> str | None:
        for allowed in values:
            if type(v) is type(allowed) and v == allowed:
                return None
        return f"expected one of {', '.join(map(repr, values))}, got {_got(v)}"

    return check


def _sequence(container: type[Any], name: str, item: FieldCheck | None) -> FieldCheck:
    def check(v: Any) -> str | None:
        if not isinstance(v, container) or isinstance(v, str | bytes):
            return f"expected {name}, got {_got(v)}"
        if item is not None:
            for i, x in enumerate(v):
                problem = item(x)
                if problem is not None:
                    return f"[{i}]: {problem}"
        return None

    return check


def _set(container: type[Any], name: str, item: FieldCheck | None) -> FieldCheck:
    def check(v: Any) -> str | None:
        if not isinstance(v, container):
            return f"expected {name}, got {_got(v)}"
        if item is not None:
            for x in v:
                problem = item(x)
                if problem is not None:
                    return f"{{{x!r}}}: {problem}"
        return None

    return check


def _fixed_tuple(items: list[FieldCheck | None], name: str) -> FieldCheck:
    def check(v: Any) -> str | None:
        if not isinstance(v, tuple):
            return f"expected {name}, got {_got(v)}"
        if len(v) != len(items):
            return f"expected {name} of {len(items)} items, got {len(v)}"
        for i, (c, x) in enumerate(zip(items, v, strict=True)):
            problem = c(x) if c is not None else None
            if problem is not None:
                return f"[{i}]: {problem}"
        return None

    return check


def _mapping(
    container: type[Any], name: str, key: FieldCheck | None, value: FieldCheck | None
) -> FieldCheck:
    def check(v: Any) -> str | None:
        if not isinstance(v, container):
            return f"expected {name}, got {_got(v)}"
        if key is not None or value is not None:
            for k, x in v.items():
                problem = key(k) if key is not None else None
                if problem is not None:
                    return f"[key {k!r}]: {problem}"
                problem = value(x) if value is not None else None
                if problem is not None:
                    return f"[{k!r}]: {problem}"
        return None

    return check


def _dataclass(cls: type, policy: NaivePolicy) -> FieldCheck:
    name = _type_name(cls)

    def check(v: Any) -> str | None:
        if not isinstance(v, cls):
            return f"expected {name}, got {_got(v)}"
        # Looked up at call time: a dataclass may refer to itself (a tree).
        for field_name, field_check in plan_for(type(v), policy).checks:
            problem = field_check(getattr(v, field_name))
            if problem is not None:
                return f".{field_name}: {problem}"
        return None

    return check


_SEQUENCES: dict[Any, type] = {
    list: list, abc.Sequence: abc.Sequence, abc.MutableSequence: abc.MutableSequence,
}
_SETS: dict[Any, type] = {
    set: set, frozenset: frozenset, abc.Set: abc.Set, abc.MutableSet: abc.MutableSet,
}
_MAPPINGS: dict[Any, type] = {
    dict: dict, abc.Mapping: abc.Mapping, abc.MutableMapping: abc.MutableMapping,
}
_SCALARS: dict[Any, FieldCheck] = {
    int: _check_int, float: _check_float, bool: _check_bool, Decimal: _check_decimal,
    date: _check_date, type(None): _check_none, None: _check_none,
}


def _check_for(t: Any, policy: NaivePolicy) -> FieldCheck | None:
    """The check for annotation ``t``; ``None`` when it is not checked."""
    if t is Any or t is object or isinstance(t, typing.TypeVar | str | typing.ForwardRef):
        return None
    scalar = _SCALARS.get(t)
    if scalar is not None:
        return scalar
    if t is datetime:
        return _datetime_check(policy)
    supertype = getattr(t, "__supertype__", None)  # a NewType
    if supertype is not None:
        return _check_for(supertype, policy)
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Annotated:
        return _check_for(args[0], policy)
    if origin is Union or origin is types.UnionType:
        checks = [_check_for(a, policy) for a in args]
        if any(c is None for c in checks):
            return None  # one member accepts anything
        return _union([c for c in checks if c is not None], [_type_name(a) for a in args])
    if origin is Literal:
        return _literal(args)
    if origin is typing.ClassVar or origin is abc.Callable:
        return None
    if origin in _SEQUENCES or t in _SEQUENCES:
        container = _SEQUENCES[origin if origin is not None else t]
        return _sequence(container, _type_name(t), _check_for(args[0], policy) if args else None)
    if origin in _SETS or t in _SETS:
        container = _SETS[origin if origin is not None else t]
        return _set(container, _type_name(t), _check_for(args[0], policy) if args else None)
    if origin in _MAPPINGS or t in _MAPPINGS:
        container = _MAPPINGS[origin if origin is not None else t]
        key, value = (
            (_check_for(args[0], policy), _check_for(args[1], policy)) if len(args) == 2
            else (None, None)
        )
        return _mapping(container, _type_name(t), key, value)
    if origin is tuple or t is tuple:
        if not args:
            return _instance(tuple)
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(tuple, _type_name(t), _check_for(args[0], policy))
        if args == ((),):  # tuple[()]
            return _fixed_tuple([], _type_name(t))
        return _fixed_tuple([_check_for(a, policy) for a in args], _type_name(t))
    if origin is not None:
        return None  # another generic (a user's Generic[T], say): not checked
    if isinstance(t, type):
        if getattr(t, "_is_protocol", False):
            return None
        if record_kind(t) is not None:  # a dataclass, a pydantic model
            return _dataclass(t, policy)
        if issubclass(t, Enum):
            return _instance(t)
        return _instance(t)
    return None


# Annotations for which ``type(value) is annotation`` proves a value good: the fast
# path of a flat event, one identity test per field. A value that fails it (a
# subclass, an int for a float) goes through the full check.
_EXACT_OK = (str, bytes, int, float, bool, Decimal, uuid.UUID, date, time, timedelta)


class Plan:
    """How to check one dataclass's fields (built once per class and registry)."""

    __slots__ = ("checks", "exact", "others")

    def __init__(self, checks: tuple[tuple[str, FieldCheck], ...], hints: dict[str, Any]) -> None:
        self.checks = checks
        """Every checked field: ``(name, check)``."""
        exact = tuple(
            (name, hints[name]) for name, _ in checks
            if hints[name] in _EXACT_OK or (
                isinstance(hints[name], type) and issubclass(hints[name], Enum)
            )
        )
        self.exact: tuple[tuple[str, type], ...] = exact
        """Fields that a value of exactly the annotated type satisfies."""
        fast = {name for name, _ in exact}
        self.others = tuple((name, check) for name, check in checks if name not in fast)
        """The remaining fields, checked in full."""


_plans: dict[tuple[type, int], Plan] = {}
_plans_lock = threading.Lock()


def plan_for(cls: type, policy: NaivePolicy) -> Plan:
    """The checking plan of record ``cls`` (a dataclass, a pydantic model), cached."""
    key = (cls, id(policy))
    plan = _plans.get(key)
    if plan is not None:
        return plan
    kind = record_kind(cls)
    if kind is None:
        raise InvalidInputError(f"{cls!r} is not a record type (a dataclass, a pydantic model)")
    hints: dict[str, Any] | None = kind.hints(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception:  # an unresolvable forward reference: resolve field by field
            hints = _hints_one_by_one(cls)
    built = []
    for name in kind.field_names(cls):
        if name not in hints:
            continue
        check = _check_for(hints[name], policy)
        if check is not None:
            built.append((name, check))
    plan = Plan(tuple(built), hints)
    with _plans_lock:
        _plans[key] = plan
    return plan


def _hints_one_by_one(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module is not None else {}
    hints = {}
    for f in dataclasses.fields(cls):
        def holder() -> None: ...

        holder.__annotations__ = {f.name: f.type}
        try:
            hints.update(typing.get_type_hints(holder, namespace, include_extras=True))
        except Exception:  # this one field stays unchecked
            continue
    return hints


def check_fields(event_type: str, obj: object, plan: Plan) -> None:
    """Raise :class:`~eskit.InvalidInputError` naming the event type and field that is wrong."""
    for name, check in plan.checks:
        problem = check(getattr(obj, name))
        if problem is not None:
            sep = "" if problem.startswith((".", "[")) else ": "
            raise InvalidInputError(
                f"{type(obj).__qualname__} (event type {event_type!r}) field {name!r}"
                f"{sep}{problem}"
            )
