"""``GET /api/subscribe``: the global log as server-sent events, resumable.

Each event is one SSE message whose ``id`` is its global position and whose
``data`` is the event's JSON document. A client that reconnects sends the last
id it saw as ``Last-Event-ID`` (browsers' ``EventSource`` does so by itself) and
the stream goes on after that position: it misses nothing and repeats nothing,
because it is an :class:`~eskit.aio.AsyncSubscription`, which reads only what
lies after its checkpoint. While no event comes, a comment line (``:``) is sent
every ``heartbeat_seconds``. :class:`EventStreams` ends every open stream
cleanly when the server shuts down (``eskit serve`` does so on Ctrl-C).

An event the server cannot decode (a poison event) is sent in its place as an
``undecodable`` SSE event whose data says why, so it never halts the stream.

Not guaranteed: delivery to the client. An event is sent once per connection;
one that was sent but not received before a connection broke is sent again
only because the client resumes from the last id it did receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import StreamingResponse

from eskit.aio.subscription import AsyncSubscription
from eskit.errors import InvalidInputError
from eskit.events import Event
from eskit.stores.rows import UndecodableEvent
from eskit.web.api import MAX_POSITION, store_of
from eskit.web.auth import ReadAccess, settings_of
from eskit.web.encoding import dumps, event_document
from eskit.web.problems import responses

__all__ = ["EventStreams", "router"]

router = APIRouter(prefix="/api")

_BATCH = 500  # events written per chunk when the client is behind
_QUEUE = 2000  # events read ahead of a slow client, at most
POLL_SECONDS = 1.0
"""How long an idle stream waits for a wake-up before it reads the store anyway."""


class EventStreams:
    """The open event streams of one app, so that a shutdown can end them all.

    :meth:`close` may be called from any thread (a signal handler, a test's
    thread); each subscription is stopped from its own event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[AsyncSubscription, asyncio.AbstractEventLoop] = {}
        self.closed = False

    def add(self, subscription: AsyncSubscription) -> bool:
        with self._lock:
            if self.closed:
                return False
            self._open[subscription] = asyncio.get_running_loop()
            return True

    def discard(self, subscription: AsyncSubscription) -> None:
        with self._lock:
            self._open.pop(subscription, None)

    def close(self) -> None:
        """End every open stream (each client sees its response end) and refuse new ones."""
        with self._lock:
            self.closed = True
            found = list(self._open.items())
        for subscription, loop in found:
            with contextlib.suppress(RuntimeError):  # that loop has closed already
                loop.call_soon_threadsafe(subscription.stop)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


def _start(from_position: int, last_event_id: str | None) -> int:
    if last_event_id is None:
        return from_position
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_POSITION:
        raise InvalidInputError("Last-Event-ID must be a position (a string of digits)")
    return int(text)


def _message(event: Event | UndecodableEvent) -> str:
    # An undecodable event is its own SSE type: EventSource's onmessage never sees it,
    # yet its id moves the client's Last-Event-ID past it.
    kind = "event: undecodable\n" if isinstance(event, UndecodableEvent) else ""
    return f"{kind}id: {event.position}\ndata: {dumps(event_document(event)).decode()}\n\n"


@router.get(
    "/subscribe", dependencies=[ReadAccess], response_class=StreamingResponse,
    responses={**responses(401, 422), 200: {
        "description": "Server-sent events: `id` is the position, `data` an Event.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    summary="Follow the global log (server-sent events)",
)
async def subscribe(
    request: Request,
    from_position: Annotated[int, Query(
        ge=0, le=MAX_POSITION, description="Send the events after this position.")] = 0,
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", description="The id of the last event received: resume "
        "after it (wins over from_position).")] = None,
) -> StreamingResponse:
    """Every event after the position, history first, then live, until the client leaves."""
    start = _start(from_position, last_event_id)
    store = store_of(request)
    streams: EventStreams = request.app.state.eskit_web_streams
    heartbeat = settings_of(request).heartbeat_seconds
    subscription = store.subscribe(start, page_size=_BATCH, poll_interval=POLL_SECONDS,
                                   on_undecodable="yield")
    return StreamingResponse(
        _events(subscription, streams, start, heartbeat), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    subscription: AsyncSubscription, streams: EventStreams, start: int, heartbeat: float,
) -> AsyncIterator[str]:
    if not streams.add(subscription):
        return  # shutting down: an empty stream, the client retries elsewhere or later
    # The subscription reads ahead into a list (a page at a time) while the response
    # writes what is there in one chunk: per event, one append, not a queue round trip.
    buffer: list[Event | UndecodableEvent] = []
    ready = asyncio.Event()  # something is in the buffer, or the subscription ended
    room = asyncio.Event()  # the buffer is below its bound
    room.set()
    ended = False

    async def read() -> None:
        nonlocal ended
        try:
            async for event in subscription:
                buffer.append(event)
                ready.set()
                if len(buffer) >= _QUEUE:  # a slow client: stop reading ahead
                    room.clear()
                    await room.wait()
        finally:
            ended = True
            ready.set()

    reader = asyncio.create_task(read())
    try:
        yield f": eskit events after position {start}\nretry: 1000\n\n"
        while True:
            if not buffer and not ended:
                try:
                    await asyncio.wait_for(ready.wait(), heartbeat)
                except TimeoutError:
                    yield ":\n\n"
                    continue
            ready.clear()
            taken = buffer[:_BATCH]
            del buffer[:_BATCH]
            room.set()
            if taken:
                yield "".join([_message(event) for event in taken])
            elif ended:
                break
        await reader  # the subscription's error, if it ended on one
    finally:
        streams.discard(subscription)
        subscription.stop()
        room.set()
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
