"""``eskit migrate`` and ``eskit upcast-check``: the store's schema and the events' schemas."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import dataclasses
import warnings
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

import eskit
from eskit.cli import _common as c
from eskit.cli._exits import EXIT_CHECK_FAILED, EXIT_CHECK_INCOMPLETE

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command(cls=c.StoreCommand)(migrate)
    app.command("upcast-check", cls=c.StoreCommand)(upcast_check)


def migrate(
    dsn: Annotated[
        str,
        typer.Argument(
            metavar="DSN", show_default=False,
            help="A PostgreSQL DSN (postgresql://... or host=... dbname=...); leave it out "
            "to use $ESKIT_DSN.",
        ),
    ],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Create or upgrade eskit's tables in a PostgreSQL schema. Safe to run again."""
    with c.reported_errors():
        if not c.is_dsn(dsn):
            raise c.BadInput(
                f"{c.quoted(dsn)} is not a PostgreSQL DSN; SQLite files need no migration"
            )
        store = c.open_postgres(dsn, schema)
        try:
            before = store.schema_version()
            store.setup()
            after = store.schema_version()
        finally:
            store.close()
    change = "already up to date" if before == after else f"migrated from {before}"
    c.console().print(c.plain(f"schema {schema!r}: eskit schema version {after} ({change})"))


def upcast_check(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
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
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Read every stored event through today's code; report what fails. Changes nothing.

    Name the code with --module or --registry: without either, only decoding can be
    checked, and the command says so and exits with status 4.
    """
    with c.reported_errors():
        for name in modules or []:
            c.import_module(name)
        chosen = (
            c.import_object(registry, "an EventRegistry",
                            lambda found: isinstance(found, eskit.EventRegistry))
            if registry else eskit.events.default_registry
        )
        with c.open_store(db, schema) as store:
            store.registry = chosen
            report = check_upcasting(store)
    told = bool(modules) or registry is not None
    _print_report(report, db, told)
    if report.failures:
        raise typer.Exit(EXIT_CHECK_FAILED)
    if report.untyped and not told:
        raise typer.Exit(EXIT_CHECK_INCOMPLETE)


@dataclasses.dataclass
class UpcastReport:
    read: int = 0
    upcast: int = 0
    typed: int = 0
    untyped: dict[str, int] = dataclasses.field(default_factory=dict)
    deprecated: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)


def check_upcasting(store: eskit.EventStore) -> UpcastReport:
    """Decode, upcast and build every event, one at a time, collecting failures."""
    registry = store.registry
    report = UpcastReport()
    total = sum(info.version for info in store.list_streams())
    after = 0
    page_size = 500
    bad_position: int | None = None
    with Progress(console=c.console(stderr=True), transient=True) as progress:
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


def _check_event(registry: eskit.EventRegistry, stored: eskit.Event, report: UpcastReport) -> None:
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


def _print_report(report: UpcastReport, db: str, told: bool) -> None:
    out = c.console()
    events = f"{report.read} event{'s' * (report.read != 1)} read from {c.redact(db)}"
    if report.untyped and not told:
        # Without the application's classes and upcasters there is nothing to check
        # them against: "0 failed" would be a claim the command cannot make.
        untyped = sum(report.untyped.values())
        out.print(c.plain(
            f"{events}: "
            + (f"{len(report.failures)} failed to decode" if report.failures
               else "every one decoded")
            + f"; {untyped} of "
            f"{report.read} not checked against today's code: no event classes or "
            "upcasters were named. Pass --module (the modules that declare them) or "
            "--registry MODULE:NAME."
        ))
    else:
        out.print(c.plain(
            f"{events}: {report.upcast} upcast, {report.typed} built as domain events, "
            f"{len(report.failures)} failed"
        ))
    if report.untyped:
        table = Table(title="types with no registered class (read as plain data)")
        table.add_column("event type", overflow="fold")
        table.add_column("events", justify="right")
        for event_type, count in sorted(report.untyped.items()):
            table.add_row(c.plain(event_type), str(count))
        out.print(table)
    for event_type, count in sorted(report.deprecated.items()):
        out.print(c.plain(f"deprecated type {event_type!r}: {count} event(s)"))
    if report.failures:
        table = Table(title=f"{len(report.failures)} event(s) today's code cannot read")
        for column in ("position", "stream", "version", "error"):
            table.add_column(column, overflow="fold")
        for row in report.failures[:200]:
            table.add_row(*(c.plain(cell) for cell in row))
        out.print(table)
        if len(report.failures) > 200:
            out.print(f"... and {len(report.failures) - 200} more", markup=False)
