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
from eskit.archive.policy import archive_policies, expired_streams
from eskit.cli import _common as c
from eskit.cli._compact import parse_age
from eskit.maintenance.retention_policy import load_policies

__all__ = ["register"]

_POLICY_HELP = (
    "The retention policy file (eskit retention): "
    '[{"prefix": "sensor-", "max_age": "90d"}, ...]. A stream whose newest event is '
    "older than its policy's max_age (longest matching prefix) is archived; policies "
    "without max_age archive nothing."
)


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
    policy: Annotated[str | None, typer.Option(
        "--policy", metavar="FILE", help=_POLICY_HELP)] = None,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Move whole streams to compressed segment files (SQLite or PostgreSQL).

    A stream's events leave the store only once its segment reads back identical.
    Safe to interrupt and rerun, and to run twice at once: each stream is archived
    once, the other run skips it.
    """
    with c.reported_errors():
        if sum((older_than is not None, bool(stream), policy is not None)) != 1:
            raise c.BadInput("give one of --older-than AGE, --stream ID ... or --policy FILE")
        if category is not None and older_than is None:
            raise c.BadInput("--category goes with --older-than")
        policies = None if policy is None else archive_policies(load_policies(policy))
        with c.open_store(db, schema) as store:
            if policies is not None:
                streams = expired_streams(store, policies)
            elif older_than is None:
                streams = list(stream or [])
            else:
                streams = streams_older_than(store, parse_age(older_than), category=category)
            storage = LocalDirectoryStorage(directory)
            skipped: list[str] = []
            with _bar("archiving") as bar:
                task = bar.add_task("archive", total=len(streams))
                done = archive_streams(store, storage, streams, skipped=skipped,
                                       progress=lambda n, t: bar.update(task, completed=n,
                                                                        total=t))
    moved = len(streams) - len(skipped)
    c.console().print(c.plain(f"{done} events of {moved} streams archived to {directory}"))
    if skipped:
        c.console().print(c.plain(
            f"{len(skipped)} streams skipped: already archived (another run, say), deleted, "
            "empty, or changed while archiving (a rerun takes those)"))


def restore_command(
    directory: Annotated[str, typer.Argument(help="The archive directory.", show_default=False)],
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    stream: Annotated[list[str] | None, typer.Option(
        "--stream", help="Restore only this stream (repeatable).")] = None,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Put archived streams back with their ids, versions, positions and bytes."""
    with c.reported_errors(), c.open_store(db, schema) as store:
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
