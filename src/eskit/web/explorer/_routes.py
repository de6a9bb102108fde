"""``explorer_routes``: the explorer's pages as Starlette routes, for any Starlette app to mount."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from eskit.aggregate import Aggregate
from eskit.errors import InvalidInputError
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.projection import Projection
from eskit.stores.base import EventStore
from eskit.web.explorer._context import (
    Explorer,
    ExplorerSettings,
    aggregates_by_name,
    projections_by_name,
)
from eskit.web.explorer._live import live_tail
from eskit.web.explorer._pages import Pages
from eskit.web.explorer._projections import ProjectionPages
from eskit.web.explorer._signin_pages import signin_form, signout

__all__ = ["explorer_routes"]

_STATIC = Path(__file__).resolve().parent / "static"


def explorer_routes(
    store: EventStore,
    settings: ExplorerSettings,
    *,
    aggregates: Sequence[type[Aggregate]] = (),
    projections: Sequence[Projection] = (),
    target: ProjectionTarget | None = None,
) -> list[BaseRoute]:
    """The explorer's routes over a sync ``store``, to mount in a Starlette app.

    An async memory or SQLite store is accepted too (its sync store is used); an
    async PostgreSQL store is not: open a :class:`~eskit.PostgresEventStore` for it.

    Pages (GET, read-only): ``/`` and ``/streams`` (search by id prefix, filter by
    event type, paged by a stream-id cursor), ``/stream`` (a timeline), ``/event``,
    ``/correlation``, ``/state`` (``aggregates``' state at a version or a time, and
    the diff of two versions), ``/log`` with a live tail (``/log/live``,
    server-sent events), ``/projections`` (checkpoints, lag, errors and parked
    events of the projections checkpointed in ``target``) and ``/health``.

    The one write is retrying or skipping a parked event (``POST
    /projections/parked``): it needs ``settings.write_token`` (or one of
    ``settings.write_tokens``) configured, that token
    sent with the form, and a confirmation; retrying needs the projection among
    ``projections``. Every value the pages show is HTML-escaped.

    With ``settings.read_tokens`` set, every page but ``/signin`` needs the cookie a
    read or write token earns there (``/signout`` ends it); see
    :mod:`eskit.web.explorer._signin`.

    Not guaranteed: fast pages on very large stores everywhere. The streams page
    reads one index range per page, and its event-type filter only that type's events
    where ``read_all`` filters by type; an event id is found through the store's
    index, but the look-up by correlation id scans the log (see
    :mod:`eskit.web.explorer._queries`).
    The store is used from Starlette's thread pool, so it must be safe to share
    between threads (eskit's stores are).
    """
    # An async store over a sync one (memory, SQLite) lends the explorer that one.
    inner = getattr(store, "sync_store", None)
    if not isinstance(store, EventStore) and isinstance(inner, EventStore):
        store = inner
    if not isinstance(store, EventStore):
        raise InvalidInputError(
            f"the explorer needs a sync eskit EventStore (or an async store backed by one), "
            f"not {type(store).__name__}"
        )
    if not (hasattr(settings, "write_token") or hasattr(settings, "write_tokens")):
        raise InvalidInputError("settings need a write_token attribute (None: read-only)")
    if target is not None and not isinstance(target, ProjectionTarget):
        raise InvalidInputError(f"target must be a ProjectionTarget, not {target!r}")
    explorer = Explorer(store, settings, aggregates_by_name(aggregates),
                        projections_by_name(projections), target)
    pages, projection_pages = Pages(explorer), ProjectionPages(explorer)
    page: Any = explorer.guarded
    return [
        Route("/", page(pages.streams), name="explorer_home"),
        Route("/streams", page(pages.streams), name="explorer_streams"),
        Route("/stream", page(pages.stream), name="explorer_stream"),
        Route("/event", page(pages.event), name="explorer_event"),
        Route("/correlation", page(pages.correlation), name="explorer_correlation"),
        Route("/state", page(pages.state), name="explorer_state"),
        Route("/log", page(pages.log), name="explorer_log"),
        Route("/log/live", live_tail(explorer), name="explorer_live"),
        Route("/projections", page(projection_pages.overview), name="explorer_projections"),
        Route("/projections/confirm", page(projection_pages.confirm),
              name="explorer_confirm"),
        Route("/projections/parked", projection_pages.act, methods=["POST"],
              name="explorer_parked_action"),
        Route("/health", page(pages.health), name="explorer_health"),
        Route("/signin", signin_form(explorer), methods=["GET", "POST"],
              name="explorer_signin"),
        Route("/signout", signout(explorer), methods=["POST"], name="explorer_signout"),
        Mount("/static", StaticFiles(directory=_STATIC), name="explorer_static"),
    ]
