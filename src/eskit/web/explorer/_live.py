"""The global log's live tail: server-sent events, one per stored event, in position order.

Each message's ``id:`` is the event's position, so a browser's EventSource that
reconnects sends it back as ``Last-Event-ID`` and resumes after it: nothing
missed, nothing twice. The data is JSON with positions as strings (they can pass
2**53 on PostgreSQL, beyond a JavaScript number); the page inserts every field as
text, never as HTML.

A response lasts at most :data:`MAX_SECONDS`, then ends; the browser reconnects
after a second from where it was. That keeps a server's graceful shutdown from
waiting on a tail that never ends (uvicorn waits for open responses).

Not guaranteed: prompt delivery. The tail polls the store (every 0.25 s while
idle), reading in pages of 200; it is a viewer, not a subscription API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from eskit.events import Event
from eskit.stores.rows import UndecodableEvent
from eskit.web.explorer._context import (
    BadRequest,
    Explorer,
    int_param,
    link_maker,
    root_of,
)

__all__ = ["live_tail"]

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
MAX_SECONDS = 30.0
PAGE = 200


def live_tail(explorer: Explorer) -> Callable[[Request], Awaitable[Response]]:
    """The ``/log/live`` endpoint: from ``?after=POSITION``, or the ``Last-Event-ID`` header."""

    async def endpoint(request: Request) -> Response:
        if not explorer.signin.allows(request):
            return explorer.signin.refuse(request, root_of(request))
        try:
            after = _resume_point(request)
        except BadRequest as exc:
            return explorer.error(request, 400, str(exc))
        return StreamingResponse(
            _messages(explorer, request, after), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return endpoint


def _resume_point(request: Request) -> int:
    resumed = request.headers.get("last-event-id", "").strip()
    if resumed:
        if not resumed.isdigit() or len(resumed) > 40:
            raise BadRequest("Last-Event-ID must be a position")
        return int(resumed)
    after = int_param(request, "after", None)
    if after is None:
        raise BadRequest("give the position to follow from (?after=...)")
    return after


async def _messages(explorer: Explorer, request: Request, after: int) -> AsyncIterator[bytes]:
    url = link_maker(request)
    yield b"retry: 1000\n\n"
    loop = asyncio.get_running_loop()
    ends = loop.time() + MAX_SECONDS
    idle = 0.0
    while loop.time() < ends and not await request.is_disconnected():
        page = await run_in_threadpool(_read, explorer, after)
        for event in page:
            after = event.position
            yield _message(event, url)
        if len(page) < PAGE:
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS
            if idle >= HEARTBEAT_SECONDS:  # keeps proxies from closing a quiet stream
                idle = 0.0
                yield b": heartbeat\n\n"
        else:
            idle = 0.0


def _read(explorer: Explorer, after: int) -> list[Event | UndecodableEvent]:
    return list(explorer.store.read_all(after, PAGE, on_undecodable="yield"))


def _message(event: Event | UndecodableEvent, url: Callable[..., str]) -> bytes:
    stream = str(event.aggregate_id)
    data = {
        "position": str(event.position),
        "stream": stream,
        "version": str(event.version),
        "type": event.event_type,
        "timestamp": event.timestamp.isoformat(),
        "href": url("/event", stream=stream, version=event.version),
        "stream_href": url("/stream", stream=stream),
        "undecodable": isinstance(event, UndecodableEvent),
    }
    # JSON never contains a raw newline, which would end the SSE data field.
    return b"id: %d\ndata: %s\n\n" % (event.position, orjson.dumps(data))
