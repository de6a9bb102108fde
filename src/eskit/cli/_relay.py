"""``eskit relay`` and ``eskit bus``: run the outbox relay, see its lag, handle dead letters.

::

    eskit relay run DB --sink URL [--name NAME] [--types T ...] [--prefix P ...]
                                  [--until-caught-up] [--partitions N]
    eskit relay status DB [--json]               checkpoint, lag, rate, last error, lease
    eskit bus dead-letters URL --group G [--limit N] [--json]
    eskit bus replay URL --group G [--id ID ...]

``DB`` is a SQLite file or a PostgreSQL DSN (or ``$ESKIT_DSN``); the relay's
checkpoint lives in the same database. ``URL``'s scheme picks the broker
(``amqp://``, ``nats://``, ``redis://``; see :mod:`eskit.bus.urls`).
"""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.table import Table

from eskit.cli import _common as c

__all__ = ["register"]

relay_group = typer.Typer(
    help="The outbox relay: publish the store's events to a message broker.",
    no_args_is_help=True,
)
bus_group = typer.Typer(
    help="A broker's consumer groups: list and replay dead letters.",
    no_args_is_help=True,
)
db_argument = typer.Argument(help=c.DB_HELP, show_default=False)
url_argument = typer.Argument(
    help="The broker URL: amqp://, nats://, redis:// (its scheme picks the broker).",
    show_default=False,
)
group_option = typer.Option("--group", metavar="GROUP", help="The consumer group.")


def register(app: typer.Typer) -> None:
    """Add the ``relay`` and ``bus`` command groups to the eskit CLI."""
    app.add_typer(relay_group, name="relay")
    app.add_typer(bus_group, name="bus")


def default_name(destination: str, limit: int = 200) -> str:
    """The relay name ``relay run`` uses without ``--name``: the sink's destination.

    A relay name holds at most ``limit`` (200; a relay group's, 195) characters. A
    longer destination keeps its first ``limit - 17`` and ends in ``~`` and 16 hex
    digits of its SHA-256, so that two destinations alike in their first characters
    never share (and skip past each other's events with) one checkpoint.
    """
    if len(destination) <= limit:
        return destination
    digest = hashlib.sha256(destination.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{destination[:limit - 17]}~{digest}"


class _StderrLines(logging.Handler):
    """Log records as plain lines on stderr, passwords scrubbed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = c.scrub(" ".join(record.getMessage().split()))
            sys.stderr.write(f"{text}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _bus_log_on_stderr() -> Iterator[None]:
    """Show what the relay and its sink log (INFO and up) while ``relay run`` runs.

    The library only adds a NullHandler, so without this a relay waiting for a broker
    that is down, or for another relay's lease, would wait in silence.
    """
    logger = logging.getLogger("eskit.bus")
    handler = _StderrLines(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _run_relay(relay: Any, until_caught_up: bool) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    try:
        await relay.run(until_caught_up=until_caught_up)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@relay_group.command(cls=c.StoreCommand)
def run(
    db: Annotated[str, db_argument],
    sink: Annotated[str, typer.Option("--sink", metavar="URL", help="Where to publish.")],
    schema: Annotated[str, c.schema_option] = "eskit",
    name: Annotated[str | None, typer.Option(
        "--name", metavar="NAME",
        help="The relay's checkpoint name (default: the destination). One per destination.",
    )] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--types", metavar="TYPE", help="Publish only these event types (repeatable).",
    )] = None,
    prefixes: Annotated[list[str] | None, typer.Option(
        "--prefix", metavar="PREFIX", help="Publish only streams with this prefix (repeatable).",
    )] = None,
    until_caught_up: Annotated[bool, typer.Option(
        "--until-caught-up", help="Exit once every event is published and confirmed.",
    )] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100_000)] = 500,
    partitions: Annotated[int | None, typer.Option(
        "--partitions", metavar="N", min=1, max=4096,
        help="Join the relay group NAME, which shares N partitions of the log among its "
             "members (every member passes the same N); each stream stays in one.",
    )] = None,
) -> None:
    """Publish every event after the relay's checkpoint, then keep following.

    The checkpoint moves only after the broker confirmed a batch: a crash repeats
    at most that batch (at least once). SIGTERM or Ctrl-C stops after the batch in
    hand, with exit status 0. With ``--partitions``, several ``relay run`` processes
    of one name share the work: each publishes the partitions it holds.
    """
    from eskit.bus.relay import Relay
    from eskit.bus.relay_group import RelayGroup
    from eskit.bus.urls import sink_for_url

    with c.reported_errors(), c.open_store(db, schema) as store:
        if sink.partition("://")[0].lower() == "memory":
            raise c.BadInput(
                "memory:// is a broker inside one process: nothing outside this command "
                "could read what it publishes, yet the checkpoint would move. "
                "Use amqp://, nats:// or redis://")
        target = sink_for_url(sink)
        # A group's partitions are NAME/p: its default name leaves room for "/4095".
        relay_name = name or default_name(target.destination,
                                          200 if partitions is None else 195)
        relay = Relay(store, target, name=relay_name, event_types=types,
                      stream_prefixes=prefixes, batch_size=batch_size,
                      ) if partitions is None else RelayGroup(
            store, target, name=relay_name, partitions=partitions, event_types=types,
            stream_prefixes=prefixes, batch_size=batch_size)
        with _bus_log_on_stderr():
            asyncio.run(_run_relay(relay, until_caught_up))
    # One line however narrow the terminal, so that scripts can read it.
    where = (f"checkpoint at position {relay.position}" if partitions is None
             else f"{partitions} partitions")
    c.console(stderr=True).print(
        f"relay {c.escape(relay.name)!s}: {relay.published} published, {where}",
        highlight=False, soft_wrap=True,
    )


_JSON_SAFE = 2**53
"""Integers JSON readers keep exactly (jq and JavaScript read numbers as doubles)."""


def _json_status(status: Any) -> dict[str, Any]:
    """A relay's status for ``--json``. PostgreSQL positions (about 2**82) do not fit
    a JSON reader's number, nor orjson's 64 bits: they are written as strings, the
    way the CloudEvents ``eskitposition`` carries them."""
    document: dict[str, Any] = dataclasses.asdict(status)
    for key in ("position", "head_position"):
        if abs(document[key]) >= _JSON_SAFE:
            document[key] = str(document[key])
    return document


@relay_group.command(cls=c.StoreCommand)
def status(
    db: Annotated[str, db_argument],
    schema: Annotated[str, c.schema_option] = "eskit",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """Checkpoint, lag (events and seconds), rate, last error and lease of every relay.

    A relay group shows a row per partition (``NAME/p``), its lease the member
    publishing it.
    """
    from eskit.bus.relay import relay_status

    with c.reported_errors(), c.open_store(db, schema) as store:
        statuses = relay_status(store)
    if as_json:
        c.print_json([_json_status(s) for s in statuses])
        return
    out = c.console()
    if not statuses:
        out.print("no relay has run against this store")
        return
    table = Table(title=c.plain(f"relays of {c.redact(db)}"))
    for column in ("relay", "destination", "position", "lag (events)", "lag (s)",
                   "events/s", "published", "lease", "last error"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        # A group member's id says where it runs (host-pid-suffix): shown whole.
        owner = s.lease_owner if s.group is not None else (s.lease_owner or "")[:8]
        lease = "-" if s.lease_owner is None or s.lease_until is None else (
            f"{c.plain(owner or '')} until {c.timestamp(s.lease_until)}")
        table.add_row(
            c.plain(s.name), c.plain(s.destination), str(s.position), str(s.lag_events),
            f"{s.lag_seconds:.1f}", f"{s.rate:,.0f}", str(s.published), lease,
            c.plain(s.last_error or "-"),
        )
    out.print(table)


async def _dead_letters(url: str, group: str, limit: int) -> list[Any]:
    from eskit.bus.urls import source_for_url

    source = source_for_url(url, group=group)
    await source.open()
    try:
        return await source.dead_letters(limit)
    finally:
        await source.close()


async def _replay(url: str, group: str, ids: list[str] | None) -> int:
    from eskit.bus.urls import source_for_url

    source = source_for_url(url, group=group)
    await source.open()
    try:
        count: int = await source.replay_dead_letters(ids)
        return count
    finally:
        await source.close()


def _summary(body: bytes) -> tuple[str, str, str]:
    """Event id, type and stream of a dead letter's body, or what is wrong with it."""
    from eskit.bus.cloudevents import from_cloudevent
    from eskit.errors import InvalidMessageError

    try:
        event = from_cloudevent(body)
    except InvalidMessageError:
        return "-", "(not an eskit CloudEvent)", "-"
    return str(event.event_id), event.event_type, str(event.stream_id)


@bus_group.command(name="dead-letters")
def dead_letters(
    url: Annotated[str, url_argument],
    group: Annotated[str, group_option],
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """The oldest dead letters of a consumer group, without removing them."""
    with c.reported_errors():
        letters = asyncio.run(_dead_letters(url, group, limit))
    rows = [(d, *_summary(d.body)) for d in letters]
    if as_json:
        c.print_json([{
            "dead_letter_id": d.dead_letter_id, "reason": d.reason, "dead_at": d.dead_at,
            "event_id": event_id, "event_type": event_type, "stream_id": stream,
        } for d, event_id, event_type, stream in rows])
        return
    out = c.console()
    if not rows:
        out.print(f"no dead letters in group {c.escape(group)}", highlight=False)
        return
    table = Table(title=c.plain(f"dead letters of {group}"))
    for column in ("id", "dead at", "event", "type", "stream", "reason"):
        table.add_column(column, overflow="fold")
    for d, event_id, event_type, stream in rows:
        table.add_row(
            c.plain(d.dead_letter_id), c.timestamp(d.dead_at) if d.dead_at else "-",
            event_id, c.plain(event_type), c.plain(stream), c.plain(d.reason),
        )
    out.print(table)


@bus_group.command()
def replay(
    url: Annotated[str, url_argument],
    group: Annotated[str, group_option],
    ids: Annotated[list[str] | None, typer.Option(
        "--id", metavar="ID", help="Replay only this dead letter (repeatable; default: all).",
    )] = None,
) -> None:
    """Send dead letters back to the group, to be delivered again."""
    with c.reported_errors():
        count = asyncio.run(_replay(url, group, ids or None))
    c.console().print(f"{count} dead letter{'s' * (count != 1)} replayed", highlight=False)
