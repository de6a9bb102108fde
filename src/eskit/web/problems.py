"""Every error of the API as a problem (``application/problem+json``).

eskit's own errors are mapped by :func:`eskit.fastapi.add_exception_handlers`;
this adds what an event-store API meets besides: tokens, deleted and archived
streams, FastAPI's and Starlette's own errors (unknown route, wrong method), and
anything unexpected (a 500 with a problem body, the error still logged).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from eskit.errors import (
    DecodingError,
    MultiStreamConcurrencyError,
    StreamArchivedError,
    StreamDeletedError,
)
from eskit.fastapi import PROBLEM_JSON, add_exception_handlers, problem
from eskit.web.auth import AccessDenied
from eskit.web.models import AppendResponse, Problem

__all__ = ["install_problem_handlers", "problem_content_types", "responses"]

_log = logging.getLogger("eskit.web")

_WHY = {
    400: "The body cannot be read as JSON.",
    401: "No bearer token, or one that is not valid.",
    403: "The token may not do this (a read token writing), or the server is read-only.",
    404: "No such stream.",
    409: "A stream is not at the expected version (append-many: conflicts lists every "
         "one), or an event id is stored elsewhere.",
    412: "If-Match named another version than the stream's.",
    410: "The stream was deleted.",
    413: "The request body is too large.",
    422: "The request does not fit the API (a bad argument, name or event).",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route: its problems, and a 200 besides 201."""
    found: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status < 400:
            found[status] = {"model": AppendResponse, "description": "The events were "
                             "stored before: nothing new was written (duplicate: true)."}
        else:
            found[status] = {"model": Problem, "description": _WHY[status]}
    return found


def problem_content_types(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with every error response documented as ``application/problem+json``
    (FastAPI documents a response model as ``application/json``)."""
    schema = {"$ref": "#/components/schemas/Problem"}
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                # The health check's 503 is its report, not a problem.
                if (status.isdigit() and int(status) >= 400
                        and operation.get("operationId") != "health"):
                    response["content"] = {PROBLEM_JSON: {"schema": schema}}
    spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
        Problem.model_json_schema())
    return spec


def install_problem_handlers(app: FastAPI) -> None:
    add_exception_handlers(app)

    async def denied(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AccessDenied)
        headers = {"WWW-Authenticate": 'Bearer realm="eskit"'} if exc.status == 401 else None
        return problem(exc.status, exc.detail, code=exc.code, headers=headers)

    async def conflicts(request: Request, exc: Exception) -> Response:
        # append-many: every stream that moved, besides the first one's versions.
        assert isinstance(exc, MultiStreamConcurrencyError)
        found = [{"stream_id": str(c.stream_id),
                  "expected_version": getattr(c.expected_version, "name", c.expected_version),
                  "actual_version": c.actual_version} for c in exc.conflicts]
        return problem(409, str(exc), code="conflict", **found[0], conflicts=found)

    async def deleted(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StreamDeletedError)
        return problem(410, str(exc), code="stream-deleted", stream_id=str(exc.stream_id),
                       hard=exc.hard)

    async def archived(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StreamArchivedError)
        return problem(409, str(exc), code="stream-archived", stream_id=str(exc.stream_id))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        code = HTTPStatus(status).phrase.lower().replace(" ", "-")
        return problem(status, detail, code=code,
                       headers=dict(exc.headers) if exc.headers else None)

    async def undecodable(request: Request, exc: Exception) -> Response:
        # A stored event today's code cannot read: the server's problem, named.
        _log.error("eskit.web: %s", exc)
        return problem(500, str(exc), code="undecodable-event")

    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback after this answer is sent.
        return problem(500, "the server failed to answer; the error is logged",
                       code="internal-error")

    app.add_exception_handler(AccessDenied, denied)
    app.add_exception_handler(MultiStreamConcurrencyError, conflicts)
    app.add_exception_handler(StreamDeletedError, deleted)
    app.add_exception_handler(StreamArchivedError, archived)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(DecodingError, undecodable)
    app.add_exception_handler(Exception, unexpected)
