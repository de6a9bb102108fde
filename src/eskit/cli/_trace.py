"""``eskit trace``: one conversation's events, across streams, as a causation tree."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from eskit.cli import _common as c
from eskit.context import ACTOR
from eskit.conversation import causation_tree, conversation

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command(cls=c.StoreCommand)(trace)


def trace(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    conversation_id: Annotated[str, typer.Argument(
        metavar="ID", help="A correlation id, or the id of the event that started it.",
        show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines of the events.")
                       ] = False,
) -> None:
    """Show every event of one conversation (its correlation id), whatever its stream,
    each under the event that caused it. Reads the whole log once, with progress."""
    with c.reported_errors(), c.open_store(db, schema) as store:
        head = store.head_position()
        columns = (TextColumn("reading the log"), BarColumn())
        with Progress(*columns, console=c.console(stderr=True), transient=True) as bar:
            task = bar.add_task("read", total=head or 1)
            found = conversation(
                store.read_all(), conversation_id,
                on_event=lambda e: bar.update(task, completed=e.position or 0))
    if as_json:
        c.print_json([{"depth": depth, "stream_id": str(e.aggregate_id), "version": e.version,
                       "position": e.position, "event_id": e.event_id,
                       "event_type": e.event_type, "metadata": e.metadata,
                       "timestamp": e.timestamp} for depth, e in causation_tree(found)])
        return
    if not found:
        c.console().print(f"no events of conversation {conversation_id!r} in "
                          f"{c.quoted(c.redact(db))}", markup=False)
        return
    table = Table(title=c.plain(f"conversation {conversation_id} in {c.redact(db)}: "
                                f"{len(found)} event{'s' * (len(found) != 1)}"))
    for column in ("event", "stream", "version", "position", "actor", "timestamp (UTC)"):
        table.add_column(column, overflow="fold")
    for depth, event in causation_tree(found):
        table.add_row(c.plain("  " * depth + ("└ " if depth else "") + event.event_type),
                      c.plain(str(event.aggregate_id)), str(event.version),
                      str(event.position), c.plain(str(event.metadata.get(ACTOR, ""))),
                      c.timestamp(event.timestamp))
    c.console().print(table)
