"""``eskit projections``: status, rebuild, run, parked, retry and skip from the shell.

::

    eskit projections status DB [--name NAME]             checkpoint, lag, rate, last error
    eskit projections run DB --projection MODULE:CLASS    catch up (--follow: then stay live)
    eskit projections rebuild DB --projection MODULE:CLASS   blue/green, with a progress bar
    eskit projections parked DB [--name NAME]             events parked in the dead-letter table
    eskit projections retry DB --projection MODULE:CLASS [--event ID]
    eskit projections skip DB NAME EVENT_ID

``DB`` is a SQLite file or a PostgreSQL DSN (``--schema`` when not ``eskit``); the
read model, checkpoints and dead letters are in the same database as the events.
Commands that run handlers import the projection class named by ``--projection``
(it must be importable: run from your project's directory, or set PYTHONPATH).
"""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    import typer

__all__ = ["register"]


def register(app: "typer.Typer") -> None:
    """Add the ``projections`` command group to the eskit CLI."""
    import typer
    from rich.table import Table

    from eskit import cli
    from eskit.errors import EskitError

    group = typer.Typer(
        help="Projections into read models: status, rebuild, run, parked events.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="projections")
    schema_option = typer.Option("--schema", metavar="NAME", help="PostgreSQL schema (DSN only).")
    projection_option = typer.Option(
        "--projection", metavar="MODULE:CLASS", help="The Projection class to run."
    )
    name_option = typer.Option("--name", metavar="NAME", help="Only this projection.")

    def open_target(db: str, schema: str) -> Any:
        from eskit.projections.checkpoints import target_for

        return target_for(db, schema=schema)

    @group.command()
    def status(
        db: Annotated[str, typer.Argument(help="A SQLite file or a PostgreSQL DSN.")],
        schema: Annotated[str, schema_option] = "eskit",
        name: Annotated[str | None, name_option] = None,
    ) -> None:
        """Checkpoint, head, lag (events and seconds), rate and last error per projection."""
        from eskit.projections.monitoring import projection_status

        with cli._reported_errors(), cli._open_store(db, schema) as store, \
                open_target(db, schema) as target:
            statuses = projection_status(store, target, name)
            console = cli._console()
            if not statuses:
                console.print("no projections have run against this store")
                return
            table = Table(title=f"projections of {cli._escape(db)}")
            for column in ("projection", "part", "handled", "lag (events)", "lag (s)",
                           "events/s", "parked", "last error"):
                table.add_column(column, overflow="fold")
            for s in statuses:
                lag = f"{s.lag_events}{'+' if s.lag_events_capped else ''}"
                table.add_row(
                    cli._escape(s.name), str(s.partition), str(s.events_handled), lag,
                    f"{s.lag_seconds:.1f}", f"{s.events_per_second:,.0f}", str(s.parked),
                    cli._escape(s.last_error or "-"),
                )
            console.print(table)

    def load(spec: str) -> Any:
        from eskit.projections.projection import Projection

        module_name, _, attribute = spec.partition(":")
        found = getattr(cli._import(module_name), attribute, None) if attribute else None
        if not (isinstance(found, type) and issubclass(found, Projection)):
            raise cli._BadInput(f"{spec!r} does not name a Projection class (use MODULE:CLASS)")
        return found()

    @group.command()
    def run(
        db: Annotated[str, typer.Argument(help="A SQLite file or a PostgreSQL DSN.")],
        projection: Annotated[str, projection_option],
        schema: Annotated[str, schema_option] = "eskit",
        follow: Annotated[bool, typer.Option("--follow", help="Stay live after catching up.")]
        = False,
        partition: Annotated[int, typer.Option("--partition")] = 0,
        partitions: Annotated[int, typer.Option("--partitions")] = 1,
        park: Annotated[bool, typer.Option("--park", help="Park failing events.")] = False,
    ) -> None:
        """Run a projection: catch up (and with --follow, keep following new events)."""
        from eskit.projections.runner import ProjectionRunner

        with cli._reported_errors(), cli._open_store(db, schema) as store, \
                open_target(db, schema) as target:
            runner = ProjectionRunner(
                store, load(projection), target, partition=partition, partitions=partitions,
                on_failure="park" if park else "stop",
            )
            if follow:
                try:
                    runner.run()
                except KeyboardInterrupt:
                    runner.stop()
            else:
                handled = runner.run_until_caught_up()
                cli._console().print(f"{cli._escape(runner.name)}: {handled} events handled")

    @group.command()
    def rebuild(
        db: Annotated[str, typer.Argument(help="A SQLite file or a PostgreSQL DSN.")],
        projection: Annotated[str, projection_option],
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Replay all history into fresh tables, then swap them in (queries keep working)."""
        from rich.progress import Progress

        from eskit.projections.rebuild import rebuild as blue_green

        with cli._reported_errors(), cli._open_store(db, schema) as store, \
                open_target(db, schema) as target:
            instance = load(projection)
            events = sum(1 for _ in store.read_all())  # the total, for the bar
            with Progress(console=cli._console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"rebuilding {instance.name}", total=events or 1)
                handled = blue_green(
                    store, instance, target,
                    progress=lambda batch: bar.advance(task, batch.read),
                )
            cli._console().print(f"{cli._escape(instance.name)}: rebuilt from {events} events "
                                 f"({handled} handled) and swapped in")

    @group.command()
    def parked(
        db: Annotated[str, typer.Argument(help="A SQLite file or a PostgreSQL DSN.")],
        schema: Annotated[str, schema_option] = "eskit",
        name: Annotated[str | None, name_option] = None,
        skipped: Annotated[bool, typer.Option("--skipped", help="List skipped ones.")] = False,
    ) -> None:
        """Events parked by failing projections."""
        with cli._reported_errors(), open_target(db, schema) as target:
            letters = target.dead_letters(name, status="skipped" if skipped else "parked")
            console = cli._console()
            if not letters:
                console.print("no parked events")
                return
            table = Table(title="parked events")
            for column in ("projection", "event id", "stream", "type", "attempts", "error"):
                table.add_column(column, overflow="fold")
            for d in letters:
                table.add_row(cli._escape(d.projection), d.event_id, cli._escape(d.stream_id),
                              cli._escape(d.event_type), str(d.attempts), cli._escape(d.error))
            console.print(table)

    @group.command()
    def retry(
        db: Annotated[str, typer.Argument(help="A SQLite file or a PostgreSQL DSN.")],
        projection: Annotated[str, projection_option],
        schema: Annotated[str, schema_option] = "eskit",
        event: Annotated[str | None, typer.Option("--event", metavar="ID")] = None,
    ) -> None:
        """Handle parked events again, oldest first (all, or one with --event)."""
        from eskit.projections.runner import retry_parked

        with cli._reported_errors(), cli._open_store(db, schema) as store, \
                open_target(db, schema) as target:
            try:
                done = retry_parked(store, load(projection), target, event)
            except Exception as exc:
                if isinstance(exc, cli._BadInput | EskitError):
                    raise
                raise cli._BadInput(f"retry failed, the event stays parked: "
                                    f"{type(exc).__name__}: {exc}") from exc
            cli._console().print(f"{len(done)} parked events handled")

    @group.command()
    def skip(
        db: Annotated[str, typer.Argument(help="A SQLite file or a PostgreSQL DSN.")],
        name: Annotated[str, typer.Argument(help="The projection's name.")],
        event_id: Annotated[str, typer.Argument(help="The parked event's id.")],
        schema: Annotated[str, schema_option] = "eskit",
    ) -> None:
        """Give up on a parked event: it stays listed as skipped."""
        from eskit.projections.runner import skip_parked

        with cli._reported_errors(), open_target(db, schema) as target:
            skip_parked(target, name, event_id)
            cli._console().print(f"skipped {event_id}")
