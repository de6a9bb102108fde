"""eskit's errors as HTTP problem details (RFC 9457, ``application/problem+json``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.responses import Response

from eskit.errors import (
    AggregateNotFound,
    AppendConditionFailed,
    CommandRetriesExhausted,
    ConcurrencyError,
    DuplicateEventError,
    EncodingError,
    InvalidInputError,
    StoreBusyError,
    StoreUnavailableError,
    VersionNotFound,
)
from eskit.fastapi._dependencies import PreconditionFailed

__all__ = ["PROBLEM_JSON", "add_exception_handlers", "problem"]

PROBLEM_JSON = "application/problem+json"

_log = logging.getLogger("eskit.fastapi")


def problem(
    status: int, detail: str, *, code: str, type_base: str | None = None,
    headers: dict[str, str] | None = None, **extensions: Any,
) -> JSONResponse:
    """A problem details response: ``type``, ``title``, ``status``, ``detail``, ``code``.

    ``type`` is ``about:blank`` (the title is then the status's phrase), or
    ``type_base + code`` when a base URI is given. ``code`` (a short name such as
    ``conflict``) and ``extensions`` are extension members.
    """
    body: dict[str, Any] = {
        "type": f"{type_base}{code}" if type_base else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extensions,
    }
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers,
                        media_type=PROBLEM_JSON)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def add_exception_handlers(
    app: FastAPI, *, type_base: str | None = None, validation_errors: bool = True,
) -> None:
    """Answer eskit's errors with problem details instead of a 500.

    ==========================================  ======  ========================
    error                                       status  ``code``
    ==========================================  ======  ========================
    :class:`~eskit.fastapi.PreconditionFailed`  412     ``precondition-failed``
    :class:`~eskit.AppendConditionFailed`       409     ``condition-failed``
    :class:`~eskit.ConcurrencyError`            409     ``conflict``
    :class:`~eskit.CommandRetriesExhausted`     409     ``conflict``
    :class:`~eskit.DuplicateEventError`         409     ``duplicate-event``
    :class:`~eskit.AggregateNotFound`           404     ``not-found``
    :class:`~eskit.VersionNotFound`             404     ``version-not-found``
    :class:`~eskit.InvalidInputError`           422     ``invalid-input``
    :class:`~eskit.StoreBusyError`,             503     ``store-unavailable``
    :class:`~eskit.StoreUnavailableError`
    ==========================================  ======  ========================

    With ``validation_errors`` (the default) FastAPI's own 422 for a request
    that does not fit its models is a problem too (``invalid-request``, with
    FastAPI's ``errors`` list). A 503 says ``Retry-After: 1`` and hides the
    driver's message (logged instead). Other errors (a stored event that cannot
    be decoded, a bug) are left to the app's 500 handling, so they are logged.
    """

    def handler(status: int, code: str, extra: Callable[[Any], dict[str, Any]]) -> Handler:
        async def handle(request: Request, exc: Exception) -> Response:
            return problem(status, str(exc), code=code, type_base=type_base, **extra(exc))

        return handle

    def none(exc: Any) -> dict[str, Any]:
        return {}

    def versions(exc: Any) -> dict[str, Any]:
        expected = exc.expected_version
        return {"stream_id": str(exc.stream_id),
                "expected_version": getattr(expected, "name", expected),
                "actual_version": exc.actual_version}

    def last_versions(exc: Any) -> dict[str, Any]:
        # A command that kept conflicting: its last conflict's versions, and how often.
        return {**versions(exc.last_conflict), "attempts": exc.attempts}

    def stream(exc: Any) -> dict[str, Any]:
        return {"stream_id": str(exc.aggregate_id)}

    def path(exc: Any) -> dict[str, Any]:
        return {"path": exc.path} if isinstance(exc, EncodingError) and exc.path else {}

    async def unavailable(request: Request, exc: Exception) -> Response:
        _log.warning("event store unavailable: %s", exc)
        return problem(503, "the event store is unavailable; retry later",
                       code="store-unavailable", type_base=type_base,
                       headers={"Retry-After": "1"})

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem(422, "the request does not fit the API's schema",
                       code="invalid-request", type_base=type_base, errors=exc.errors())

    def condition(exc: Any) -> dict[str, Any]:
        streams = exc.stream_id if isinstance(exc.stream_id, tuple) else (exc.stream_id,)
        after = getattr(exc.condition, "after", None)
        return {"stream_ids": [str(s) for s in streams],
                "after": None if after is None else str(after)}

    handlers: dict[type[Exception], Handler] = {
        PreconditionFailed: handler(412, "precondition-failed", versions),
        AppendConditionFailed: handler(409, "condition-failed", condition),
        ConcurrencyError: handler(409, "conflict", versions),
        CommandRetriesExhausted: handler(409, "conflict", last_versions),
        DuplicateEventError: handler(409, "duplicate-event", none),
        AggregateNotFound: handler(404, "not-found", stream),
        VersionNotFound: handler(404, "version-not-found", none),
        InvalidInputError: handler(422, "invalid-input", path),
        StoreBusyError: unavailable,
        StoreUnavailableError: unavailable,
    }
    if validation_errors:
        handlers[RequestValidationError] = invalid_request
    for error, handle in handlers.items():
        app.add_exception_handler(error, handle)
