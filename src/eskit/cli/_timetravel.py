"""``eskit state`` and ``eskit diff``: a stream's state at a version or a time.

With ``--app MODULE:CLASS`` the state is the aggregate's own, rebuilt by that class
exactly as ``Repository.get`` does (:mod:`eskit.timetravel` for the diff). Without
it the CLI knows no class, so the state is generic: each top-level field of the
events' data with the last value an event gave it.
"""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from collections.abc import Iterable
from typing import Annotated, Any

import typer
from rich.table import Table

import eskit
from eskit.cli import _common as c
from eskit.timetravel import MISSING, diff_states, state_diff

__all__ = ["register"]

stream_argument = typer.Argument(
    help="The stream id: a UUID (any spelling) or any other text.", show_default=False
)
app_option = typer.Option(
    "--app", metavar="MODULE:CLASS",
    help="The aggregate class: show its real state, rebuilt by its own handlers. "
    "Without it, each event-data field's last value.",
)


def register(app: typer.Typer) -> None:
    app.command(cls=c.StoreCommand)(state)
    app.command(cls=c.StoreCommand)(diff)


def _aggregate_class(spec: str) -> type[eskit.Aggregate]:
    found: type[eskit.Aggregate] = c.import_object(
        spec, "an Aggregate class",
        lambda obj: isinstance(obj, type) and issubclass(obj, eskit.Aggregate),
    )
    return found


def state(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    stream: Annotated[str, stream_argument],
    version: Annotated[
        int | None,
        typer.Option(
            "--version", min=1, metavar="N",
            help="The state after the event at version N (default: the head).",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", metavar="TIME",
            help="The state after the last event recorded at or before TIME, an ISO "
            "8601 time (2025-01-31T12:00:00Z; no offset means UTC).",
        ),
    ] = None,
    app: Annotated[str | None, app_option] = None,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Show a stream's state at a version or time (the aggregate's, with --app)."""
    if version is not None and as_of is not None:
        c.fail("pass --version or --as-of, not both")
    moment = c.parse_time(as_of) if as_of is not None else None
    with c.reported_errors():
        cls = _aggregate_class(app) if app is not None else None
        with c.open_store(db, schema) as store:
            stream_id = c.existing_stream(store, stream, db)
            head = store.head_version(stream_id)
            if moment is not None:
                version = store.version_at(stream_id, moment)
                if version == 0:
                    raise c.BadInput(
                        f"stream {stream_id} has no events recorded at or before "
                        f"{c.timestamp(moment)} UTC"
                    )
            target = head if version is None else c.check_version(stream_id, version, head)
            if cls is not None:
                aggregate = eskit.Repository(store).get(stream_id, cls, version=target)
                fields = aggregate.snapshot_state()
            else:
                folded = fold(store.read_stream(stream_id, 0, target))
    where = f" as of {c.timestamp(moment)} UTC" if moment is not None else ""
    title = c.plain(f"stream {stream_id} in {c.redact(db)}: state at version {target} of {head}"
                    + where)
    if cls is not None:
        table = Table(title=title, caption=f"the state of {cls.__qualname__}")
        table.add_column("field", overflow="fold")
        table.add_column("value", overflow="fold")
        for name, item in fields.items():
            table.add_row(c.plain(name), c.plain(c.value(item), lines=True))
    else:
        table = Table(title=title,
                      caption="each field's last value in event data, in version order")
        table.add_column("field", overflow="fold")
        table.add_column("value", overflow="fold")
        table.add_column("set at version", justify="right", no_wrap=True)
        table.add_column("by event", overflow="fold")
        for name, (item, at, event_type) in folded.items():
            table.add_row(c.plain(name), c.plain(c.value(item), lines=True), str(at),
                          c.plain(event_type))
    c.console().print(table)


def diff(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    stream: Annotated[str, stream_argument],
    v1: Annotated[
        int, typer.Argument(min=0, metavar="V1", help="The version to compare from.")
    ],
    v2: Annotated[int, typer.Argument(min=0, metavar="V2", help="The version to compare to.")],
    app: Annotated[str | None, app_option] = None,
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Show which fields of a stream's state changed between versions V1 and V2."""
    set_at: dict[str, int] = {}
    with c.reported_errors():
        cls = _aggregate_class(app) if app is not None else None
        with c.open_store(db, schema) as store:
            stream_id = c.existing_stream(store, stream, db)
            head = store.head_version(stream_id)
            for v in (v1, v2):
                c.check_version(stream_id, v, head)
            if cls is not None:
                changes = state_diff(eskit.Repository(store), stream_id, cls, v1, v2).changes
            else:
                events = store.read_stream(stream_id, 0, max(v1, v2))
                before = fold(e for e in events if e.version <= v1)
                after = fold(e for e in events if e.version <= v2)
                changes = diff_states(_values(before), _values(after))
                set_at = {name: (after.get(name) or before[name])[1] for name in
                          (change.name for change in changes)}
    between = abs(v2 - v1)
    span = f"{between} event{'s' * (between != 1)} apart"
    out = c.console()
    if not changes:
        out.print(c.plain(
            f"stream {stream_id} in {c.redact(db)}: no field changed between version {v1} and "
            f"version {v2} ({span})"
        ))
        return
    table = Table(
        title=c.plain(f"stream {stream_id} in {c.redact(db)}: version {v1} → {v2} ({span})"),
        caption=f"fields of the state of {cls.__qualname__}" if cls is not None
        else "fields of the state (each field's last value in event data)",
    )
    table.add_column("field", overflow="fold")
    table.add_column("change", no_wrap=True)
    table.add_column(f"at {v1}", overflow="fold")
    table.add_column(f"at {v2}", overflow="fold")
    if cls is None:
        table.add_column("set at version", justify="right", no_wrap=True)
    for change in changes:
        row = [c.plain(change.name), change.kind, _cell(change.before), _cell(change.after)]
        if cls is None:
            row.append(str(set_at[change.name]))
        table.add_row(*row)
    out.print(table)


def _cell(item: Any) -> Any:
    return "" if item is MISSING else c.plain(c.value(item), lines=True)


# The generic state: the fold of the events' data in version order, each top-level
# field taking the value the latest event that names it gave it. It shows what the
# events say, not what an aggregate computes from them (a balance is not summed;
# `amount` is the last amount); --app shows the latter.
Folded = dict[str, tuple[Any, int, str]]


def fold(events: Iterable[eskit.Event]) -> Folded:
    """Each event-data field's last value, with the version and type of the event that set it."""
    folded: Folded = {}
    for event in events:
        for name, item in event.event_data.items():
            folded[name] = (item, event.version, event.event_type)
    return folded


def _values(folded: Folded) -> dict[str, Any]:
    return {name: item for name, (item, _, _) in folded.items()}
