"""``eskit archive`` / ``eskit restore``: move old streams to segment files and back."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from eskit.archive import (
    LocalDirectoryStorage,
    archive_streams,
    restore_streams,
    streams_older_than,
    verify,
)
from eskit.cli import _common as c
from eskit.cli._compact import parse_age

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("archive", cls=c.StoreCommand)(archive_command)
    app.command("restore")(restore_command)
    app.command("archive-verify")(verify_command)


def _bar(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                    console=c.console(stderr=True), transient=True)


def archive_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    directory: Annotated[str, typer.Argument(help="The archive directory.", show_default=False)],
    older_than: Annotated[str | None, typer.Option(
        "--older-than", metavar="AGE", help="Streams whose newest event is older (90d).")] = None,
    category: Annotated[str | None, typer.Option(
        "--category", help="With --older-than: only streams CATEGORY-...")] = None,
    stream: Annotated[list[str] | None, typer.Option(
        "--stream", help="A closed stream to archive (repeatable).")] = None,
) -> None:
    """Move whole streams to compressed segment files. Safe to interrupt and rerun."""
    with c.reported_errors():
        if (older_than is None) == (not stream):
            raise c.BadInput("give either --older-than AGE or --stream ID ...")
        with c.open_store(db) as store:
            streams = list(stream or []) if older_than is None else streams_older_than(
                store, parse_age(older_than), category=category)
            storage = LocalDirectoryStorage(directory)
            with _bar("archiving") as bar:
                task = bar.add_task("archive", total=len(streams))
                done = archive_streams(store, storage, streams, progress=lambda n, t:
                                       bar.update(task, completed=n, total=t))
    c.console().print(c.plain(f"{done} events of {len(streams)} streams archived to {directory}"))


def restore_command(
    directory: Annotated[str, typer.Argument(help="The archive directory.", show_default=False)],
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    stream: Annotated[list[str] | None, typer.Option(
        "--stream", help="Restore only this stream (repeatable).")] = None,
) -> None:
    """Put archived streams back with their ids, versions, positions and bytes."""
    with c.reported_errors(), c.open_store(db) as store:
        storage = LocalDirectoryStorage(directory, create=False)
        with _bar("restoring") as bar:
            task = bar.add_task("restore", total=None)
            done = restore_streams(store, storage, stream or None, progress=lambda n, t:
                                   bar.update(task, completed=n, total=t))
    c.console().print(c.plain(f"{done} events restored from {directory}"))


def verify_command(
    directory: Annotated[str, typer.Argument(help="The archive directory.", show_default=False)],
) -> None:
    """Check every segment against its manifest's sha256 and event count."""
    with c.reported_errors():
        problems = verify(LocalDirectoryStorage(directory, create=False))
    for problem in problems:
        c.console(stderr=True).print(c.plain(problem))
    if problems:
        raise typer.Exit(1)
    c.console().print(c.plain(f"{directory}: every segment matches its manifest"))
