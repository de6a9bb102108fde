"""The eskit web application: the HTTP API under ``/api``, the explorer at ``/``.

:func:`create_app` builds one FastAPI app over one store. The HTML explorer
(``eskit.web.explorer``, built separately) is mounted when that module is present; the API
works without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from eskit.aggregate import Aggregate
from eskit.aio._sync_backed import SyncBackedStore
from eskit.aio.config import open_store as open_async_store
from eskit.aio.memory import AsyncInMemoryEventStore
from eskit.aio.sqlite import AsyncSQLiteEventStore
from eskit.aio.store import AsyncEventStore
from eskit.errors import InvalidInputError
from eskit.stores.base import EventStore
from eskit.stores.memory import InMemoryEventStore
from eskit.stores.sqlite import SQLiteEventStore
from eskit.web import api, sse
from eskit.web.limits import BodyLimit, RawStreamPath
from eskit.web.problems import install_problem_handlers, problem_content_types
from eskit.web.settings import WebSettings
from eskit.web.threaded import ThreadedStore

__all__ = ["create_app", "stop_event_streams"]

_log = logging.getLogger("eskit.web")

API_DESCRIPTION = """\
Append to event streams, read them, and follow the global log of an eskit store.

Send `Authorization: Bearer <token>`: a read token to read (when the server has
any), a write token to append. Positions are strings of digits. Every error is a
problem (`application/problem+json`) whose `code` names it. See docs/http-api.md.
"""


def _as_async(store: EventStore | AsyncEventStore) -> AsyncEventStore:
    if isinstance(store, AsyncEventStore):
        return store
    if isinstance(store, SQLiteEventStore):  # also woken by other processes' commits
        return AsyncSQLiteEventStore.from_sync(store)
    if isinstance(store, InMemoryEventStore):
        return AsyncInMemoryEventStore.from_sync(store)
    if isinstance(store, EventStore):
        return ThreadedStore.from_sync(store)
    raise InvalidInputError(
        f"create_app needs an EventStore or an AsyncEventStore, got {type(store).__name__}"
    )


def create_app(
    store: EventStore | AsyncEventStore | str | os.PathLike[str], *,
    settings: WebSettings | None = None, schema: str | None = None,
    aggregates: Sequence[type[Aggregate]] = (),
) -> FastAPI:
    """A FastAPI app serving ``store`` over HTTP (see docs/http-api.md).

    ``store`` is a sync or an async store, which the app uses but does not own
    (close it after the server has stopped; a sync store's calls run in worker
    threads), or a store URL (a SQLite path, ``postgresql://...``; ``schema`` as
    for :func:`eskit.open_store`), which the app opens as an async store when the
    server starts (its lifespan; it creates nothing) and closes when it stops. An
    async store belongs to the event loop it was opened in, so pass one only to an
    app served in that loop; a URL is opened in the server's own.

    ``aggregates``: the aggregate classes whose state and diffs the explorer shows
    (time travel). ``settings`` default to ``WebSettings()``: reads open to anyone who reaches the
    server, writes refused. The OpenAPI spec is at ``/api/openapi.json`` and its
    page at ``/api/docs``.
    """
    settings = WebSettings() if settings is None else settings
    if not isinstance(settings, WebSettings):
        raise InvalidInputError("settings must be a WebSettings")
    if not all(isinstance(a, type) and issubclass(a, Aggregate) for a in aggregates):
        raise InvalidInputError("aggregates must be Aggregate classes")
    url = store if isinstance(store, str | os.PathLike) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if url is None:
            yield
            return
        opened = await open_async_store(url, schema=schema, create=False)
        app.state.eskit_web_store = opened
        try:
            yield
        finally:
            stop_event_streams(app)
            await opened.close()

    app = FastAPI(
        title="eskit event store", description=API_DESCRIPTION,
        openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
        lifespan=lifespan,
    )
    if url is None:
        app.state.eskit_web_store = _as_async(store)  # type: ignore[arg-type]
    app.state.eskit_web_settings = settings
    app.state.eskit_web_streams = sse.EventStreams()
    install_problem_handlers(app)
    app.include_router(api.router)
    app.include_router(sse.router)
    app.state.eskit_explorer = _mount_explorer(app, store, settings, tuple(aggregates))
    # Outermost first: the path is fixed before routing, the size checked before reading.
    app.add_middleware(RawStreamPath)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = FastAPI.openapi(app)
            app.openapi_schema = problem_content_types(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def stop_event_streams(app: FastAPI) -> None:
    """End every open ``/api/subscribe`` response of ``app`` (from any thread) and
    refuse new ones: call it when the server begins to shut down, so that it need
    not wait for clients that never leave."""
    streams: sse.EventStreams = app.state.eskit_web_streams
    streams.close()


def _mount_explorer(app: FastAPI, store: Any, settings: WebSettings,
                    aggregates: tuple[type[Aggregate], ...]) -> bool:
    """Mount ``explorer_routes(store, settings)`` at ``/`` when the explorer is there
    (and say whether it was).

    Only over a sync store (or an async one wrapping a sync store), which is what
    the explorer reads. A browser sends no bearer token, so with read tokens
    configured the explorer asks for one on its sign-in page and keeps a cookie
    instead (see :mod:`eskit.web.explorer._signin`); its pages never show what the
    API would refuse to show.
    """
    # Looked up rather than imported in a try: an explorer that is present but broken
    # must fail loudly, not vanish from the app.
    if importlib.util.find_spec("eskit.web.explorer") is None:
        return False
    if not isinstance(store, EventStore | SyncBackedStore):
        return False
    explorer = importlib.import_module("eskit.web.explorer")
    app.router.routes.extend(explorer.explorer_routes(store, settings, aggregates=aggregates))
    return True
