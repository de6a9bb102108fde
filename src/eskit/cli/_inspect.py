"""``eskit streams`` and ``eskit events``: look inside a store. Both only read."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated, Any

import typer
from rich.table import Table

import eskit
from eskit.cli import _common as c

__all__ = ["register"]

json_option = typer.Option("--json", help="Print JSON instead of a table (for scripts).")


def register(app: typer.Typer) -> None:
    app.command(cls=c.StoreCommand)(streams)
    app.command(cls=c.StoreCommand)(events)


def streams(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, metavar="N", help="Show at most N streams."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            "--after", metavar="STREAM",
            help="Start after this stream (the last one a previous page showed).",
        ),
    ] = None,
    as_json: Annotated[bool, json_option] = False,
) -> None:
    """List the streams of an event store: version, last position, last event time.

    Streams come in the order of their first event; --limit and --after page through
    them.
    """
    with c.reported_errors(), c.open_store(db, schema) as store:
        infos = store.list_streams()
        total = len(infos)
        if after is not None:
            keys = [str(info.stream_id) for info in infos]
            if after not in keys:
                raise c.BadInput(f"--after {after!r}: no such stream in {c.quoted(c.redact(db))}")
            infos = infos[keys.index(after) + 1:]
        more = limit is not None and len(infos) > limit
        page = infos[:limit] if limit is not None else infos
    if as_json:
        c.print_json([_stream_json(info) for info in page])
        return
    out = c.console()
    if not total:
        out.print(f"no streams in {c.quoted(c.redact(db))}: the store is empty", markup=False)
        return
    counted = f"{len(page)} of {total}" if len(page) != total else str(total)
    table = Table(title=c.plain(f"{counted} stream{'s' * (total != 1)} in {c.redact(db)}"))
    table.add_column("stream id", no_wrap=True)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("last position", justify="right")
    table.add_column("last event (UTC)")
    for info in page:
        table.add_row(
            c.plain(str(info.stream_id)), str(info.version), str(info.last_position),
            c.timestamp(info.last_timestamp),
        )
    out.print(table)
    if more:
        out.print(c.plain(f"more: --after {page[-1].stream_id}"))


def _stream_json(info: eskit.StreamInfo) -> dict[str, Any]:
    return {
        "stream_id": str(info.stream_id), "version": info.version,
        "last_position": info.last_position, "last_timestamp": info.last_timestamp,
    }


def events(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    stream: Annotated[
        str,
        typer.Argument(help="The stream id: a UUID (any spelling) or any other text."),
    ],
    from_version: Annotated[
        int,
        typer.Option(
            "--from-version", min=0, metavar="N",
            help="Show the events after version N (exclusive, like read_stream); "
            "0 starts at the first event.",
        ),
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=0, metavar="N", help="Show at most N events."),
    ] = None,
    backwards: Annotated[bool, typer.Option("--backwards", help="Newest first.")] = False,
    schema: Annotated[str, c.schema_option] = "eskit",
    as_json: Annotated[bool, json_option] = False,
) -> None:
    """Show the events of one stream: version, position, type, schema, data, metadata, time."""
    with c.reported_errors(), c.open_store(db, schema) as store:
        stream_id = c.existing_stream(store, stream, db)
        head = store.head_version(stream_id)
        found = store.read_stream(stream_id, from_version, backwards=backwards, limit=limit)
    if as_json:
        c.print_json([_event_json(event) for event in found])
        return
    table = Table(title=c.plain(
        f"stream {stream_id} in {c.redact(db)}: {len(found)} of {head} event{'s' * (head != 1)}"
        + (", newest first" if backwards else "")
    ))
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("position", justify="right", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("schema", justify="right", no_wrap=True)
    table.add_column("data", overflow="fold")
    table.add_column("metadata", overflow="fold")
    table.add_column("timestamp (UTC)", min_width=10)
    for event in found:
        table.add_row(
            str(event.version), str(event.position), c.plain(event.event_type),
            str(event.schema_version),
            c.plain(c.fields(event.event_data), lines=True),
            c.plain(c.fields(event.metadata), lines=True),
            c.timestamp(event.timestamp),
        )
    c.console().print(table)


def _event_json(event: eskit.Event) -> dict[str, Any]:
    return {
        "stream_id": str(event.aggregate_id), "version": event.version,
        "position": event.position, "event_id": event.event_id,
        "event_type": event.event_type, "schema_version": event.schema_version,
        "data": event.event_data, "metadata": event.metadata, "timestamp": event.timestamp,
    }
