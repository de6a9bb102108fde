"""``eskit retention plan|apply``: delete expired streams and truncate long ones
(eskit.maintenance.retention)."""

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
    'A JSON file: [{"prefix": "sensor-", "max_age": "30d", "hard": true}, '
    '{"prefix": "order-", "max_events": 1000}, ...]. A stream expires max_age after its '
    "newest event; max_events keeps its newest N, truncate_before_version drops the "
    "events below it; the longest matching prefix applies."
)


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True,
                        help="Delete expired streams and truncate long ones by policy.")
    group.command("plan", cls=c.StoreCommand)(plan_command)
    group.command("apply", cls=c.StoreCommand)(apply_command)
    app.add_typer(group, name="retention")


def plan_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    policy: Annotated[str, typer.Option("--policy", metavar="FILE", help=_POLICY_HELP)],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Show what the policies would remove, per category: expired streams to delete,
    and streams to truncate (streams, events, bytes of each).

    Reads only: nothing is written.
    """
    with c.reported_errors():
        policies = load_policies(policy)
        with c.open_store(db, schema) as store:
            plan = plan_retention(store, policies)
    table = Table(title=c.plain(f"retention plan for {c.redact(db)} (nothing written)"))
    for name in ("category", "rule", "delete", "streams", "events", "bytes",
                 "truncate streams", "truncate events", "truncate bytes"):
        table.add_column(name, justify="left" if name in ("category", "rule", "delete")
                         else "right")
    for category in plan.categories:
        p = category.policy
        rules = [f"max age {p.max_age}" if p.max_age is not None else "",
                 f"keep {p.max_events}" if p.max_events is not None else "",
                 f"before v{p.truncate_before_version}"
                 if p.truncate_before_version is not None else ""]
        table.add_row(
            c.plain(p.prefix), c.plain(", ".join(r for r in rules if r)),
            "hard" if p.hard else "soft",
            str(category.streams), str(category.events), str(category.bytes),
            str(category.truncated_streams), str(category.truncated_events),
            str(category.truncated_bytes),
        )
    c.console().print(table)


def apply_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    policy: Annotated[str, typer.Option("--policy", metavar="FILE", help=_POLICY_HELP)],
    batch: Annotated[
        int,
        typer.Option("--batch", metavar="N", min=1, max=MAX_BATCH,
                     help="Streams between progress reports (each change commits alone)."),
    ] = DEFAULT_BATCH,
    force: Annotated[
        bool,
        typer.Option("--force", help="Truncate streams that have no snapshot at the cut "
                     "too: their aggregates can then no longer be loaded."),
    ] = False,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Delete the expired streams and truncate the long ones. Safe to interrupt and rerun.

    Each change is its own transaction, expecting the version the plan saw: a
    stream that received an event meanwhile is skipped. A stream without a
    snapshot at or above its cut is not truncated (counted as refused) unless
    --force; take snapshots from the application (apply_retention with a
    repository does).
    """
    with c.reported_errors():
        policies = load_policies(policy)
        with c.open_store(db, schema) as store:
            columns = (
                TextColumn("applying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            )
            with Progress(*columns, console=c.console(stderr=True), transient=True) as bar:
                task = bar.add_task("retention", total=None)
                result = apply_retention(
                    store, policies, batch_size=batch, force=force,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    c.console().print(c.plain(
        f"{result.deleted_streams} streams ({result.deleted_events} events) deleted in "
        f"{result.batches} batches; {result.truncated_streams} streams truncated "
        f"({result.truncated_events} events removed); {result.skipped} skipped (new events "
        f"since the plan); {result.refused} not truncated (no snapshot at the cut; --force)"
    ))
