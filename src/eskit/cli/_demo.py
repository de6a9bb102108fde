"""``eskit demo``: the bank account example, end to end, on a SQLite file."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from eskit.cli import _common as c
from eskit.cli._exits import EXIT_UNAVAILABLE

__all__ = ["DEFAULT_DEMO_DB", "register"]

DEFAULT_DEMO_DB = Path("eskit-demo.db")
_DEMO_MODULE = "examples.bank.demo"


def register(app: typer.Typer) -> None:
    app.command()(demo)


def demo(
    db: Annotated[
        Path,
        typer.Option(
            "--db", metavar="PATH",
            help="The SQLite file to write. A file left by an earlier demo is replaced; "
            "any other file is refused.",
        ),
    ] = DEFAULT_DEMO_DB,
) -> None:
    """Run the bank account example on a SQLite file and show what it stored."""
    try:
        module = importlib.import_module(_DEMO_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("examples", "examples.bank", _DEMO_MODULE):
            raise
        c.fail(
            "`eskit demo` runs the worked example in examples/bank, which ships only with "
            "a source checkout of eskit: clone the repository, run "
            "pip install -e '.[cli]' there and run `eskit demo` in it",
            EXIT_UNAVAILABLE,
        )
    run: Callable[[Path, Console], object] = module.run
    with c.reported_errors():
        run(db, c.console())
