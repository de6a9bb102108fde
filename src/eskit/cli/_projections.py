"""``eskit projections``: status, run, rebuild, parked, retry and skip from the shell.

::

    eskit projections status DB [--name NAME] [--json]    checkpoint, lag, rate, last error
    eskit projections run DB --projection MODULE:CLASS    catch up (--follow: then stay live)
    eskit projections rebuild DB --projection MODULE:CLASS   blue/green, with a progress bar
    eskit projections parked DB [--name NAME] [--skipped] events parked (or skipped)
    eskit projections retry DB --projection MODULE:CLASS [--event ID]
    eskit projections skip DB NAME EVENT_ID

``DB`` is a SQLite file or a PostgreSQL DSN (``--schema`` when not ``eskit``); the
read model, checkpoints and dead letters are in the same database as the events.
Commands that run handlers import the projection class named by ``--projection``
(it must be importable: run from your project's directory, or set PYTHONPATH).
"""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import dataclasses
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from eskit.cli import _common as c
from eskit.errors import EskitError

__all__ = ["register"]

group = typer.Typer(
    help="Projections into read models: status, rebuild, run, parked events.",
    no_args_is_help=True,
)
db_argument = typer.Argument(help=c.DB_HELP, show_default=False)
projection_option = typer.Option(
    "--projection", metavar="MODULE:CLASS", help="The Projection class to run."
)
name_option = typer.Option("--name", metavar="NAME", help="Only this projection.")


def register(app: typer.Typer) -> None:
    """Add the ``projections`` command group to the eskit CLI."""
    app.add_typer(group, name="projections")


def _load(spec: str) -> Any:
    from eskit.projections.projection import Projection

    cls = c.import_object(spec, "a Projection class",
                          lambda obj: isinstance(obj, type) and issubclass(obj, Projection))
    return cls()


@group.command(cls=c.StoreCommand)
def status(
    db: Annotated[str, db_argument],
    schema: Annotated[str, c.schema_option] = "eskit",
    name: Annotated[str | None, name_option] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """Checkpoint, head, lag (events and seconds), rate and last error per projection."""
    from eskit.projections.monitoring import projection_status

    with c.reported_errors(), c.open_store(db, schema) as store:
        statuses = []
        if c.checkpoints_exist(db, schema):  # a report creates no tables
            with c.open_target(db, schema) as target:
                statuses = projection_status(store, target, name)
    if as_json:
        c.print_json([
            {**dataclasses.asdict(s), "caught_up": s.caught_up} for s in statuses
        ])
        return
    out = c.console()
    if not statuses:
        out.print("no projections have run against this store")
        return
    table = Table(title=c.plain(f"projections of {c.redact(db)}"))
    for column in ("projection", "part", "handled", "lag (events)", "lag (s)",
                   "events/s", "parked", "last error"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        lag = f"{s.lag_events}{'+' if s.lag_events_capped else ''}"
        table.add_row(
            c.plain(s.name), str(s.partition), str(s.events_handled), lag,
            f"{s.lag_seconds:.1f}", f"{s.events_per_second:,.0f}", str(s.parked),
            c.plain(s.last_error or "-"),
        )
    out.print(table)


@contextmanager
def _stop_on_signals(runner: Any) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT stop ``runner`` after its current batch; yields "was stopped".

    The handler runs on the main thread between two bytecodes, possibly while the
    store holds one of its locks, so it only starts a thread that calls ``stop``:
    taking the store's locks from the handler itself could deadlock.
    """
    stopped = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stopped.set()
        threading.Thread(target=runner.stop, name="eskit-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _leaving(members: Any) -> Iterator[None]:
    """Leave the consumer group (if any) at the end: its leases are released at once."""
    try:
        yield
    finally:
        if members is not None:
            members.leave()


@group.command(cls=c.StoreCommand)
def run(
    db: Annotated[str, db_argument],
    projection: Annotated[str, projection_option],
    schema: Annotated[str, c.schema_option] = "eskit",
    follow: Annotated[bool, typer.Option("--follow", help="Stay live after catching up.")]
    = False,
    partition: Annotated[int, typer.Option("--partition", min=0)] = 0,
    partitions: Annotated[int, typer.Option("--partitions", min=1)] = 1,
    park: Annotated[bool, typer.Option("--park", help="Park failing events.")] = False,
    consumer_group: Annotated[str | None, typer.Option(
        "--group", help="Join this consumer group: its --partitions are shared by lease "
        "among every worker running with the same group.")] = None,
    lease_timeout: Annotated[float, typer.Option(
        "--lease-timeout", min=0.01, help="With --group: seconds before a dead worker's "
        "partitions are taken over.")] = 10.0,
) -> None:
    """Run a projection: catch up, with a progress bar (--follow: then keep following).

    SIGTERM or Ctrl-C stops it after the batch in hand, whose checkpoint is committed
    with its read-model writes; the exit status is then 0. With --group the worker
    handles the partitions its leases give it and leaves the group when it ends.
    """
    from eskit.projections.leases import ConsumerGroup
    from eskit.projections.runner import ProjectionRunner

    with c.reported_errors(), c.open_store(db, schema) as store, \
            c.open_target(db, schema) as target:
        members = None if consumer_group is None else ConsumerGroup(
            target, consumer_group, partitions=partitions, lease_timeout=lease_timeout
        )
        runner = ProjectionRunner(
            store, _load(projection), target, partition=partition,
            partitions=partitions, on_failure="park" if park else "stop", group=members,
        )
        with _stop_on_signals(runner) as stopped, _leaving(members):
            head = store.head_position()
            with Progress(console=c.console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"catching up {runner.name}", total=head or 1)
                handled = runner.run_until_caught_up(
                    progress=lambda batch: bar.update(task, completed=min(batch.position, head))
                )
            c.console().print(c.plain(f"{runner.name}: {handled} events handled"
                                      + (", stopped" if stopped.is_set() else "")))
            if follow and not stopped.is_set():
                runner.run()
                c.console().print(c.plain(f"{runner.name}: stopped"))


@group.command(cls=c.StoreCommand)
def rebuild(
    db: Annotated[str, db_argument],
    projection: Annotated[str, projection_option],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Replay all history into fresh tables, then swap them in (queries keep working)."""
    from eskit.projections.rebuild import rebuild as blue_green

    with c.reported_errors(), c.open_store(db, schema) as store, \
            c.open_target(db, schema) as target:
        instance = _load(projection)
        events = sum(1 for _ in store.read_all())  # the total, for the bar
        with Progress(console=c.console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"rebuilding {instance.name}", total=events or 1)
            handled = blue_green(
                store, instance, target,
                progress=lambda batch: bar.advance(task, batch.read),
            )
        c.console().print(c.plain(f"{instance.name}: rebuilt from {events} events "
                                  f"({handled} handled) and swapped in"))


@group.command(cls=c.StoreCommand)
def parked(
    db: Annotated[str, db_argument],
    schema: Annotated[str, c.schema_option] = "eskit",
    name: Annotated[str | None, name_option] = None,
    skipped: Annotated[
        bool, typer.Option("--skipped", help="List the events skipped with `skip` instead.")
    ] = False,
) -> None:
    """Events parked by failing projections (or, with --skipped, given up on)."""
    kind = "skipped" if skipped else "parked"
    # The store first: it refuses a missing file or schema, where a target would create it.
    with c.reported_errors(), c.open_store(db, schema):
        letters = []
        if c.checkpoints_exist(db, schema):  # a report creates no tables
            with c.open_target(db, schema) as target:
                letters = target.dead_letters(name, status=kind)
    out = c.console()
    if not letters:
        out.print(f"no {kind} events")
        return
    table = Table(title=f"{len(letters)} {kind} event{'s' * (len(letters) != 1)}")
    for column in ("projection", "position", "event id", "stream", "type", "attempts",
                   "error"):
        table.add_column(column, overflow="fold")
    for d in letters:
        table.add_row(c.plain(d.projection), str(d.position), str(d.event_id),
                      c.plain(d.stream_id), c.plain(d.event_type), str(d.attempts),
                      c.plain(d.error))
    out.print(table)


@group.command(cls=c.StoreCommand)
def retry(
    db: Annotated[str, db_argument],
    projection: Annotated[str, projection_option],
    schema: Annotated[str, c.schema_option] = "eskit",
    event: Annotated[str | None, typer.Option("--event", metavar="ID")] = None,
) -> None:
    """Handle parked events again, oldest first (all, or one with --event)."""
    from eskit.projections.parked import retry_parked

    with c.reported_errors(), c.open_store(db, schema) as store, \
            c.open_target(db, schema) as target:
        try:
            done = retry_parked(store, _load(projection), target, event)
        except Exception as exc:
            if isinstance(exc, c.BadInput | EskitError):
                raise
            raise c.BadInput(f"retry failed, the event stays parked: "
                             f"{type(exc).__name__}: {exc}") from exc
        c.console().print(f"{len(done)} parked events handled")


@group.command(cls=c.StoreCommand)
def skip(
    db: Annotated[str, db_argument],
    name: Annotated[str, typer.Argument(help="The projection's name.")],
    event_id: Annotated[str, typer.Argument(help="The parked event's id.")],
    schema: Annotated[str, c.schema_option] = "eskit",
) -> None:
    """Give up on a parked event: it stays listed, by `parked --skipped`."""
    from eskit.projections.parked import skip_parked

    with c.reported_errors(), c.open_store(db, schema), c.open_target(db, schema) as target:
        skip_parked(target, name, event_id)
        c.console().print(c.plain(f"skipped {event_id}"))
