"""ASGI middleware at the edge of the API: the request size limit and stream-id paths.

Both work on the raw ASGI messages, so they hold for every route, before FastAPI
parses anything.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "RawStreamPath"]

_PROBLEM_HEADERS = [(b"content-type", b"application/problem+json")]


def _too_large(limit: int) -> bytes:
    return orjson.dumps({
        "type": "about:blank", "title": "Content Too Large", "status": 413,
        "detail": f"the request body is larger than {limit:,} bytes", "code": "too-large",
        "max_request_bytes": limit,
    })


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with a 413 problem.

    A ``Content-Length`` over the limit is refused before the body is read; a body
    without one (chunked) is counted as it arrives and refused as soon as it
    passes the limit, so the app never holds more than ``limit`` bytes of it.
    Starlette's own limiter answers in plain text; every error here is a problem.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server rejects a malformed length itself
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Whatever the app answers to the failed read (FastAPI makes it a 400) is
            # dropped: the client gets the 413 below.
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = _too_large(self.limit)
        await send({"type": "http.response.start", "status": 413, "headers": [
            *_PROBLEM_HEADERS, (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


class RawStreamPath:
    """Keep the stream id of ``/api/streams/<id>...`` percent-encoded for routing.

    Servers decode the path before routing, so ``a%2Fb`` (the stream ``a/b``)
    would look like two segments and ``x%2Fmetadata`` like the metadata route.
    This rebuilds the path from ``raw_path`` with the stream segment still
    encoded (``a%2Fb``); the route decodes it (:func:`eskit.web.api.stream_from_path`).
    Any stream id (Unicode, ``/``, ``%``, blanks) then round-trips exactly.
    """

    PREFIX = b"/api/streams/"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw and raw.startswith(self.PREFIX):
            raw = raw.partition(b"?")[0]
            segment, slash, rest = raw[len(self.PREFIX):].partition(b"/")
            # Re-quoted so that a client that sent raw UTF-8 or a bare space routes too;
            # "%" stays: the segment is decoded exactly once, by the route.
            encoded = quote_from_bytes(segment, safe="%")
            scope = dict(scope)
            scope["path"] = "/api/streams/" + encoded + (slash + rest).decode("latin-1")
        await self.app(scope, receive, send)
