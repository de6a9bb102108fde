"""Dependencies: a handler's store and repository, and its ``If-Match`` precondition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from eskit.aio.repository import AsyncRepository
from eskit.aio.store import AsyncEventStore
from eskit.errors import ConcurrencyError
from eskit.fastapi._lifespan import EskitState

__all__ = [
    "IfMatch",
    "IfMatchDep",
    "PreconditionFailed",
    "RepositoryDep",
    "StoreDep",
    "etag",
    "get_repository",
    "get_store",
    "if_match",
]


def _state(request: Request) -> EskitState:
    state = getattr(request.app.state, "eskit", None)
    if not isinstance(state, EskitState):
        raise RuntimeError(
            "no eskit store on this app: create it with FastAPI(lifespan=eskit_lifespan(...)) "
            "and run it with its lifespan (TestClient as a context manager, uvicorn)"
        )
    return state


def get_store(request: Request) -> AsyncEventStore:
    """The app's event store (opened by :func:`~eskit.fastapi.eskit_lifespan`)."""
    return _state(request).store


def get_repository(request: Request) -> AsyncRepository:
    """The app's repository, shared by every request (it holds no per-request state)."""
    return _state(request).repository


StoreDep = Annotated[AsyncEventStore, Depends(get_store)]
"""A handler parameter ``store: StoreDep`` receives the app's store."""

RepositoryDep = Annotated[AsyncRepository, Depends(get_repository)]
"""A handler parameter ``repository: RepositoryDep`` receives the app's repository."""


def etag(version: int) -> str:
    """The entity tag of an aggregate at ``version``: ``"3"`` (a strong tag, quotes included)."""
    return f'"{version}"'


class PreconditionFailed(ConcurrencyError):
    """``If-Match`` named other versions than the aggregate's: the client's view is stale.

    A :class:`~eskit.ConcurrencyError` (the expectation did not hold), answered
    with 412 rather than 409: nothing was decided, the client reloads first.
    """

    def __init__(self, stream_id: Any, expected: str, actual: int) -> None:
        super().__init__(stream_id, expected, actual)
        self.args = (
            f"{str(stream_id)!r} is at version {actual}; If-Match asked for {expected}",
        )


@dataclass(frozen=True)
class IfMatch:
    """The request's ``If-Match`` header, read as expected versions.

    ``header`` is ``None`` when the request sent none: then every version matches.
    Comparison is strong (RFC 9110, section 13.1.1): a weak tag ``W/"3"`` never
    matches; ``*`` matches any version of an existing aggregate.
    """

    header: str | None

    def matches(self, version: int) -> bool:
        """Whether an aggregate at ``version`` meets the precondition."""
        if self.header is None:
            return True
        tags = [tag.strip() for tag in self.header.split(",")]
        return "*" in tags or etag(version) in tags

    def check(self, stream_id: Any, version: int) -> None:
        """Raise :class:`PreconditionFailed` (412) unless ``version`` matches.

        Call it after loading and before deciding, so that a stale request
        changes nothing.
        """
        if not self.matches(version):
            raise PreconditionFailed(stream_id, str(self.header), version)


def if_match(request: Request) -> IfMatch:
    """The request's ``If-Match`` precondition (see :class:`IfMatch`)."""
    values = request.headers.getlist("if-match")
    # An empty header names no tag, so it matches nothing (412), like a stale one.
    return IfMatch(", ".join(values) if values else None)


IfMatchDep = Annotated[IfMatch, Depends(if_match)]
"""A handler parameter ``precondition: IfMatchDep`` receives the request's :class:`IfMatch`."""
