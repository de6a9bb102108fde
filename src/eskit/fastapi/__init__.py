"""FastAPI integration: a lifespan, dependencies and problem-details error handlers.

::

    from fastapi import FastAPI
    from eskit.fastapi import RepositoryDep, add_exception_handlers, eskit_lifespan

    app = FastAPI(lifespan=eskit_lifespan("sqlite:///events.db"))
    add_exception_handlers(app)

    @app.get("/carts/{cart_id}")
    async def get_cart(cart_id: str, repository: RepositoryDep) -> dict:
        cart = await repository.get(cart_id, Cart)
        ...

Needs the ``fastapi`` extra (``pip install 'eskit[fastapi]'``). See docs/fastapi.md.
"""

from __future__ import annotations

from eskit.errors import MissingExtraError

try:
    import fastapi  # noqa: F401
except ImportError as exc:
    raise MissingExtraError("fastapi", "eskit.fastapi", name=exc.name) from exc

from eskit.fastapi._dependencies import (
    IfMatch,
    IfMatchDep,
    PreconditionFailed,
    RepositoryDep,
    StoreDep,
    etag,
    get_repository,
    get_store,
    if_match,
)
from eskit.fastapi._lifespan import (
    BackgroundService,
    EskitState,
    as_task,
    background_service,
    eskit_lifespan,
    in_thread,
)
from eskit.fastapi._problems import PROBLEM_JSON, add_exception_handlers, problem

__all__ = [
    "PROBLEM_JSON",
    "BackgroundService",
    "EskitState",
    "IfMatch",
    "IfMatchDep",
    "PreconditionFailed",
    "RepositoryDep",
    "StoreDep",
    "add_exception_handlers",
    "as_task",
    "background_service",
    "eskit_lifespan",
    "etag",
    "get_repository",
    "get_store",
    "if_match",
    "in_thread",
    "problem",
]
