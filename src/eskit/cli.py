"""The ``eskit`` command line: look inside event stores, migrate them, run the demo.

::

    eskit demo [--db PATH]                  the bank example, end to end, on a SQLite file
    eskit streams DB                        the streams of a store
    eskit events DB STREAM [--from-version N] [--limit N] [--backwards]
    eskit migrate DSN [--schema NAME]       create or upgrade eskit's PostgreSQL tables
    eskit upcast-check DB [--module M ...]  read every event through today's code
    eskit projections status|run|rebuild|parked|retry|skip DB ...   read models
    eskit state DB STREAM [--version N | --as-of TIME]   a stream's state then
    eskit diff DB STREAM V1 V2              which fields changed between two versions

``DB`` is a SQLite file or a PostgreSQL DSN (``postgresql://...``, with
``--schema`` when it is not ``eskit``).

It needs the ``cli`` extra (typer and rich): ``pip install 'eskit[cli]'``.
``streams``, ``events``, ``state`` and ``diff`` open the store with
``create=False``, so they never create a file, and only read. ``state`` and
``diff`` show a generic state, with no aggregate class: each top-level field of
the events' data with the last value an event gave it, in version order.

Exit codes: ``0`` success; ``1`` the CLI cannot run here (the extra is missing,
or ``eskit demo`` outside a source checkout); ``2`` bad input (a missing file,
a file that is not an eskit store, an unknown stream, a bad option); ``3``
``eskit upcast-check`` found events today's code cannot read. Errors are one red
line on stderr, never a traceback.
"""

# No ``from __future__ import annotations`` here: typer reads the annotations of
# the command functions at run time, and they name ``typer``, which is imported
# only when the CLI runs (the core must import without the cli extra).

import dataclasses
import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from uuid import UUID

import eskit

if TYPE_CHECKING:
    import typer
    from rich.console import Console
    from rich.text import Text

__all__ = ["main", "make_app"]

MISSING_EXTRA = "the eskit CLI needs the cli extra: pip install 'eskit[cli]'"
EXIT_UNAVAILABLE = 1
EXIT_BAD_INPUT = 2
EXIT_CHECK_FAILED = 3
DEFAULT_DEMO_DB = Path("eskit-demo.db")
_DEMO_MODULE = "examples.bank.demo"


def main() -> None:
    """Run the ``eskit`` command line (the ``eskit`` script's entry point)."""
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError:
        print(MISSING_EXTRA, file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    make_app()(prog_name="eskit")


def make_app() -> "typer.Typer":
    """The typer application. Needs typer and rich installed."""
    import typer
    from rich.console import Console
    from rich.table import Table

    app = typer.Typer(
        help="eskit: look inside event stores, or watch event sourcing at work with "
        "`eskit demo`.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )

    @app.command()
    def demo(
        db: Annotated[
            Path,
            typer.Option(
                "--db", metavar="PATH",
                help="The SQLite file to write. A file left by an earlier demo is replaced; "
                "any other file is refused.",
            ),
        ] = DEFAULT_DEMO_DB,
    ) -> None:
        """Run the bank account example on a SQLite file and show what it stored."""
        try:
            module = importlib.import_module(_DEMO_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name not in ("examples", "examples.bank", _DEMO_MODULE):
                raise
            _fail(
                "`eskit demo` runs the worked example in examples/bank, which ships only with "
                "a source checkout of eskit: clone the repository, run "
                "pip install -e '.[cli]' there and run `eskit demo` in it",
                EXIT_UNAVAILABLE,
            )
        run: Callable[[Path, Console], object] = module.run
        with _reported_errors():
            run(db, _console())

    schema_option = typer.Option(
        "--schema", metavar="NAME", help="The PostgreSQL schema of the store (DSN only)."
    )

    @app.command()
    def migrate(
        dsn: Annotated[str, typer.Argument(help="A PostgreSQL DSN: postgresql://...")],
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Create or upgrade eskit's tables in a PostgreSQL schema. Safe to run again."""
        with _reported_errors():
            postgres = _postgres_module()
            store = postgres.PostgresEventStore(dsn, schema=schema, setup=False)
            try:
                before = store.schema_version()
                store.setup()
                after = store.schema_version()
            finally:
                store.close()
        change = "already up to date" if before == after else f"migrated from {before}"
        _console().print(
            _plain(f"schema {schema!r}: eskit schema version {after} ({change})")
        )

    @app.command()
    def streams(
        db: Annotated[
            str, typer.Argument(help="An eskit SQLite file or a PostgreSQL DSN.")
        ],
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """List the streams of an event store: version, last position, last event time."""
        with _reported_errors(), _open_store(db, schema) as store:
            infos = store.list_streams()
        console = _console()
        if not infos:
            console.print(f"no streams in {_quoted(db)}: the store is empty", markup=False)
            return
        table = Table(title=_plain(f"{len(infos)} stream{'s' * (len(infos) != 1)} in {db}"))
        table.add_column("stream id", no_wrap=True)
        table.add_column("version", justify="right", no_wrap=True)
        table.add_column("last position", justify="right")
        table.add_column("last event (UTC)")
        for info in infos:
            table.add_row(
                _plain(str(info.stream_id)), str(info.version), str(info.last_position),
                _timestamp(info.last_timestamp),
            )
        console.print(table)

    @app.command()
    def events(
        db: Annotated[
            str, typer.Argument(help="An eskit SQLite file or a PostgreSQL DSN.")
        ],
        stream: Annotated[
            str,
            typer.Argument(help="The stream id: a UUID (any spelling) or any other text."),
        ],
        from_version: Annotated[
            int,
            typer.Option(
                "--from-version", min=0, metavar="N",
                help="Show the events after version N (exclusive, like read_stream); "
                "0 starts at the first event.",
            ),
        ] = 0,
        limit: Annotated[
            int | None,
            typer.Option("--limit", min=0, metavar="N", help="Show at most N events."),
        ] = None,
        backwards: Annotated[
            bool, typer.Option("--backwards", help="Newest first.")
        ] = False,
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Show the events of one stream: version, position, type, data, metadata, time."""
        with _reported_errors(), _open_store(db, schema) as store:
            stream_id = _find_stream(store, stream)
            if stream_id is None:
                raise _BadInput(
                    f"no stream {stream!r} in {_quoted(db)}; `eskit streams {db}` lists them"
                )
            head = store.head_version(stream_id)
            found = store.read_stream(
                stream_id, from_version, backwards=backwards, limit=limit
            )
        table = Table(title=_plain(
            f"stream {stream_id} in {db}: {len(found)} of {head} event{'s' * (head != 1)}"
            + (", newest first" if backwards else "")
        ))
        table.add_column("version", justify="right", no_wrap=True)
        table.add_column("position", justify="right", no_wrap=True)
        table.add_column("type", overflow="fold")
        table.add_column("data", overflow="fold")
        table.add_column("metadata", overflow="fold")
        table.add_column("timestamp (UTC)", min_width=10)
        for event in found:
            table.add_row(
                str(event.version), str(event.position), _plain(event.event_type),
                _plain(_fields(event.event_data), lines=True),
                _plain(_fields(event.metadata), lines=True),
                _timestamp(event.timestamp),
            )
        _console().print(table)

    @app.command("upcast-check")
    def upcast_check(
        db: Annotated[
            str, typer.Argument(help="An eskit SQLite file or a PostgreSQL DSN.")
        ],
        modules: Annotated[
            list[str] | None,
            typer.Option(
                "--module", "-m", metavar="MODULE",
                help="Import this module first: it declares today's event classes and "
                "upcasters. Repeatable.",
            ),
        ] = None,
        registry: Annotated[
            str | None,
            typer.Option(
                "--registry", metavar="MODULE:NAME",
                help="Use this EventRegistry instead of the default one.",
            ),
        ] = None,
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Read every stored event through today's code; report what fails. Changes nothing."""
        with _reported_errors():
            for name in modules or []:
                _import(name)
            chosen = _registry(registry) if registry else eskit.events.default_registry
            with _open_store(db, schema) as store:
                store.registry = chosen
                report = _check_upcasting(store)
        _print_upcast_report(report, db)
        if report.failures:
            raise typer.Exit(EXIT_CHECK_FAILED)

    @app.command()
    def state(
        db: Annotated[
            str, typer.Argument(help="An eskit SQLite file or a PostgreSQL DSN.")
        ],
        stream: Annotated[
            str,
            typer.Argument(help="The stream id: a UUID (any spelling) or any other text."),
        ],
        version: Annotated[
            int | None,
            typer.Option(
                "--version", min=1, metavar="N",
                help="The state after the event at version N (default: the head).",
            ),
        ] = None,
        as_of: Annotated[
            str | None,
            typer.Option(
                "--as-of", metavar="TIME",
                help="The state after the last event recorded at or before TIME, an ISO "
                "8601 time (2025-01-31T12:00:00Z; no offset means UTC).",
            ),
        ] = None,
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Show a stream's state at a version or time: each data field's last value."""
        if version is not None and as_of is not None:
            _fail("pass --version or --as-of, not both")
        moment = _parse_time(as_of) if as_of is not None else None
        with _reported_errors(), _open_store(db, schema) as store:
            stream_id = _existing_stream(store, stream, db)
            head = store.head_version(stream_id)
            if moment is not None:
                version = store.version_at(stream_id, moment)
                if version == 0:
                    raise _BadInput(
                        f"stream {stream_id} has no events recorded at or before "
                        f"{_timestamp(moment)} UTC"
                    )
            target = head if version is None else _check_version(stream_id, version, head)
            folded = _fold(store.read_stream(stream_id, 0, target))
        where = f" as of {_timestamp(moment)} UTC" if moment is not None else ""
        table = Table(
            title=_plain(f"stream {stream_id} in {db}: state at version {target} of {head}"
                         + where),
            caption="each field's last value in event data, in version order",
        )
        table.add_column("field", overflow="fold")
        table.add_column("value", overflow="fold")
        table.add_column("set at version", justify="right", no_wrap=True)
        table.add_column("by event", overflow="fold")
        for name, (value, at, event_type) in folded.items():
            table.add_row(_plain(name), _plain(_value(value), lines=True), str(at),
                          _plain(event_type))
        _console().print(table)

    @app.command()
    def diff(
        db: Annotated[
            str, typer.Argument(help="An eskit SQLite file or a PostgreSQL DSN.")
        ],
        stream: Annotated[
            str,
            typer.Argument(help="The stream id: a UUID (any spelling) or any other text."),
        ],
        v1: Annotated[
            int, typer.Argument(min=0, metavar="V1", help="The version to compare from.")
        ],
        v2: Annotated[
            int, typer.Argument(min=0, metavar="V2", help="The version to compare to.")
        ],
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Show which fields of a stream's state changed between versions V1 and V2."""
        with _reported_errors(), _open_store(db, schema) as store:
            stream_id = _existing_stream(store, stream, db)
            head = store.head_version(stream_id)
            for v in (v1, v2):
                _check_version(stream_id, v, head)
            events = store.read_stream(stream_id, 0, max(v1, v2))
        before = _fold(e for e in events if e.version <= v1)
        after = _fold(e for e in events if e.version <= v2)
        between = abs(v2 - v1)
        span = f"{between} event{'s' * (between != 1)} apart"
        changes = _changes(before, after)
        console = _console()
        if not changes:
            console.print(_plain(
                f"stream {stream_id} in {db}: no field changed between version {v1} and "
                f"version {v2} ({span})"
            ))
            return
        table = Table(
            title=_plain(f"stream {stream_id} in {db}: version {v1} → {v2} ({span})"),
            caption="fields of the state (each field's last value in event data)",
        )
        table.add_column("field", overflow="fold")
        table.add_column("change", no_wrap=True)
        table.add_column(f"at {v1}", overflow="fold")
        table.add_column(f"at {v2}", overflow="fold")
        table.add_column("set at version", justify="right", no_wrap=True)
        for name, change in changes.items():
            old, new = before.get(name), after.get(name)
            table.add_row(
                _plain(name), change,
                _plain(_value(old[0]), lines=True) if old else "",
                _plain(_value(new[0]), lines=True) if new else "",
                str((new or old or (None, 0))[1]),
            )
        console.print(table)

    from eskit.projections.cli import register as register_projections

    register_projections(app)
    return app


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise _BadInput(f"cannot import {name!r}: {type(exc).__name__}: {exc}") from exc


def _registry(spec: str) -> eskit.EventRegistry:
    module_name, _, attribute = spec.partition(":")
    found = getattr(_import(module_name), attribute, None) if attribute else None
    if not isinstance(found, eskit.EventRegistry):
        raise _BadInput(f"{spec!r} does not name an EventRegistry (use MODULE:NAME)")
    return found


@dataclasses.dataclass
class _UpcastReport:
    read: int = 0
    upcast: int = 0
    typed: int = 0
    untyped: dict[str, int] = dataclasses.field(default_factory=dict)
    deprecated: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)


def _check_upcasting(store: eskit.EventStore) -> _UpcastReport:
    """Decode, upcast and build every event, one at a time, collecting failures."""
    from rich.progress import Progress

    registry = store.registry
    report = _UpcastReport()
    total = sum(info.version for info in store.list_streams())
    after = 0
    page_size = 500
    bad_position: int | None = None
    with Progress(console=_console(stderr=True), transient=True) as progress:
        task = progress.add_task("reading events", total=total)
        while True:
            # After a page fails to decode, go one event at a time up to the bad one,
            # so the good events before it are still checked, then page again.
            size = 1 if bad_position is not None and after < bad_position else page_size
            try:
                page = store._read_all_page(after, size)
            except eskit.DecodingError as exc:
                if exc.position is None:
                    raise
                if size > 1:
                    bad_position = exc.position
                    continue
                report.read += 1
                report.failures.append((str(exc.position), "?", "?", str(exc)))
                progress.advance(task)
                after = exc.position  # carry on after the event that cannot be decoded
                continue
            for stored in page:
                report.read += 1
                _check_event(registry, stored, report)
            progress.advance(task, len(page))
            if len(page) < size:
                return report
            after = page[-1].position or after


def _check_event(registry: eskit.EventRegistry, stored: eskit.Event, report: _UpcastReport) -> None:
    if stored.event_type in registry.rules.deprecated:
        report.deprecated[stored.event_type] = report.deprecated.get(stored.event_type, 0) + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", eskit.EskitDeprecationWarning)  # counted instead
            event = registry.rules.upcast(stored) if registry.rules.active else stored
        if event is not stored:
            report.upcast += 1
        for part in registry.expand(event):
            if registry.class_for(part.event_type) is None:
                report.untyped[part.event_type] = report.untyped.get(part.event_type, 0) + 1
            else:
                registry.to_domain(part)
                report.typed += 1
    except eskit.EskitError as exc:
        report.failures.append((
            str(stored.position), str(stored.aggregate_id), str(stored.version), str(exc),
        ))


def _print_upcast_report(report: _UpcastReport, db: str) -> None:
    from rich.table import Table

    console = _console()
    console.print(_plain(
        f"{report.read} event{'s' * (report.read != 1)} read from {db}: {report.upcast} upcast, "
        f"{report.typed} built as domain events, {len(report.failures)} failed"
    ))
    if report.untyped:
        table = Table(title="types with no registered class (read as plain data)")
        table.add_column("event type", overflow="fold")
        table.add_column("events", justify="right")
        for event_type, count in sorted(report.untyped.items()):
            table.add_row(_plain(event_type), str(count))
        console.print(table)
    for event_type, count in sorted(report.deprecated.items()):
        console.print(_plain(
            f"deprecated type {event_type!r}: {count} event(s)"
        ))
    if report.failures:
        table = Table(title=f"{len(report.failures)} event(s) today's code cannot read")
        for column in ("position", "stream", "version", "error"):
            table.add_column(column, overflow="fold")
        for row in report.failures[:200]:
            table.add_row(*(_plain(cell) for cell in row))
        console.print(table)
        if len(report.failures) > 200:
            console.print(f"... and {len(report.failures) - 200} more", markup=False)


# --------------------------------------------------------------------------- errors


class _BadInput(Exception):
    """An error in what the user asked for; reported like an eskit error."""


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    import typer
    from rich.console import Console

    # One line, even on a narrow terminal: no wrapping, newlines flattened.
    text = " ".join(message.split())
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/] [red]{_escape(text)}[/]"
    )
    raise typer.Exit(code)


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a red line and exit code 2."""
    try:
        yield
    except (eskit.EskitError, _BadInput) as exc:
        _fail(str(exc))
    except OSError as exc:  # an unreadable or unwritable path, say
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


_DSN_PREFIXES = ("postgresql://", "postgres://")


def _postgres_module() -> Any:
    try:
        return importlib.import_module("eskit.stores.postgres")
    except ImportError as exc:
        raise _BadInput(
            f"PostgreSQL needs the postgres extra: pip install 'eskit[postgres]' ({exc})"
        ) from exc


@contextmanager
def _open_store(db: str, schema: str = "eskit") -> Iterator[eskit.EventStore]:
    # Inspecting never creates anything: create=False for a file, setup=False (and a
    # check that eskit's tables are there) for a database.
    store: eskit.EventStore
    if db.startswith(_DSN_PREFIXES):
        pg_store = _postgres_module().PostgresEventStore(db, schema=schema, setup=False)
        if pg_store.schema_version() == 0:
            pg_store.close()
            raise eskit.NotAnEskitStoreError(
                f"schema {schema!r} holds no eskit store; `eskit migrate DSN` creates one"
            )
        store = pg_store
    else:
        store = eskit.SQLiteEventStore(db, create=False)
    try:
        yield store
    finally:
        store.close()


def _find_stream(store: eskit.EventStore, text: str) -> eskit.StreamId | None:
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


# --------------------------------------------------------------------------- state and diff

# The CLI has no aggregate classes, so "state" here is generic: the fold of the events'
# data in version order, each top-level field taking the value the latest event that
# names it gave it. It shows what the events say, not what an aggregate computes from
# them (a balance is not summed; `amount` is the last amount).
Folded = dict[str, tuple[Any, int, str]]


def _fold(events: Iterable[eskit.Event]) -> Folded:
    """Each event-data field's last value, with the version and type of the event that set it."""
    state: Folded = {}
    for event in events:
        for name, value in event.event_data.items():
            state[name] = (value, event.version, event.event_type)
    return state


def _changes(before: Folded, after: Folded) -> dict[str, str]:
    """The fields whose value differs, in the order they appear, as "added"/"removed"/"changed"."""
    from eskit import codec

    changes: dict[str, str] = {}
    for name in {**before, **after}:
        if name not in before:
            changes[name] = "added"
        elif name not in after:
            changes[name] = "removed"
        elif codec.encode(before[name][0]) != codec.encode(after[name][0]):
            # Compared as canonical encodings: Decimal('NaN') is not equal to itself.
            changes[name] = "changed"
    return changes


def _existing_stream(store: eskit.EventStore, text: str, db: str) -> eskit.StreamId:
    stream_id = _find_stream(store, text)
    if stream_id is None:
        raise _BadInput(f"no stream {text!r} in {_quoted(db)}; `eskit streams {db}` lists them")
    return stream_id


def _check_version(stream_id: eskit.StreamId, version: int, head: int) -> int:
    if version > head:
        raise eskit.VersionNotFound(stream_id, version, head)
    return version


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC (the CLI shows every time in UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        _fail(f"--as-of {text!r} is not an ISO 8601 time such as 2025-01-31T12:00:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


# --------------------------------------------------------------------------- display


def _console(*, stderr: bool = False) -> "Console":
    """The console for normal output (or for progress, on stderr).

    On a terminal rich uses its width. Piped into a file or another program,
    rich would assume 80 columns, too narrow for an event table: use 120 then,
    unless ``COLUMNS`` says otherwise.
    """
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120, stderr=stderr)
    return console


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _plain(text: str, *, lines: bool = False) -> "Text":
    """A table cell shown exactly: no markup, control characters made visible."""
    from rich.text import Text

    return Text(_printable(text, lines=lines))


def _printable(text: str, *, lines: bool = False) -> str:
    """``text`` with control characters escaped (except newlines if ``lines``)."""
    # Stored data is arbitrary: it must never send escape sequences to the terminal.
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or (lines and ch == "\n") else ascii(ch)[1:-1] for ch in text
    )


def _quoted(path: Path | str) -> str:
    return repr(str(path))


def _timestamp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _fields(data: dict[str, Any]) -> str:
    """An event's data or metadata, one ``key=value`` per line."""
    return "\n".join(f"{_printable(key)}={_value(value)}" for key, value in data.items())


def _value(value: Any) -> str:
    """A stored value, readably: strings quoted, numbers and ids bare."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float | Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, dict):
        inner = ", ".join(f"{_value(k)}: {_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list | tuple | set | frozenset):
        inner = ", ".join(_value(v) for v in value)
        return "(" + inner + ")" if isinstance(value, tuple) else "[" + inner + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(
            f"{f.name}={_value(getattr(value, f.name))}" for f in dataclasses.fields(value)
        )
        return f"{type(value).__name__}({inner})"
    return _printable(repr(value))


if __name__ == "__main__":
    main()
