"""``eskit verify``: check every event's hash chain (see eskit.stores.verify)."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from eskit.cli import _common as c
from eskit.cli._exits import EXIT_CHECK_FAILED
from eskit.stores.verify import parse_checkpoint, verify_store

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("verify", cls=c.StoreCommand)(verify_command)


def verify_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    print_head: Annotated[
        bool,
        typer.Option(
            "--print-head",
            help="Print a checkpoint of the store's head (POSITION:DIGEST) to keep "
                 "somewhere the database's writers cannot change.",
        ),
    ] = False,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head", metavar="CHECKPOINT",
            help="Fail unless the store still holds the head a --print-head recorded.",
        ),
    ] = None,
    batch: Annotated[
        int,
        typer.Option("--batch", metavar="N", min=1, max=100_000,
                     help="Events read per query (memory stays bounded by it)."),
    ] = 1000,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Check that no stored event was altered, removed, inserted or reordered.

    Exits 3 if it finds any, naming stream and version; truncation, retention,
    hard deletes, archives, compaction and erasure are recorded and verify clean.
    """
    with c.reported_errors():
        if expect_head is not None:
            parse_checkpoint(expect_head)  # refused before the store is opened
        with c.open_store(db, schema) as store:
            as_of = store.head_position() if print_head else None
            columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn())
            with Progress(*columns, console=c.console(stderr=True), transient=True) as bar:
                task = bar.add_task("verify", total=None)
                report = verify_store(
                    store, batch_size=batch, as_of=as_of, expect_checkpoint=expect_head,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    out = c.console()
    for problem in report.problems:
        out.print(c.plain(str(problem)))
    if report.problem_count > len(report.problems):
        out.print(c.plain(f"... and {report.problem_count - len(report.problems)} more"))
    if report.checkpoint_ok is False:
        out.print(c.plain(f"checkpoint mismatch: the store's head as of that position is "
                          f"{report.checkpoint}, not {expect_head}"))
    notes = []
    if report.unchained:
        notes.append(f"{report.unchained} unchained (stored before hash chains)")
    if report.truncated_streams:
        notes.append(f"{report.truncated_streams} truncated streams")
    if report.checkpoint_ok:
        notes.append("checkpoint matches")
    summary = f"{report.events} events in {report.streams} streams: " + (
        "clean" if report.ok else f"{report.problem_count} problems")
    out.print(c.plain(summary + (f" ({', '.join(notes)})" if notes else "")))
    if print_head and report.checkpoint is not None:
        out.print(c.plain(report.checkpoint))
    if not report.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)
