"""Readiness checks for an event store: :func:`check_health` and :func:`check_health_async`.

A probe (a Kubernetes readiness probe, a load balancer's health URL, ``eskit health``)
asks four questions and gets one :class:`HealthReport`:

* ``store``: can the store be read at all (its head position)? If not, the report is
  *failing* and nothing else is asked. The figure is the seconds that read took.
* ``schema``: the eskit schema version in the database against the one this eskit
  writes. Absent tables are *failing*; migrations pending are *degraded* (``eskit
  migrate`` applies them). Stores without a schema (in memory) skip this check.
* ``projection NAME[/PARTITION]``, one per projection partition in ``projections``
  (a :class:`~eskit.projections.checkpoints.ProjectionTarget`): more than ``max_lag``
  events behind the head, or failing on an event now, is *degraded*.
* ``transactions`` (PostgreSQL only): the age of the oldest open transaction that
  appends to the store, which holds every reader back while it lasts; older than
  ``max_transaction_age`` seconds is *degraded*. A role without ``pg_read_all_stats``
  cannot time other roles' transactions: that is *degraded* too, with the grant
  named in the message, never a crash and never a false 0.

What is not guaranteed: a report is a moment's view, taken with several reads, not
one snapshot. Lag is counted up to ``max_lag + 1`` events only (``figure`` is then
``max_lag + 1`` and the message says "more than"), so a probe stays cheap however far
behind a projection is. Errors other than eskit's own (a bug in a target, say)
propagate: a probe should fail loudly on those.

The decisions (which figure is ok, degraded or failing) are written once, without
I/O, and both front ends feed them their measurements.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from eskit.errors import EskitError, InvalidInputError, StoreError
from eskit.stores.base import EventStore
from eskit.stores.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from eskit.stores.sqlite import SQLiteEventStore

if TYPE_CHECKING:
    from eskit.aio.store import AsyncEventStore
    from eskit.projections.checkpoints import ProjectionState, ProjectionTarget

__all__ = [
    "DEFAULT_MAX_LAG",
    "DEFAULT_MAX_TRANSACTION_AGE",
    "HealthCheck",
    "HealthReport",
    "HealthStatus",
    "check_health",
    "check_health_async",
]

HealthStatus = Literal["ok", "degraded", "failing"]
"""``ok``: ready. ``degraded``: serving, but something needs an operator. ``failing``: not
ready (the store cannot be read, or holds no eskit store)."""

_RANK: dict[str, int] = {"ok": 0, "degraded": 1, "failing": 2}

DEFAULT_MAX_LAG = 1000
"""Events a projection may be behind the head before the check says degraded."""
DEFAULT_MAX_TRANSACTION_AGE = 60.0
"""Seconds an appending transaction may stay open before the check says degraded."""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One check: its status, the figure measured, and the threshold it was held to."""

    name: str
    status: HealthStatus
    message: str
    figure: float | int | None = None
    threshold: float | int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message,
                "figure": self.figure, "threshold": self.threshold}


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The checks of one probe; :attr:`status` is the worst of them."""

    checks: tuple[HealthCheck, ...]

    @property
    def status(self) -> HealthStatus:
        worst: HealthStatus = "ok"
        for check in self.checks:
            if _RANK[check.status] > _RANK[worst]:
                worst = check.status
        return worst

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: ``{"status": ..., "checks": [{"name", "status", ...}]}``."""
        return {"status": self.status, "checks": [c.to_dict() for c in self.checks]}


# --------------------------------------------------------------------------- decisions
# Written once, without I/O: the sync and async front ends only measure.


def _validate(max_lag: int, max_transaction_age: float) -> None:
    if type(max_lag) is not int or max_lag < 0:
        raise InvalidInputError(f"max_lag must be an int >= 0, not {max_lag!r}")
    if (isinstance(max_transaction_age, bool) or not isinstance(max_transaction_age, int | float)
            or not max_transaction_age > 0 or max_transaction_age == float("inf")):
        raise InvalidInputError(
            f"max_transaction_age must be a finite number of seconds > 0, "
            f"not {max_transaction_age!r}"
        )


def _unreachable(exc: EskitError) -> HealthCheck:
    return HealthCheck("store", "failing", f"cannot read the store: {exc}")


def _reachable(seconds: float) -> HealthCheck:
    # The figure is how long reading the head took, never the head itself: a PostgreSQL
    # position is about 2**64 times a transaction id, too big for JSON numbers.
    return HealthCheck("store", "ok", f"readable in {seconds * 1000:.1f} ms",
                       figure=round(seconds, 4))


def _schema_check(found: int | EskitError, latest: int) -> HealthCheck:
    if isinstance(found, EskitError):  # a newer schema than this eskit knows, say
        return HealthCheck("schema", "failing", str(found), threshold=latest)
    if found == 0:
        return HealthCheck("schema", "failing", "no eskit tables: `eskit migrate` creates them",
                           figure=0, threshold=latest)
    if found < latest:
        pending = latest - found
        return HealthCheck(
            "schema", "degraded",
            f"schema version {found}, {pending} migration{'s' * (pending != 1)} pending: "
            "run `eskit migrate` (SQLite: open the store once with create=True)",
            figure=found, threshold=latest,
        )
    return HealthCheck("schema", "ok", f"schema version {found}", figure=found, threshold=latest)


def _projection_check(state: ProjectionState, lag: int, max_lag: int) -> HealthCheck:
    name = state.name if state.partition == 0 else f"{state.name}/{state.partition}"
    behind = (f"more than {max_lag} events behind" if lag > max_lag
              else f"{lag} event{'s' * (lag != 1)} behind")
    if state.last_error:
        status: HealthStatus = "degraded"
        message = f"{behind}; failing: {state.last_error}"
    else:
        status = "degraded" if lag > max_lag else "ok"
        message = behind
    return HealthCheck(f"projection {name}", status, message, figure=lag, threshold=max_lag)


def _projections_unreadable(exc: EskitError) -> HealthCheck:
    return HealthCheck("projections", "failing", f"cannot read the checkpoints: {exc}")


def _transaction_check(age: float | StoreError, limit: float) -> HealthCheck:
    if isinstance(age, StoreError):  # the grant it needs is named in the message
        return HealthCheck("transactions", "degraded", str(age), threshold=limit)
    status: HealthStatus = "degraded" if age > limit else "ok"
    message = (f"an appending transaction has been open {age:.1f} s, holding readers back; "
               "set idle_in_transaction_session_timeout" if status == "degraded"
               else "no appending transaction open" if age == 0
               else f"oldest appending transaction open {age:.1f} s")
    return HealthCheck("transactions", status, message, figure=round(age, 3), threshold=limit)


def _latest_schema(store: object) -> int | None:
    """The schema version this eskit writes for ``store``'s kind; ``None``: no schema."""
    if isinstance(store, SQLiteEventStore):
        return SQLITE_SCHEMA_VERSION
    # Looked up in sys.modules, not imported: only a PostgreSQL store has loaded them,
    # and importing them would need psycopg.
    for module, name in (("eskit.stores.postgres", "PostgresEventStore"),
                         ("eskit.aio.postgres", "AsyncPostgresEventStore")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(store, getattr(loaded, name)):
            from eskit.stores.postgres_schema import SCHEMA_VERSION

            return SCHEMA_VERSION
    return None


# --------------------------------------------------------------------------- front ends


def check_health(
    store: EventStore,
    *,
    projections: ProjectionTarget | None = None,
    max_lag: int = DEFAULT_MAX_LAG,
    max_transaction_age: float = DEFAULT_MAX_TRANSACTION_AGE,
) -> HealthReport:
    """Check ``store`` (and the projections checkpointed in ``projections``); never writes.

    Returns a report rather than raising when the store is unreachable or degraded;
    bad thresholds raise :class:`~eskit.InvalidInputError` before any I/O. See
    :mod:`eskit.health` for what each check means.
    """
    _validate(max_lag, max_transaction_age)
    started = time.perf_counter()
    try:
        store.head_position()
        checks = [_reachable(time.perf_counter() - started)]
    except EskitError as exc:
        return HealthReport((_unreachable(exc),))
    latest = _latest_schema(store)
    if latest is not None:
        found: int | EskitError
        try:
            found = store.schema_version()  # type: ignore[attr-defined]
        except EskitError as exc:
            found = exc
        checks.append(_schema_check(found, latest))
    if projections is not None:
        try:
            for state in projections.states():
                lag = sum(1 for _ in store.read_all(
                    state.position, limit=max_lag + 1, on_undecodable="yield"))
                checks.append(_projection_check(state, lag, max_lag))
        except EskitError as exc:
            checks.append(_projections_unreadable(exc))
    oldest = getattr(store, "oldest_transaction_age", None)
    if oldest is not None:
        age: float | StoreError
        try:
            age = oldest()
        except StoreError as exc:
            age = exc
        checks.append(_transaction_check(age, float(max_transaction_age)))
    return HealthReport(tuple(checks))


async def check_health_async(
    store: AsyncEventStore,
    *,
    projections: ProjectionTarget | None = None,
    max_lag: int = DEFAULT_MAX_LAG,
    max_transaction_age: float = DEFAULT_MAX_TRANSACTION_AGE,
) -> HealthReport:
    """:func:`check_health` for an :class:`~eskit.aio.AsyncEventStore`: the same checks.

    ``projections`` is the same (sync) target; its checkpoints are read in a worker
    thread, so the event loop is not blocked.
    """
    _validate(max_lag, max_transaction_age)
    started = time.perf_counter()
    try:
        await store.head_position()
        checks = [_reachable(time.perf_counter() - started)]
    except EskitError as exc:
        return HealthReport((_unreachable(exc),))
    sync_store = getattr(store, "sync_store", None)  # SQLite and memory wrap a sync store
    latest = _latest_schema(store if sync_store is None else sync_store)
    if latest is not None:
        found: int | EskitError
        try:
            found = (await store.schema_version() if sync_store is None  # type: ignore[attr-defined]
                     else await asyncio.to_thread(sync_store.schema_version))
        except EskitError as exc:
            found = exc
        checks.append(_schema_check(found, latest))
    if projections is not None:
        try:
            states: Sequence[ProjectionState] = await asyncio.to_thread(projections.states)
            for state in states:
                lag = 0
                async for _ in store.read_all(
                        state.position, limit=max_lag + 1, on_undecodable="yield"):
                    lag += 1
                checks.append(_projection_check(state, lag, max_lag))
        except EskitError as exc:
            checks.append(_projections_unreadable(exc))
    oldest = getattr(store, "oldest_transaction_age", None)
    if oldest is not None:
        age: float | StoreError
        try:
            age = await oldest()
        except StoreError as exc:
            age = exc
        checks.append(_transaction_check(age, float(max_transaction_age)))
    return HealthReport(tuple(checks))
