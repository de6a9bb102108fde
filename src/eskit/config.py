"""Open the store a URL (or ``$ESKIT_DSN``) names, in one call.

::

    store = eskit.open_store()                      # the store $ESKIT_DSN names
    store = eskit.open_store("sqlite:///events.db")  # a SQLite file (relative path)
    store = eskit.open_store("postgresql://app@db/prod", schema="shop")

What a URL may be:

* ``postgresql://...`` or ``postgres://...``, or libpq keywords (``host=... dbname=...``):
  a :class:`~eskit.PostgresEventStore` (needs ``eskit[postgres]``) in ``schema``
  (else ``$ESKIT_SCHEMA``, else ``eskit``);
* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's
  spelling: the path is what follows the third slash), ``sqlite://`` for a
  database in memory; the query may set ``synchronous`` (``FULL`` or ``NORMAL``)
  and ``busy_timeout`` (seconds);
* ``memory://``: an :class:`~eskit.InMemoryEventStore` (tests, demos);
* anything else without a ``scheme://``: the path of a SQLite file.

Any other scheme, or an unknown query option, is an
:class:`~eskit.InvalidInputError` before anything is opened. :func:`parse_store_url`
makes that decision without I/O; :func:`open_store` here and
:func:`eskit.aio.open_store` both act on it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from eskit.errors import InvalidInputError, NotAnEskitStoreError
from eskit.events import EventRegistry
from eskit.stores.base import EventStore

__all__ = ["ENV_DSN", "ENV_SCHEMA", "StoreURL", "is_dsn", "open_store", "parse_store_url"]

ENV_DSN = "ESKIT_DSN"
"""The environment variable :func:`open_store` reads when it is given no URL."""

ENV_SCHEMA = "ESKIT_SCHEMA"
"""The PostgreSQL schema to use when none is given (default ``eskit``)."""

_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
# The libpq keywords a keyword DSN is likely to start with; anything else that merely
# contains "=" is taken for a file name.
_KEYWORD_DSN = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|"
    r"connect_timeout|application_name|options|target_session_attrs)\s*=",
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_OPTIONS = ("synchronous", "busy_timeout")


def is_dsn(text: str) -> bool:
    """Whether ``text`` is a PostgreSQL DSN (URL or libpq keywords) rather than a file."""
    if text.startswith(_POSTGRES_PREFIXES):
        return True
    return bool(_KEYWORD_DSN.match(text)) and not os.path.exists(text)


@dataclass(frozen=True)
class StoreURL:
    """What a store URL names: the kind of store and how to open it (no I/O done)."""

    kind: Literal["postgres", "sqlite", "memory"]
    target: str
    """The PostgreSQL DSN, or the SQLite path (``:memory:`` for an in-memory database)."""
    schema: str = "eskit"
    options: dict[str, Any] = field(default_factory=dict)
    """Store arguments read from the URL's query (SQLite's ``synchronous``, ``busy_timeout``)."""


def parse_store_url(url: str | os.PathLike[str] | None = None, *,
                    schema: str | None = None) -> StoreURL:
    """Decide which store ``url`` names (``None``: ``$ESKIT_DSN``), without opening it."""
    if url is None:
        url = os.environ.get(ENV_DSN, "")
        if not url.strip():
            raise InvalidInputError(
                f"no store named: pass a URL or set {ENV_DSN} (a SQLite path, "
                "sqlite:///path, postgresql://... or memory://)"
            )
    text = os.fspath(url)
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("a store URL must be a non-empty str or path")
    schema = schema if schema is not None else os.environ.get(ENV_SCHEMA) or "eskit"
    if is_dsn(text):
        return StoreURL("postgres", text, schema=schema)
    match = _SCHEME.match(text)
    if match is None:
        return StoreURL("sqlite", text)  # a bare path
    scheme = match.group(1).lower()
    if scheme == "memory":
        if text.lower() != "memory://":
            raise InvalidInputError(f"memory:// takes no path or options, got {text!r}")
        return StoreURL("memory", "")
    if scheme != "sqlite":
        raise InvalidInputError(
            f"unknown store URL scheme {scheme!r}: use sqlite:///path, postgresql://..., "
            "memory:// or a bare file path"
        )
    parts = urlsplit(text)
    if parts.netloc:
        raise InvalidInputError(
            f"sqlite URL {text!r} names a host ({parts.netloc!r}): write sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path[1:]) if parts.path else ""
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _SQLITE_OPTIONS:
            raise InvalidInputError(
                f"unknown sqlite URL option {key!r}: known are {', '.join(_SQLITE_OPTIONS)}"
            )
        options[key] = _sqlite_option(key, value)
    return StoreURL("sqlite", path or ":memory:", options=options)


def _sqlite_option(key: str, value: str) -> Any:
    if key == "synchronous":
        if value.upper() not in ("FULL", "NORMAL"):
            raise InvalidInputError(f"synchronous must be FULL or NORMAL, got {value!r}")
        return value.upper()
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise InvalidInputError(f"busy_timeout must be a number of seconds >= 0, got {value!r}")
    return seconds


def open_store(
    url: str | os.PathLike[str] | None = None, *, schema: str | None = None,
    create: bool = True, registry: EventRegistry | None = None,
) -> EventStore:
    """Open the store ``url`` names, or ``$ESKIT_DSN`` when ``url`` is ``None``.

    ``create=True`` (the default) creates a missing SQLite file and creates or
    upgrades the PostgreSQL schema. ``create=False`` opens only an existing
    store: a missing file or an empty schema is a
    :class:`~eskit.NotAnEskitStoreError`, and nothing is created (what a
    read-only tool wants). The caller closes the store. Bad URLs are an
    :class:`~eskit.InvalidInputError` before any I/O; see the module docstring.
    """
    spec = parse_store_url(url, schema=schema)
    if spec.kind == "memory":
        from eskit.stores.memory import InMemoryEventStore

        return InMemoryEventStore(registry=registry)
    if spec.kind == "sqlite":
        from eskit.stores.sqlite import SQLiteEventStore

        return SQLiteEventStore(spec.target, create=create, registry=registry, **spec.options)
    from eskit.stores.postgres import PostgresEventStore  # needs eskit[postgres]

    store = PostgresEventStore(spec.target, schema=spec.schema, setup=create, registry=registry)
    if not create:
        error = no_store_error(spec, store.schema_version())
        if error is not None:
            store.close()
            raise error
    return store


def no_store_error(spec: StoreURL, schema_version: int) -> NotAnEskitStoreError | None:
    """The error for a PostgreSQL schema that holds no store (the sync and async opens share it)."""
    if schema_version > 0:
        return None
    return NotAnEskitStoreError(
        f"schema {spec.schema!r} holds no eskit store; `eskit migrate DSN` creates one"
    )
