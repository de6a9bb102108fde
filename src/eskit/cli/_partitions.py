"""``eskit partitions enable|list|ensure|drop-empty``: a PostgreSQL store's partitioned
events table (eskit.maintenance.partitioning)."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.table import Table

from eskit.cli import _common as c
from eskit.maintenance.partitioning import (
    MAX_PARTITION_SIZE,
    drop_empty_partitions,
    ensure_partitions,
    list_partitions,
    partition_events,
)

__all__ = ["register"]

_AHEAD_HELP = "Partitions to keep made ahead of the newest position."


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True,
                        help="Partition a PostgreSQL store's events table by position ranges.")
    group.command("enable", cls=c.StoreCommand)(enable_command)
    group.command("list", cls=c.StoreCommand)(list_command)
    group.command("ensure", cls=c.StoreCommand)(ensure_command)
    group.command("drop-empty", cls=c.StoreCommand)(drop_empty_command)
    app.add_typer(group, name="partitions")


def enable_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    size: Annotated[int, typer.Option("--size", metavar="N", min=1, max=MAX_PARTITION_SIZE,
                                      help="Positions per partition.")] = 1_000_000,
    ahead: Annotated[int, typer.Option("--ahead", metavar="N", min=0, max=1000,
                                       help=_AHEAD_HELP)] = 4,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Move the events table to the partitioned layout, with every event it holds.

    One transaction: appends and reads wait until it commits; interrupted, it
    leaves the store as it was. Run once per store.
    """
    with (c.reported_errors(), c.open_store(db, schema) as store,
          c.console(stderr=True).status("partitioning") as status):
        copied = partition_events(store, size=size, ahead=ahead,
                                  progress=lambda step: status.update(step))
    c.console().print(c.plain(f"events table partitioned by {size} positions: "
                              f"{copied} events moved"))


def list_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Show the partitions: position range, estimated rows and bytes on disk."""
    with c.reported_errors(), c.open_store(db, schema) as store:
        partitions = list_partitions(store)
    if not partitions:
        c.console().print(c.plain("the events table is not partitioned"))
        return
    table = Table(title=c.plain(f"partitions of {c.redact(db)}"))
    for name in ("partition", "positions", "rows (estimate)", "bytes"):
        table.add_column(name, justify="left" if name in ("partition", "positions") else "right")
    for p in partitions:
        where = "the rest" if p.first_seq is None else f"{p.first_seq} to {p.end_seq}"
        table.add_row(c.plain(p.name), where, str(p.estimated_rows), str(p.bytes))
    c.console().print(table)


def ensure_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    ahead: Annotated[int, typer.Option("--ahead", metavar="N", min=0, max=1000,
                                       help=_AHEAD_HELP)] = 4,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Make the partitions ahead of the newest position (run it from cron)."""
    with c.reported_errors(), c.open_store(db, schema) as store:
        made = ensure_partitions(store, ahead=ahead)
    c.console().print(c.plain(f"made {len(made)} partitions" + (
        f": {', '.join(made)}" if made else "")))


def drop_empty_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Drop the partitions that retention, deletion or archiving left empty."""
    with c.reported_errors(), c.open_store(db, schema) as store:
        dropped = drop_empty_partitions(store)
    c.console().print(c.plain(f"dropped {len(dropped)} empty partitions" + (
        f": {', '.join(dropped)}" if dropped else "")))
