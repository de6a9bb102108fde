"""``eskit retention plan|apply``: delete expired streams (eskit.maintenance.retention)."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from eskit.cli import _common as c
from eskit.maintenance.retention import (
    DEFAULT_BATCH,
    MAX_BATCH,
    apply_retention,
    load_policies,
    plan_retention,
)

__all__ = ["register"]

_POLICY_HELP = (
    'A JSON file: [{"prefix": "sensor-", "max_age": "30d", "hard": true}, ...]. A stream '
    "expires max_age after its newest event; the longest matching prefix applies."
)


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="Delete expired streams by policy.")
    group.command("plan", cls=c.StoreCommand)(plan_command)
    group.command("apply", cls=c.StoreCommand)(apply_command)
    app.add_typer(group, name="retention")


def plan_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    policy: Annotated[str, typer.Option("--policy", metavar="FILE", help=_POLICY_HELP)],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Show what the policies would delete, per category (streams, events, bytes).

    Reads only: nothing is written.
    """
    with c.reported_errors():
        policies = load_policies(policy)
        with c.open_store(db, schema) as store:
            plan = plan_retention(store, policies)
    table = Table(title=c.plain(f"retention plan for {c.redact(db)} (nothing written)"))
    for name in ("category", "max age", "delete", "streams", "events", "bytes"):
        table.add_column(name, justify="left" if name in ("category", "delete") else "right")
    for category in plan.categories:
        p = category.policy
        table.add_row(
            c.plain(p.prefix), str(p.max_age), "hard" if p.hard else "soft",
            str(category.streams), str(category.events), str(category.bytes),
        )
    c.console().print(table)


def apply_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    policy: Annotated[str, typer.Option("--policy", metavar="FILE", help=_POLICY_HELP)],
    batch: Annotated[
        int,
        typer.Option("--batch", metavar="N", min=1, max=MAX_BATCH,
                     help="Streams between progress reports (each delete commits alone)."),
    ] = DEFAULT_BATCH,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Delete the expired streams. Safe to interrupt and rerun.

    Each stream is deleted in its own transaction, expecting the version the plan
    saw: a stream that received an event meanwhile is skipped.
    """
    with c.reported_errors():
        policies = load_policies(policy)
        with c.open_store(db, schema) as store:
            columns = (
                TextColumn("deleting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            )
            with Progress(*columns, console=c.console(stderr=True), transient=True) as bar:
                task = bar.add_task("retention", total=None)
                result = apply_retention(
                    store, policies, batch_size=batch,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    c.console().print(c.plain(
        f"{result.deleted_streams} streams ({result.deleted_events} events) deleted in "
        f"{result.batches} batches; {result.skipped} skipped (new events since the plan)"
    ))
