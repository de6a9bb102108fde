"""``eskit compact``: compress old events stored uncompressed (see eskit.compact)."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from eskit.cli import _common as c
from eskit.stores.compact import DEFAULT_BATCH, MAX_BATCH, compact

__all__ = ["parse_age", "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d{1,9})([smhdw])")


def register(app: typer.Typer) -> None:
    app.command("compact", cls=c.StoreCommand)(compact_command)


def parse_age(text: str, option: str = "--older-than") -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``0s`` as a timedelta; BadInput otherwise."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise c.BadInput(
            f"{option} {text!r}: give a number and a unit (s, m, h, d or w), e.g. 90d"
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def compact_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", metavar="AGE",
            help="Compress events recorded more than AGE ago (90d, 12h, 2w, ...).",
        ),
    ],
    batch: Annotated[
        int,
        typer.Option(
            "--batch", metavar="N", min=1, max=MAX_BATCH,
            help="Events per transaction: a crash loses at most one batch's work.",
        ),
    ] = DEFAULT_BATCH,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Compress old events that were stored uncompressed. Safe to interrupt and rerun.

    Rewrites only each payload's encoding, checked byte for byte after decoding
    before each batch commits; every event reads back identical.
    """
    with c.reported_errors():
        age = parse_age(older_than)
        with c.open_store(db, schema) as store:
            columns = (
                TextColumn("compressing"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=c.console(stderr=True), transient=True) as bar:
                task = bar.add_task("compact", total=None)
                result = compact(
                    store, older_than=age, batch_size=batch,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    saved = result.bytes_before - result.bytes_after
    c.console().print(c.plain(
        f"{result.compressed} of {result.examined} events compressed in {result.batches} "
        f"batches: {result.bytes_before} -> {result.bytes_after} payload bytes "
        f"({saved} saved)"
    ))
