"""``eskit blobs collect``: delete blobs no stored event names (eskit.blobs.collect)."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from eskit.archive import LocalDirectoryStorage
from eskit.blobs import DirectoryBlobStore, collect_blobs
from eskit.blobs.collect import DEFAULT_GRACE, MIN_GRACE
from eskit.cli import _common as c
from eskit.cli._compact import parse_age

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    group = typer.Typer(no_args_is_help=True, help="Large payloads stored beside the events.")
    group.command("collect", cls=c.StoreCommand)(collect_command)
    app.add_typer(group, name="blobs")


def _blob_store(store: Any, directory: str | None) -> Any:
    if directory is not None:
        if not Path(directory).is_dir():
            raise c.BadInput(f"--blobs {directory!r}: no such directory")
        return DirectoryBlobStore(directory)
    if store.db_system == "sqlite":
        from eskit.blobs import SQLiteBlobStore

        return SQLiteBlobStore(store)
    from eskit.blobs import PostgresBlobStore

    return PostgresBlobStore(store)


def collect_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    blobs: Annotated[str | None, typer.Option(
        "--blobs", metavar="DIR",
        help="The blobs are in this directory (DirectoryBlobStore); by default in the "
             "store's own eskit_blobs table.")] = None,
    grace: Annotated[str, typer.Option(
        "--grace", metavar="AGE",
        help=f"Keep blobs put within AGE even if nothing names them yet (at least "
             f"{int(MIN_GRACE.total_seconds() // 60)}m).")] = f"{DEFAULT_GRACE.days}d",
    archive: Annotated[list[str] | None, typer.Option(
        "--archive", metavar="DIR",
        help="An archive directory of this store's archived streams (repeatable): "
             "their events' blobs are kept.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Report what would be deleted; delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Delete the blobs that no stored event, snapshot or archived event names.

    Searches every stored payload (soft-deleted streams included) for blob
    references, then deletes the unnamed blobs not put within --grace. Safe while
    writers run, to interrupt and rerun, and to run twice at once.
    """
    with c.reported_errors():
        age = parse_age(grace, "--grace")
        storages = [LocalDirectoryStorage(d, create=False) for d in archive or []]
        with c.open_store(db, schema) as store, _blob_store(store, blobs) as blob_store:
            columns = (SpinnerColumn(), TextColumn("searching payloads: {task.completed:,}"))
            with Progress(*columns, console=c.console(stderr=True), transient=True) as bar:
                task = bar.add_task("collect", total=None)
                result = collect_blobs(
                    store, blob_store, grace=age, archives=storages, dry_run=dry_run,
                    progress=lambda rows: bar.advance(task, rows))
    if as_json:
        c.print_json(result.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    c.console().print(c.plain(
        f"{result.blobs} blobs ({result.blob_bytes} bytes): {result.referenced} named, "
        f"{result.young} put within {grace}, {verb} {len(result.removed)} "
        f"({result.removed_bytes} bytes); {result.payloads} payloads searched"))
