"""``eskit stats``: how big a store is, as tables or JSON (:func:`eskit.stats`)."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.table import Table

from eskit.cli import _common as c
from eskit.maintenance.stats import DEFAULT_TOP, MAX_TOP, StoreStats, stats

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command(name="stats", cls=c.StoreCommand)(stats_command)


def stats_command(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    top: Annotated[
        int, typer.Option("--top", min=0, max=MAX_TOP, metavar="N",
                          help="How many of the largest streams and categories to list."),
    ] = DEFAULT_TOP,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
    = False,
) -> None:
    """Events, streams, bytes stored, the largest streams and categories, snapshots.

    Reads every event row once (in the database, not in Python): on a large store
    it takes a while. It never writes.
    """
    with c.reported_errors(), c.open_store(db, schema) as store:
        found = stats(store, top=top)
    if as_json:
        c.print_json(found.to_dict())
    else:
        _print(found, db)


def size(n: int | None) -> str:
    """Bytes, exactly and readably: ``1,234,567 (1.2 MiB)``."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n:,}" if unit == "B" else f"{n:,} ({value:.1f} {unit})"


def _figure(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _print(found: StoreStats, db: str) -> None:
    out = c.console()
    summary = Table(title=c.plain(f"size of {c.redact(db)} ({found.system})"))
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for name, value in (
        ("events", _figure(found.events)),
        ("streams", _figure(found.streams)),
        ("payload bytes (data + metadata, as stored)", size(found.payload_bytes)),
        ("bytes per event", _figure(found.bytes_per_event)),
        ("storage bytes (on disk)", size(found.storage_bytes)),
        ("snapshots", _figure(found.snapshots)),
        ("snapshot bytes", size(found.snapshot_bytes)),
        ("compression ratio", _figure(found.compression_ratio)),
        ("archived streams", _figure(found.archived_streams)),
        ("archived events", _figure(found.archived_events)),
        ("deleted streams", _figure(found.deleted_streams)),
        ("events hard deletes removed", _figure(found.deleted_events)),
        ("truncated streams", _figure(found.truncated_streams)),
        ("events truncations removed", _figure(found.truncated_events)),
    ):
        summary.add_row(name, value)
    out.print(summary)
    if found.largest_streams:
        streams = Table(title="largest streams")
        for column in ("stream", "events", "bytes"):
            streams.add_column(column, justify="left" if column == "stream" else "right",
                               overflow="fold")
        for stream in found.largest_streams:
            streams.add_row(c.plain(stream.stream_id), f"{stream.events:,}", size(stream.bytes))
        out.print(streams)
    if found.largest_categories:
        categories = Table(title="largest categories")
        for column in ("category", "streams", "events", "bytes"):
            categories.add_column(column, justify="left" if column == "category" else "right",
                                  overflow="fold")
        for category in found.largest_categories:
            categories.add_row(c.plain(category.category), f"{category.streams:,}",
                               f"{category.events:,}", size(category.bytes))
        out.print(categories)
    out.print("- : not measured by this store or this version of eskit")
