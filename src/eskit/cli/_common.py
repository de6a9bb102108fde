"""What every ``eskit`` command group shares: opening stores, errors, display, JSON.

Imported only once typer and rich are known to be installed (see ``eskit.cli.main``).
"""

# No ``from __future__ import annotations``: typer reads the annotations of the
# command functions at run time.

import dataclasses
import importlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn
from uuid import UUID

import orjson
import typer
from rich.console import Console
from rich.markup import escape as _rich_escape
from rich.text import Text
from typer.core import TyperCommand

import eskit
from eskit.cli._exits import ENV_DSN, EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from eskit.config import is_dsn, parse_store_url
from eskit.errors import MissingExtraError

__all__ = [
    "DB_HELP",
    "BadInput",
    "StoreCommand",
    "check_version",
    "console",
    "escape",
    "existing_stream",
    "fail",
    "fields",
    "find_stream",
    "import_object",
    "is_dsn",
    "open_store",
    "open_target",
    "parse_time",
    "plain",
    "open_postgres",
    "print_json",
    "printable",
    "quoted",
    "redact",
    "reported_errors",
    "schema_option",
    "scrub",
    "timestamp",
    "value",
]

DB_HELP = (
    f"An eskit SQLite file or a PostgreSQL DSN (postgresql://... or host=... dbname=...). "
    f"Leave it out to use ${ENV_DSN}, which keeps a password off the command line."
)

schema_option = typer.Option(
    "--schema", metavar="NAME", help="The PostgreSQL schema of the store (DSN only)."
)


# --------------------------------------------------------------------------- errors


class BadInput(Exception):
    """An error in what the user asked for; reported like an eskit error."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``message`` as one red line on stderr (passwords redacted) and exit."""
    # One line, even on a narrow terminal: no wrapping, newlines flattened.
    text = " ".join(_scrub(message).split())
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/] [red]{escape(text)}[/]"
    )
    raise typer.Exit(code)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a red line and exit code 2."""
    try:
        yield
    except (eskit.EskitError, BadInput) as exc:
        # A missing extra is not the user's typo: the CLI cannot run this here.
        fail(str(exc), EXIT_UNAVAILABLE if isinstance(exc, MissingExtraError) else EXIT_BAD_INPUT)
    except OSError as exc:  # an unreadable or unwritable path, say
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


def import_object(spec: str, what: str, accept: Any) -> Any:
    """The object ``MODULE:NAME`` names, if ``accept(obj)``; else :class:`BadInput`."""
    module_name, _, attribute = spec.partition(":")
    found = getattr(import_module(module_name), attribute, None) if attribute else None
    if not accept(found):
        raise BadInput(f"{spec!r} does not name {what} (use MODULE:NAME)")
    return found


def import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise BadInput(f"cannot import {name!r}: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- DSNs

_SECRET_PATTERNS = (
    re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)"),  # keyword form, URL query
    re.compile(r"://[^:/@\s]*:([^@\s]*)@"),  # URL userinfo
)
_secrets: set[str] = set()


def redact(db: str) -> str:
    """``db`` fit to print: a DSN's password replaced by ``***``; a file path unchanged.

    psycopg's own conninfo parser reads the DSN when it is installed, so URL and keyword
    forms, quoting and ``?password=`` parameters are all understood; a DSN with a
    password is then shown in keyword form. Without psycopg (or for a DSN it cannot
    parse) a pattern replaces what looks like a password.
    """
    if not is_dsn(db):
        return db
    _remember_secrets(db)
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
    except ImportError:
        return _scrub(db)
    try:
        params = conninfo_to_dict(db)
    except ProgrammingError:
        return _scrub(db)
    if "password" not in params:
        return db
    params["password"] = "***"
    return make_conninfo("", **params)


def _remember_secrets(db: str) -> None:
    found: set[str] = set()
    for pattern in _SECRET_PATTERNS:
        found.update(m.group(1).strip("'") for m in pattern.finditer(db))
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(db).get("password")
    except Exception:  # psycopg missing, or a DSN it cannot parse: the patterns did it
        password = None
    if password:
        found.add(str(password))
    # A one- or two-letter "password" would blank out ordinary words in a message.
    _secrets.update(s for s in found if len(s) >= 3 and s != "***")


def scrub(text: str) -> str:
    """``text`` fit to print: every password a DSN on this command line held, ``***``."""
    return _scrub(text)


def _scrub(text: str) -> str:
    """``text`` with every known password, and anything shaped like one, as ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(0).replace(m.group(1), "***"), text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class StoreCommand(TyperCommand):
    """A command whose first argument, ``DB``, may be left out to use ``$ESKIT_DSN``.

    When exactly one positional argument is missing and ``ESKIT_DSN`` is set, the
    store named there goes in front: ``eskit events order-7`` reads the store in
    ``ESKIT_DSN``; ``eskit events shop.db order-7`` still reads ``shop.db``.
    """

    # ``ctx`` is typed Any: typer builds on click, or on its own vendored copy of it
    # (typer >= 0.26), so naming click's types here would tie eskit to one of the two.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from_env = os.environ.get(ENV_DSN)
        if from_env and self._store_left_out(ctx, args):
            args = [from_env, *args]
        return super().parse_args(ctx, args)

    def _store_left_out(self, ctx: Any, args: Sequence[str]) -> bool:
        # A dry run of the parser (no conversion, no callbacks): it fills the arguments
        # left to right, so a left-out DB shows as the last required argument missing.
        parser = self.make_parser(ctx)
        try:
            values, _, _ = parser.parse_args(args=list(args))
        except Exception:  # a usage error: let the real parse report it
            return False
        required = [p.name for p in self.params if p.param_type_name == "argument" and p.required]
        given = [name for name in required if values.get(name) is not None]
        return len(given) == len(required) - 1


# --------------------------------------------------------------------------- stores


def open_postgres(dsn: str, schema: str) -> Any:
    """A PostgreSQL store on ``dsn`` that creates nothing (``setup=False``).

    Its password is noted first, so that no error message about it can show it.
    """
    _remember_secrets(dsn)
    postgres = importlib.import_module("eskit.stores.postgres")
    return postgres.PostgresEventStore(dsn, schema=schema, setup=False)


@contextmanager
def open_store(db: str, schema: str = "eskit") -> Iterator[eskit.EventStore]:
    """The store ``db`` names, opened to read: it never creates a file or a table."""
    # eskit.open_store reads the name (path, sqlite:/// or postgresql:// URL, DSN);
    # create=False: inspecting never creates a file, a schema or a table.
    if is_dsn(db):
        _remember_secrets(db)  # before any error message can show the password
    store = eskit.open_store(db, schema=schema, create=False)
    try:
        yield store
    finally:
        store.close()


def open_target(db: str, schema: str = "eskit") -> Any:
    """The projection target (checkpoints, read models, dead letters) in ``db``."""
    from eskit.projections.targets.postgres import PostgresTarget
    from eskit.projections.targets.sqlite import SQLiteTarget

    spec = parse_store_url(db, schema=schema)
    if spec.kind == "postgres":
        _remember_secrets(db)
        return PostgresTarget(spec.target, schema=schema)
    if spec.kind == "memory":
        raise BadInput("memory:// holds no projection state to inspect")
    return SQLiteTarget(spec.target)


def checkpoints_exist(db: str, schema: str = "eskit") -> bool:
    """Whether any projection ever ran against ``db`` (read only: creates nothing).

    Opening a target creates its tables; commands that only report (``status``,
    ``parked``, ``health``) ask this first and open no target where none ran.
    """
    spec = parse_store_url(db, schema=schema)
    if spec.kind == "postgres":
        import psycopg

        _remember_secrets(db)
        try:
            with psycopg.connect(spec.target, connect_timeout=10, autocommit=True) as conn:
                # A parameter, not SQL: the schema name was validated by the store.
                row = conn.execute("SELECT to_regclass(%s)",
                                   (f'"{schema}".eskit_projections',)).fetchone()
        except psycopg.Error as exc:
            raise eskit.StoreError(f"cannot read the checkpoints: {exc}") from exc
        return row is not None and row[0] is not None
    if spec.kind == "memory":
        return False
    uri = Path(spec.target).absolute().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                 "AND name = 'eskit_projections'").fetchone()
    except sqlite3.Error as exc:
        raise eskit.StoreError(f"cannot read the checkpoints: {exc}") from exc
    return found is not None


def find_stream(store: eskit.EventStore, text: str) -> eskit.StreamId | None:
    """The stream ``text`` names, or ``None`` if it has no events.

    Streams are stored under text, a UUID under its canonical form, so the text
    itself is tried first; text that parses as a UUID in another spelling
    (upper case, braces, no hyphens, ``urn:uuid:``) is then read as that UUID.
    """
    candidates: list[eskit.StreamId] = [text]
    try:
        uuid = UUID(text)
    except ValueError:
        pass
    else:
        if str(uuid) == text:  # canonical text: the very same stream, read as a UUID
            candidates = [uuid]
        else:
            candidates.append(uuid)
    for candidate in candidates:
        if store.head_version(candidate) > 0:
            return candidate
    return None


def existing_stream(store: eskit.EventStore, text: str, db: str) -> eskit.StreamId:
    stream_id = find_stream(store, text)
    if stream_id is None:
        raise BadInput(
            f"no stream {text!r} in {quoted(redact(db))}; `eskit streams {redact(db)}` lists them"
        )
    return stream_id


def check_version(stream_id: eskit.StreamId, version: int, head: int) -> int:
    if version > head:
        raise eskit.VersionNotFound(stream_id, version, head)
    return version


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC (the CLI shows every time in UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"--as-of {text!r} is not an ISO 8601 time such as 2025-01-31T12:00:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


# --------------------------------------------------------------------------- display


def console(*, stderr: bool = False) -> Console:
    """The console for normal output (or for progress, on stderr).

    On a terminal rich uses its width. Piped into a file or another program,
    rich would assume 80 columns, too narrow for an event table: use 120 then,
    unless ``COLUMNS`` says otherwise.
    """
    found = Console(stderr=stderr)
    if not found.is_terminal and "COLUMNS" not in os.environ:
        found = Console(width=120, stderr=stderr)
    return found


def escape(text: str) -> str:
    return _rich_escape(text)


def plain(text: str, *, lines: bool = False) -> Text:
    """A table cell shown exactly: no markup, control characters made visible."""
    return Text(printable(text, lines=lines))


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with control characters escaped (except newlines if ``lines``)."""
    # Stored data is arbitrary: it must never send escape sequences to the terminal.
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or (lines and ch == "\n") else ascii(ch)[1:-1] for ch in text
    )


def quoted(path: Path | str) -> str:
    return repr(str(path))


def timestamp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fields(data: dict[str, Any]) -> str:
    """An event's data or metadata, one ``key=value`` per line."""
    return "\n".join(f"{printable(key)}={value(item)}" for key, item in data.items())


def value(item: Any) -> str:
    """A stored value, readably: strings quoted, numbers and ids bare."""
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)
    if item is None or isinstance(item, bool | int | float | Decimal | UUID):
        return str(item)
    if isinstance(item, datetime | date | time):
        return item.isoformat()
    if isinstance(item, Enum):
        return f"{type(item).__name__}.{item.name}"
    if isinstance(item, dict):
        inner = ", ".join(f"{value(k)}: {value(v)}" for k, v in item.items())
        return "{" + inner + "}"
    if isinstance(item, list | tuple | set | frozenset):
        inner = ", ".join(value(v) for v in item)
        return "(" + inner + ")" if isinstance(item, tuple) else "[" + inner + "]"
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        inner = ", ".join(
            f"{f.name}={value(getattr(item, f.name))}" for f in dataclasses.fields(item)
        )
        return f"{type(item).__name__}({inner})"
    return printable(repr(item))


# --------------------------------------------------------------------------- JSON


def _json_default(item: Any) -> Any:
    # orjson writes str, numbers, bool, None, dict, list, tuple, datetime, UUID,
    # enums and dataclasses itself; the rest are made JSON-shaped here.
    if isinstance(item, Decimal):
        return str(item)  # exact: a float would round money
    if isinstance(item, set | frozenset):
        return list(item)
    if isinstance(item, bytes):
        return item.hex()
    return str(item)


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
_JSON_MAX_INT = 2**53
"""Integers beyond ±2**53 are written as strings: JSON readers (jq, JavaScript) read
numbers as doubles and would round them; PostgreSQL positions are about 2**90."""


def _json_safe(value: Any) -> Any:
    # Only reached when orjson refused an integer wider than 64 bits: rebuild the
    # document with every integer a double cannot hold as its digits.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if not -_JSON_MAX_INT < value < _JSON_MAX_INT else value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def print_json(document: Any) -> None:
    """Write ``document`` to stdout as one JSON document (for scripts and ``jq``).

    A document holding an integer wider than 64 bits (a PostgreSQL position) is
    written with every integer beyond ±2**53 as a string of its digits.
    """
    try:
        out = orjson.dumps(document, default=_json_default, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        out = orjson.dumps(_json_safe(document), default=_json_default, option=_JSON_OPTIONS)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
