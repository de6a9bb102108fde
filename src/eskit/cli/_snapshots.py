"""``eskit snapshots prune``: keep each aggregate's newest snapshots, delete the rest."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.progress import Progress

from eskit.cli import _common as c
from eskit.maintenance.pruning import snapshot_store_beside
from eskit.snapshots import DEFAULT_KEEP, DEFAULT_PRUNE_BATCH, PruneProgress

__all__ = ["register"]

group = typer.Typer(help="Snapshots kept beside the events: prune.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``snapshots`` command group to the eskit CLI."""
    app.add_typer(group, name="snapshots")


@group.command(cls=c.StoreCommand)
def prune(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    keep: Annotated[
        int, typer.Option("--keep", min=0, metavar="N",
                          help="Snapshots to keep per aggregate (0: delete them all)."),
    ] = DEFAULT_KEEP,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=1_000_000, metavar="AGGREGATES",
                          help="Aggregates pruned per transaction."),
    ] = DEFAULT_PRUNE_BATCH,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a line.")]
    = False,
) -> None:
    """Delete every aggregate's snapshots below its N newest, in batches, with progress.

    Safe beside running applications and safe to interrupt: what was committed
    stays pruned; run it again to finish. Loading never needs a snapshot.
    """
    with c.reported_errors(), c.open_store(db, schema) as store:
        snapshots = snapshot_store_beside(store)
        with Progress(console=c.console(stderr=True), transient=True) as bar:
            task = bar.add_task("pruning snapshots", total=None)

            def advance(progress: PruneProgress) -> None:
                bar.update(task, completed=progress.aggregates, total=progress.total_aggregates)

            deleted = snapshots.prune(keep, batch_size=batch_size, progress=advance)
    if as_json:
        c.print_json({"deleted": deleted, "keep": keep})
    else:
        c.console().print(
            f"deleted {deleted:,} snapshot{'s' * (deleted != 1)}, kept the newest {keep} "
            "per aggregate"
        )
