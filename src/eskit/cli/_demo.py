"""``eskit demo``: the bank account example, end to end, on a SQLite file."""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
from rich.console import Console

from eskit.cli import _common as c
from eskit.cli._exits import EXIT_UNAVAILABLE

__all__ = ["DEFAULT_DEMO_DB", "register"]

DEFAULT_DEMO_DB = Path("eskit-demo.db")
# The bank example: the copy an installed wheel ships (pyproject.toml force-includes
# examples/bank as eskit._demo_bank), else the checkout's own, for an editable install.
_DEMO_MODULES = ("eskit._demo_bank.demo", "examples.bank.demo")


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
    module = _demo_module()
    run: Callable[[Path, Console], object] = module.run
    with c.reported_errors():
        run(db, c.console())


def _demo_module() -> ModuleType:
    for name in _DEMO_MODULES:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only the demo's own absence moves on; a missing dependency inside it is a bug.
            parts = name.split(".")
            if exc.name not in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
                raise
    c.fail(
        "`eskit demo` runs the bank example, which this installation of eskit does not "
        "have: reinstall eskit from its wheel, or run it in a source checkout of eskit "
        "after pip install -e '.[cli]' there",
        EXIT_UNAVAILABLE,
    )
