"""Exact, JSON-based encoding of event payloads and metadata.

Stores keep payloads as JSON (readable with any SQLite or PostgreSQL tool), but
plain JSON would silently turn a ``Decimal`` into a float, a ``UUID`` or
``datetime`` into a string and a tuple into a list. The codec therefore tags
every value JSON cannot represent exactly::

    {"__eskit__": "decimal", "v": "10.50"}

Tagged values round-trip exactly: ``Decimal``, ``datetime`` (aware or naive;
a ``ZoneInfo`` zone is kept by name), ``date``, ``time``, ``timedelta``,
``UUID``, ``Enum`` members, dataclass instances, tuples, sets, frozensets,
``bytes``, integers beyond 64 bits, non-finite floats, and dicts whose keys are
not all strings (``dict[UUID, int]``, ``dict[tuple[int, int], str]``: any key the
codec can encode and that decodes to a hashable value, stored as a list of
pairs in the dict's order). A dict that itself uses the key ``__eskit__`` is
wrapped, so user data can never be mistaken for a tag.

Limits, each an :class:`~eskit.errors.EncodingError` raised before anything is
written: values nested more than :data:`MAX_DEPTH` (64) containers deep, which
includes any container that contains itself; integers of more than
:data:`MAX_INT_DIGITS` (4,300) decimal digits, Python's own default limit for
converting an int to text; strings (values or keys) holding a lone surrogate,
which is not valid UTF-8; any other object. With ``naive_datetimes=False``
(how the stores encode events unless their registry allows naive datetimes) a
``datetime`` without a time zone is refused as well.

A pydantic ``BaseModel`` is stored like a dataclass, field by field (see
:mod:`eskit.pydantic`): any class whose fields the codec can list and pass back
is a *record*, and other libraries can be plugged in the same way
(:func:`register_record_kind`).

Enum and record values are stored under a *type name*. By default it is
``"module:QualName"``; :func:`register_type` gives a class a stable name so
that renaming or moving the class does not orphan stored data.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import math
import re
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson

from eskit.errors import DecodingError, EncodingError, InvalidInputError

__all__ = [
    "MAX_DECODE_DEPTH",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "RecordKind",
    "decode",
    "encode",
    "record_kind",
    "register_record_kind",
    "register_type",
    "type_name_of",
]

TAG = "__eskit__"
_TAG_BYTES = b'"__eskit__"'
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

MAX_DEPTH = 64
"""How many containers deep a value may nest. Each level becomes at most three
levels of JSON, which keeps every payload far from Python's recursion limit."""

MAX_DECODE_DEPTH = 4 * MAX_DEPTH
"""How many JSON levels deep a stored payload may nest for the decoder: all that
:data:`MAX_DEPTH` lets the encoder write (three levels each), with room to spare.
Deeper rows (written around the codec) raise :class:`~eskit.errors.DecodingError`,
whatever Python's recursion limit is set to."""

MAX_INT_DIGITS = 4300
"""The most decimal digits an encoded int may have: Python's default
``sys.get_int_max_str_digits()``, so that every reader can convert it back."""

T = TypeVar("T", bound=type)

_lock = threading.Lock()
_types_by_name: dict[str, type] = {}
_names_by_type: dict[type, str] = {}


class RecordKind(Protocol):
    """How the codec and the event registry handle one kind of record class.

    Dataclasses are built in; :mod:`eskit.pydantic` adds pydantic models. A kind
    must round-trip exactly: ``build(cls, values(obj))`` equals ``obj``.
    """

    def owns(self, cls: type) -> bool:
        """Whether ``cls`` is a record of this kind."""

    def is_frozen(self, cls: type) -> bool:
        """Whether instances are immutable (a domain event must be)."""

    def field_names(self, cls: type) -> tuple[str, ...]:
        """The fields that are stored, and that ``build`` takes."""

    def required_names(self, cls: type) -> tuple[str, ...]:
        """The fields without a default."""

    def hints(self, cls: type) -> dict[str, Any] | None:
        """Resolved field annotations, or ``None`` to read them with ``get_type_hints``."""

    def values(self, obj: Any) -> dict[str, Any]:
        """The stored values of ``obj``, by field name."""

    def build(self, cls: type, values: dict[str, Any]) -> Any:
        """An instance from stored values; ``TypeError`` when they do not fit."""


class _Dataclasses:
    def owns(self, cls: type) -> bool:
        return dataclasses.is_dataclass(cls)

    def is_frozen(self, cls: type) -> bool:
        return bool(cls.__dataclass_params__.frozen)  # type: ignore[attr-defined]

    def field_names(self, cls: type) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    def required_names(self, cls: type) -> tuple[str, ...]:
        return tuple(
            f.name for f in dataclasses.fields(cls)
            if f.init and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )

    def hints(self, cls: type) -> dict[str, Any] | None:
        return None

    def values(self, obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}

    def build(self, cls: type, values: dict[str, Any]) -> Any:
        return cls(**values)


DATACLASSES: RecordKind = _Dataclasses()
"""The built-in record kind."""

_kinds: list[RecordKind] = []
# Plug-ins loaded on first need, once their library has been imported by the
# application: the core never imports pydantic itself.
_PLUGINS = {"pydantic": "eskit.pydantic"}
_loaded_plugins: set[str] = set()


def register_record_kind(kind: RecordKind) -> None:
    """Teach the codec and the registry another kind of record class (idempotent)."""
    with _lock:
        if kind not in _kinds:
            _kinds.append(kind)


def record_kind(cls: object) -> RecordKind | None:
    """The kind of record ``cls`` is (dataclass, pydantic model, ...), or ``None``."""
    if not isinstance(cls, type):
        return None
    if dataclasses.is_dataclass(cls):
        return DATACLASSES
    for kind in _kinds:
        if kind.owns(cls):
            return kind
    if _load_plugins():
        return record_kind(cls)
    return None


def _load_plugins() -> bool:
    loaded = False
    for library, plugin in _PLUGINS.items():
        if plugin not in _loaded_plugins and library in sys.modules:
            _loaded_plugins.add(plugin)
            importlib.import_module(plugin)
            loaded = True
    return loaded


def register_type(cls: T, name: str | None = None) -> T:
    """Give an ``Enum`` or record (a dataclass, a pydantic model) a stable name in payloads.

    Usable as ``register_type(Currency, "Currency")`` or as a decorator
    ``@register_type``. Registering the same class twice under one name is
    harmless; two different classes under one name is an error.
    """
    if not (isinstance(cls, type) and (issubclass(cls, Enum) or record_kind(cls) is not None)):
        raise InvalidInputError(
            f"only Enum and record (dataclass, pydantic model) types can be registered, "
            f"not {cls!r}"
        )
    name = name or f"{cls.__module__}:{cls.__qualname__}"
    if not name or not isinstance(name, str):
        raise InvalidInputError("a type name must be a non-empty string")
    with _lock:
        other = _types_by_name.get(name)
        if other is not None and not same_definition(other, cls):
            raise InvalidInputError(
                f"type name {name!r} is already used by {other.__module__}.{other.__qualname__}"
            )
        _types_by_name[name] = cls
        _names_by_type[cls] = name
    return cls


def is_type_name_free(name: str, cls: type) -> bool:
    """Whether ``name`` is unused, or used by this very class definition."""
    other = _types_by_name.get(name)
    return other is None or same_definition(other, cls)


def same_definition(a: type, b: type) -> bool:
    # A module imported twice (reloaded, or run as a script and imported) defines
    # the "same" class again; only that may take over a name.
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def type_name_of(cls: type) -> str:
    """The name under which values of ``cls`` are stored."""
    name = _names_by_type.get(cls)
    if name is None:
        name = f"{cls.__module__}:{cls.__qualname__}"
        with _lock:
            _names_by_type.setdefault(cls, name)
            other = _types_by_name.get(name)
            # A module defined again (reloaded, a script run twice) decodes into its
            # newest classes: a pydantic model refuses a nested value of the old one.
            if other is None or same_definition(other, cls):
                _types_by_name[name] = cls
    return name


def _type_by_name(name: str) -> type:
    cls = _types_by_name.get(name)
    if cls is not None:
        return cls
    # Fall back to the default "module:QualName" form, but only ever hand back
    # an Enum or a record: stored data must not be able to name other callables.
    module_name, sep, qualname = name.partition(":")
    if sep:
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            obj = None
        if isinstance(obj, type) and (issubclass(obj, Enum) or record_kind(obj) is not None):
            type_name_of(obj)
            return obj
    raise DecodingError(f"stored value names unknown type {name!r}; register it with register_type")


_options = threading.local()  # refuse_naive: set by encode(naive_datetimes=False)


def encode(value: Any, *, naive_datetimes: bool = True) -> bytes:
    """Encode a payload (usually a dict) to JSON bytes, exactly and reversibly.

    ``naive_datetimes=False`` refuses a ``datetime`` without a time zone
    anywhere in the value. Raises :class:`~eskit.errors.EncodingError` (see the
    limits in the module docstring).
    """
    if type(value) is dict and not value:  # the usual metadata
        return b"{}"
    out = dump_tree(_to_tree(value, 0))
    # The naive check looks at the output, so a payload without datetimes (most)
    # pays one substring test; one that seems to hold a naive datetime is walked
    # again with the check on, which raises with the path (or finds a look-alike).
    if not naive_datetimes and may_hold_naive(out):
        refuse_naive(value)
    return out


def encode_tree(value: Any) -> Any:
    """The JSON-ready tree :func:`encode` dumps for ``value`` (internal to eskit).

    For code that splices trees before dumping them once (the protected store
    seals some values of a payload and stores the rest). Raises
    :class:`~eskit.errors.EncodingError` as :func:`encode` does, but does not
    refuse naive datetimes: check the dumped bytes with :func:`may_hold_naive`.
    """
    return _to_tree(value, 0)


def dump_tree(tree: Any) -> bytes:
    """The JSON bytes of a tree from :func:`encode_tree` (internal to eskit)."""
    try:
        return orjson.dumps(tree)
    except orjson.JSONEncodeError as exc:
        if "surrogates" in str(exc):
            raise EncodingError(
                "a string holds a lone surrogate (such as '\\ud800'), which is not valid "
                "UTF-8 and cannot be stored"
            ) from None
        raise EncodingError(str(exc)) from None


def may_hold_naive(out: bytes) -> bool:
    """Whether encoded bytes seem to hold a naive datetime (internal to eskit)."""
    return _DATETIME_TAG in out and _looks_naive(out)


def refuse_naive(value: Any) -> None:
    """Walk ``value`` again refusing naive datetimes: raises
    :class:`~eskit.errors.EncodingError` with the path (internal to eskit)."""
    _options.refuse_naive = True
    try:
        _to_tree(value, 0)
    finally:
        _options.refuse_naive = False


_DATETIME_TAG = b'"__eskit__":"datetime","v":"'
_DATETIME_TEXT = re.compile(rb'"__eskit__":"datetime","v":"([^"]*)"')
_OFFSET = re.compile(rb"[+-]\d\d:\d\d(?::\d\d(?:\.\d{6})?)?\Z")


def _looks_naive(out: bytes) -> bool:
    return any(_OFFSET.search(text) is None for text in _DATETIME_TEXT.findall(out))


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a code point that UTF-8 cannot encode (U+D800..U+DFFF)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_TAG_TEXT = _TAG_BYTES.decode()


def decode(data: bytes | str) -> Any:
    """Decode bytes (or text) written by :func:`encode`."""
    if data == "{}" or data == b"{}":  # the usual metadata: skip the parser
        return {}
    try:
        tree = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodingError(f"stored payload is not valid JSON: {exc}") from exc
    # Only payloads that hold a tag need walking; most hold none.
    if (_TAG_TEXT if type(data) is str else _TAG_BYTES) in data:  # type: ignore[operator]
        return decode_tree(tree)
    return tree


def _too_deep() -> EncodingError:
    return EncodingError(
        f"the value is nested more than {MAX_DEPTH} containers deep, or contains itself"
    )


def _to_tree(v: Any, depth: int) -> Any:
    # ``depth`` counts the containers around ``v``; only containers check it.
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        return v if _INT64_MIN <= v <= _INT64_MAX else _encode_big_int(v)
    if t is float:
        return v if math.isfinite(v) else {TAG: "float", "v": repr(v)}
    if t is dict:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        out: dict[str, Any] = {}
        for k, x in v.items():
            if type(k) is not str:
                # What is already encoded is reused: encoding it again would double
                # the work at every level of such dicts nested in one another.
                return _encode_map(v, depth, out)
            # Payloads are mostly flat: the usual values are handled here without a call.
            tx = type(x)
            if tx is str or tx is bool or x is None:
                out[k] = x
            elif tx is Decimal:
                out[k] = {TAG: "decimal", "v": str(x)}
            elif tx is int and _INT64_MIN <= x <= _INT64_MAX:
                out[k] = x
            else:
                try:
                    out[k] = _to_tree(x, depth + 1)
                except EncodingError as exc:
                    raise _nested(exc, f".{k}") from None
        return {TAG: "dict", "v": out} if TAG in out else out
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        items = []
        for i, x in enumerate(v):
            try:
                items.append(_to_tree(x, depth + 1))
            except EncodingError as exc:
                raise _nested(exc, f"[{i}]") from None
        return items if t is list else {TAG: "tuple", "v": items}
    encoder = _ENCODERS.get(t)
    if encoder is not None:
        return encoder(v)
    container = _CONTAINER_ENCODERS.get(t)
    if container is not None:
        if depth >= MAX_DEPTH:
            raise _too_deep()
        return container(v, depth + 1)
    if isinstance(v, Enum):
        if depth >= MAX_DEPTH:
            raise _too_deep()
        try:
            inner = _to_tree(v.value, depth + 1)
        except EncodingError as exc:
            raise _nested(exc, ".value") from None
        return {TAG: "enum", "t": type_name_of(t), "v": inner}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        if depth >= MAX_DEPTH:
            raise _too_deep()
        fields = {}
        for f in dataclasses.fields(v):
            if f.init:
                try:
                    fields[f.name] = _to_tree(getattr(v, f.name), depth + 1)
                except EncodingError as exc:
                    raise _nested(exc, f".{f.name}") from None
        return {TAG: "dataclass", "t": type_name_of(t), "v": fields}
    kind = record_kind(t)
    if kind is not None:  # a record of a plugged-in kind: stored as a dataclass is
        if depth >= MAX_DEPTH:
            raise _too_deep()
        fields = {}
        for name, x in kind.values(v).items():
            try:
                fields[name] = _to_tree(x, depth + 1)
            except EncodingError as exc:
                raise _nested(exc, f".{name}") from None
        return {TAG: "dataclass", "t": type_name_of(t), "v": fields}
    # Subclasses of the JSON types (a ``str`` NewType-like subclass, say) keep their value.
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return _to_tree(int(v), depth)
    if isinstance(v, datetime):
        return _encode_datetime(v)
    raise EncodingError(f"cannot encode a value of type {t.__module__}.{t.__qualname__}")


def _encode_big_int(v: int) -> dict[str, Any]:
    try:
        text = str(v)
    except ValueError:  # over the interpreter's int-to-text limit
        text = ""
    if not text or len(text) - (v < 0) > MAX_INT_DIGITS:
        raise EncodingError(
            f"an int of {v.bit_length()} bits has more than {MAX_INT_DIGITS} decimal digits, "
            "more than every Python can read back; store it as text or split it"
        )
    return {TAG: "int", "v": text}


def _encode_map(v: dict[Any, Any], depth: int, done: dict[str, Any]) -> dict[str, Any]:
    # A dict with a non-string key: a list of [key, value] pairs, in the dict's order,
    # so that the keys keep their type (UUID, int, tuple, Enum, ...). ``done`` holds
    # the trees of the str keys the caller already encoded.
    pairs = []
    for k, x in v.items():
        if type(k) is str and k in done:
            pairs.append([k, done[k]])
            continue
        try:
            key = _to_tree(k, depth + 1)
        except EncodingError as exc:
            raise _nested(exc, f"[key {k!r}]") from None
        try:
            pairs.append([key, _to_tree(x, depth + 1)])
        except EncodingError as exc:
            raise _nested(exc, f"[{k!r}]") from None
    return {TAG: "map", "v": pairs}


def _canonical_items(items: set[Any] | frozenset[Any], depth: int) -> list[Any]:
    # A set's iteration order depends on hashing, which differs between processes
    # for strings. Sorting makes the encoding canonical: the same value always
    # encodes to the same bytes, which is how a retried event is recognised.
    trees = [_to_tree(x, depth) for x in items]
    trees.sort(key=lambda t: orjson.dumps(t, option=orjson.OPT_SORT_KEYS))
    return trees


def _nested(exc: EncodingError, step: str) -> EncodingError:
    return EncodingError(exc.bare_message, path=step + exc.path)


def _encode_datetime(v: datetime) -> dict[str, Any]:
    tz = v.tzinfo
    if (tz is None or (tz is not UTC and v.utcoffset() is None)) and getattr(
        _options, "refuse_naive", False
    ):
        raise EncodingError(
            f"the datetime {v.isoformat()} has no time zone: a naive time names no moment "
            "(add tzinfo=UTC, or allow naive datetimes on the registry)"
        )
    out: dict[str, Any] = {TAG: "datetime", "v": v.isoformat()}
    if isinstance(v.tzinfo, ZoneInfo):
        out["tz"] = v.tzinfo.key
    if v.fold:
        out["fold"] = 1
    return out


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    Decimal: lambda v: {TAG: "decimal", "v": str(v)},
    datetime: _encode_datetime,
    date: lambda v: {TAG: "date", "v": v.isoformat()},
    time: lambda v: {TAG: "time", "v": v.isoformat()},
    timedelta: lambda v: {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    UUID: lambda v: {TAG: "uuid", "v": str(v)},
    bytes: lambda v: {TAG: "bytes", "v": base64.b64encode(v).decode("ascii")},
}

_CONTAINER_ENCODERS: dict[type, Callable[[Any, int], Any]] = {
    set: lambda v, depth: {TAG: "set", "v": _canonical_items(v, depth)},
    frozenset: lambda v, depth: {TAG: "frozenset", "v": _canonical_items(v, depth)},
}


def _from_tree(x: Any, depth: int = 0) -> Any:
    # The tree comes fresh from the JSON parser and belongs to us, so containers are
    # rewritten in place rather than copied; scalars are skipped without a call.
    # ``depth`` counts the containers around ``x``: an explicit bound, not Python's
    # recursion limit, which other code may raise and which differs between versions.
    if depth >= MAX_DECODE_DEPTH:
        raise DecodingError("stored payload is nested too deeply to decode")
    t = type(x)
    if t is list:
        for i, v in enumerate(x):
            tv = type(v)
            if tv is dict or tv is list:
                x[i] = _from_tree(v, depth + 1)
        return x
    if t is not dict:
        return x
    tag = x.get(TAG)
    if tag is None:
        for k, v in x.items():
            tv = type(v)
            if tv is dict:
                # The commonest tag, a decimal, is decoded here without a call; anything
                # unusual about it falls through to the decoder, which reports it.
                if v.get(TAG) == "decimal" and type(text := v.get("v")) is str and len(v) == 2:
                    try:
                        x[k] = Decimal(text)
                        continue
                    except ArithmeticError:
                        pass
                x[k] = _from_tree(v, depth + 1)
            elif tv is list:
                x[k] = _from_tree(v, depth + 1)
        return x
    try:
        decoder = _DECODERS[tag]
    except KeyError:
        raise DecodingError(f"unknown value tag {tag!r} in stored payload") from None
    try:
        return decoder(x, depth + 1)
    except DecodingError:
        raise
    except Exception as exc:
        raise DecodingError(f"cannot decode stored {tag} value: {exc}") from exc


def decode_tree(tree: Any) -> Any:
    """Python values from a parsed payload that holds tags (internal to eskit).

    For the stores' bulk read loop, which parses the JSON itself and walks only
    payloads that hold a tag, as :func:`decode` does. A payload nested more than
    :data:`MAX_DECODE_DEPTH` containers deep raises :class:`~eskit.errors.DecodingError`.
    """
    return _from_tree(tree)


def _decode_datetime(x: dict[str, Any], depth: int) -> datetime:
    value = datetime.fromisoformat(x["v"])
    if "tz" in x:
        value = value.astimezone(ZoneInfo(x["tz"]))
    if x.get("fold"):
        value = value.replace(fold=1)
    return value


def _decode_enum(x: dict[str, Any], depth: int) -> Enum:
    cls = _type_by_name(x["t"])
    if not issubclass(cls, Enum):
        raise DecodingError(f"stored enum names {x['t']!r}, which is not an Enum")
    return cls(_from_tree(x["v"], depth))


def _decode_map(x: dict[str, Any], depth: int) -> dict[Any, Any]:
    out = {}
    for k, v in x["v"]:
        key = _from_tree(k, depth + 1) if type(k) is dict else k
        out[key] = _from_tree(v, depth + 1)
    return out


def _decode_dataclass(x: dict[str, Any], depth: int) -> Any:
    cls = _type_by_name(x["t"])
    values = {k: _from_tree(v, depth + 1) for k, v in x["v"].items()}
    if dataclasses.is_dataclass(cls):
        return cls(**values)
    kind = record_kind(cls)
    if kind is None:
        raise DecodingError(f"stored dataclass names {x['t']!r}, which is not a record type")
    return kind.build(cls, values)


# Each decoder gets the tagged dict and the depth of its contents.
_DECODERS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "dict": lambda x, d: {k: _from_tree(v, d + 1) for k, v in x["v"].items()},
    "map": _decode_map,
    "tuple": lambda x, d: tuple(_from_tree(i, d + 1) for i in x["v"]),
    "int": lambda x, d: int(x["v"]),
    "float": lambda x, d: float(x["v"]),
    "decimal": lambda x, d: Decimal(x["v"]),
    "datetime": _decode_datetime,
    "date": lambda x, d: date.fromisoformat(x["v"]),
    "time": lambda x, d: time.fromisoformat(x["v"]),
    "timedelta": lambda x, d: timedelta(days=x["v"][0], seconds=x["v"][1], microseconds=x["v"][2]),
    "uuid": lambda x, d: UUID(x["v"]),
    "bytes": lambda x, d: base64.b64decode(x["v"]),
    "set": lambda x, d: set(_from_tree(x["v"], d)),
    "frozenset": lambda x, d: frozenset(_from_tree(x["v"], d)),
    "enum": _decode_enum,
    "dataclass": _decode_dataclass,
}
