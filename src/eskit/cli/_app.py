"""The ``eskit`` typer application: the root command and every command group."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer

import eskit
from eskit.cli import (
    _archive,
    _blobs,
    _compact,
    _demo,
    _health,
    _inspect,
    _partitions,
    _projections,
    _protection,
    _relay,
    _retention,
    _schema,
    _serve,
    _snapshots,
    _stats,
    _timetravel,
    _trace,
    _verify,
)

__all__ = ["make_app"]


def _print_version(wanted: bool) -> None:
    if wanted:
        print(f"eskit {eskit.__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True,
            help="Print eskit's version and exit.",
        ),
    ] = False,
) -> None:
    """eskit: look inside event stores, or watch event sourcing at work with `eskit demo`.

    DB is an eskit SQLite file or a PostgreSQL DSN; leave it out to use $ESKIT_DSN.
    """


def make_app() -> typer.Typer:
    """The typer application, with every command registered."""
    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    app.callback()(_root)
    for group in (
        _demo, _inspect, _schema, _timetravel, _projections, _health, _relay, _compact, _archive,
        _blobs, _stats, _snapshots, _retention, _trace, _serve, _protection, _verify,
        _partitions,
    ):
        group.register(app)
    return app
