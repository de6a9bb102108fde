"""The ``eskit`` command line: look inside event stores, migrate them, run the demo.

::

    eskit --version
    eskit demo [--db PATH]                  the bank example, end to end, on a SQLite file
    eskit streams DB [--limit N --after STREAM] [--json]     the streams of a store
    eskit events DB STREAM [--from-version N] [--limit N] [--backwards] [--json]
    eskit migrate DSN [--schema NAME]       create or upgrade eskit's PostgreSQL tables
    eskit upcast-check DB [--module M ...] [--registry M:NAME]   read every event through
                                            today's code
    eskit state DB STREAM [--version N | --as-of TIME] [--app M:CLASS]   a stream's state then
    eskit diff DB STREAM V1 V2 [--app M:CLASS]   which fields changed between two versions
    eskit projections status|run|rebuild|parked|retry|skip DB ...   read models
    eskit health DB [--max-lag N] [--max-transaction-age S] [--json]   readiness:
                                            exits 0 ok, 1 degraded, 2 failing
    eskit serve DB [--host H] [--port N] [--read-token T] [--write-token T]   the HTTP
                                            API on uvicorn (web extra; docs/http-api.md)

``DB`` is a SQLite file or a PostgreSQL DSN (``postgresql://...`` or libpq keywords
``host=... dbname=...``, with ``--schema`` when it is not ``eskit``). Leave it out
to use the ``ESKIT_DSN`` environment variable, so that no password goes on a
command line; passwords are never printed (titles, errors, status).

It needs the ``cli`` extra (typer and rich): ``pip install 'eskit[cli]'``. The
inspecting commands open the store with ``create=False`` / ``setup=False``, so
they never create a file or a table, and only read.

Exit codes: ``0`` success; ``1`` the CLI cannot run here (an extra is missing, or
``eskit demo`` outside a source checkout); ``2`` bad input (a missing file, a file
that is not an eskit store, an unknown stream, a bad option); ``3`` ``eskit
upcast-check`` found events today's code cannot read; ``4`` ``eskit upcast-check``
was given no event classes, so it could check decoding only. ``eskit health``
exits ``0`` ok, ``1`` degraded, ``2`` failing: the same numbers read "not ready"
for a probe (a missing extra is 1, a store that cannot be opened is 2, as
elsewhere). Errors are one red line on stderr, never a traceback.

The package has one module per command group (``_inspect``, ``_timetravel``,
``_schema``, ``_projections``, ``_demo``, ``_health``) and ``_common`` for what they share;
only this module is imported without typer and rich installed.
"""

import sys
from typing import TYPE_CHECKING

from eskit.cli._exits import (
    ENV_DSN,
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CHECK_INCOMPLETE,
    EXIT_DEGRADED,
    EXIT_FAILING,
    EXIT_OK,
    EXIT_UNAVAILABLE,
)
from eskit.errors import MissingExtraError

if TYPE_CHECKING:
    import typer

__all__ = [
    "ENV_DSN",
    "EXIT_BAD_INPUT",
    "EXIT_CHECK_FAILED",
    "EXIT_CHECK_INCOMPLETE",
    "EXIT_DEGRADED",
    "EXIT_FAILING",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "MISSING_EXTRA",
    "main",
    "make_app",
]

MISSING_EXTRA = "the eskit CLI needs the cli extra: pip install 'eskit[cli]'"


def main() -> None:
    """Run the ``eskit`` command line (the ``eskit`` script's entry point)."""
    try:
        app = make_app()
    except MissingExtraError:
        print(MISSING_EXTRA, file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    app(prog_name="eskit")


def make_app() -> "typer.Typer":
    """The typer application.

    Raises :class:`~eskit.MissingExtraError` (an ``ImportError``) without the ``cli``
    extra.
    """
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("cli", "the eskit CLI", name=exc.name) from exc
    from eskit.cli._app import make_app as build

    return build()
