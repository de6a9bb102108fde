"""``eskit health``: the readiness of a store, as a table or JSON, in the exit status.

Exit status: ``0`` ok, ``1`` degraded, ``2`` failing (the store cannot be opened or
read, or holds no eskit store). ``2`` is also what a bad option exits with (typer's
usage errors, like every command's), and ``1`` what ``eskit`` exits with when the
``cli`` extra is missing, so a probe that treats anything but 0 as "not ready" reads
every case right.
"""

# No ``from __future__ import annotations``: typer reads the annotations at run time.

from typing import Annotated

import typer
from rich.table import Table

from eskit.cli import _common as c
from eskit.cli._exits import EXIT_DEGRADED, EXIT_FAILING, EXIT_OK
from eskit.errors import EskitError
from eskit.health import (
    DEFAULT_MAX_LAG,
    DEFAULT_MAX_TRANSACTION_AGE,
    HealthCheck,
    HealthReport,
    check_health,
)

__all__ = ["register"]

EXIT_CODES = {"ok": EXIT_OK, "degraded": EXIT_DEGRADED, "failing": EXIT_FAILING}


def register(app: typer.Typer) -> None:
    app.command(cls=c.StoreCommand)(health)


def health(
    db: Annotated[str, typer.Argument(help=c.DB_HELP, show_default=False)],
    schema: Annotated[str, c.schema_option] = "eskit",
    max_lag: Annotated[
        int, typer.Option("--max-lag", min=0, metavar="EVENTS",
                          help="Events a projection may be behind before it is degraded."),
    ] = DEFAULT_MAX_LAG,
    max_transaction_age: Annotated[
        float, typer.Option("--max-transaction-age", min=0.001, metavar="SECONDS",
                            help="Seconds an appending transaction may stay open "
                            "(PostgreSQL)."),
    ] = DEFAULT_MAX_TRANSACTION_AGE,
    projections: Annotated[
        bool, typer.Option("--projections/--no-projections",
                           help="Check the projections checkpointed in the same database."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
    = False,
) -> None:
    """Is the store ready? Reachable, schema up to date, projections and transactions.

    Exits 0 (ok), 1 (degraded) or 2 (failing).
    """
    report = _check(db, schema, max_lag, max_transaction_age, projections)
    if as_json:
        c.print_json(report.to_dict())
    else:
        _print(report, db)
    raise typer.Exit(EXIT_CODES[report.status])


def _check(db: str, schema: str, max_lag: int, max_age: float, projections: bool
           ) -> HealthReport:
    # A store that cannot be opened (a missing file, an unreachable server, no eskit
    # tables, no psycopg) is the probe's answer, "failing", not a usage error.
    try:
        with c.open_store(db, schema) as store:
            if not projections:
                return check_health(store, max_lag=max_lag, max_transaction_age=max_age)
            try:
                # Opening a target creates its tables: a probe must not, so a store
                # where no projection ever ran has no projection checks.
                if not c.checkpoints_exist(db, schema):
                    return check_health(store, max_lag=max_lag, max_transaction_age=max_age)
                target = c.open_target(db, schema)
            except (EskitError, OSError) as exc:
                report = check_health(store, max_lag=max_lag, max_transaction_age=max_age)
                return HealthReport((*report.checks, HealthCheck(
                    "projections", "failing", f"cannot open the checkpoints: {_one_line(exc)}",
                )))
            with target:
                return check_health(store, projections=target, max_lag=max_lag,
                                    max_transaction_age=max_age)
    except (EskitError, OSError) as exc:
        return HealthReport((
            HealthCheck("store", "failing", f"cannot open the store: {_one_line(exc)}"),
        ))


def _one_line(exc: BaseException) -> str:
    return " ".join(c.scrub(str(exc)).split())


_STYLE = {"ok": "green", "degraded": "yellow", "failing": "bold red"}


def _print(report: HealthReport, db: str) -> None:
    table = Table(title=c.plain(f"health of {c.redact(db)}: {report.status}"))
    for column in ("check", "status", "figure", "threshold", "message"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(
            c.plain(check.name), f"[{_STYLE[check.status]}]{check.status}[/]",
            "-" if check.figure is None else str(check.figure),
            "-" if check.threshold is None else str(check.threshold),
            c.plain(c.scrub(check.message)),
        )
    c.console().print(table)
