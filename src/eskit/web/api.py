"""The JSON routes of the HTTP API: append, read a stream, list streams, the global log.

Each route checks its token (:mod:`eskit.web.auth`), turns the request into one
call of the store's own API and its result into a document
(:mod:`eskit.web.encoding`). Every rule about events (expected versions,
idempotent retries, atomic batches, names) is the store's; errors are answered as
problems by :mod:`eskit.web.problems`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes, urlencode

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.responses import Response

from eskit.aio.store import AsyncEventStore
from eskit.dcb import AppendCondition
from eskit.dcb import Query as EventQuery
from eskit.dcb import QueryItem as EventQueryItem
from eskit.errors import (
    AggregateNotFound,
    AppendConditionFailed,
    ConcurrencyError,
    InvalidInputError,
)
from eskit.events import NewEvent
from eskit.fastapi import PreconditionFailed, etag
from eskit.health import check_health_async
from eskit.stores.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    Expected,
    StreamAppend,
)
from eskit.web.auth import ReadAccess, WriteAccess
from eskit.web.encoding import JSONDocument, event_document, stream_document, stream_path
from eskit.web.models import (
    MAX_BATCH,
    AppendManyRequest,
    AppendManyResponse,
    AppendRequest,
    AppendResponse,
    ConditionIn,
    EventPage,
    HealthOut,
    NewEventIn,
    QueryIn,
    ReadEventsRequest,
    ReadEventsResponse,
    StreamList,
    StreamMetadata,
    StreamPage,
)
from eskit.web.problems import responses

__all__ = ["MAX_PAGE", "router", "store_of", "stream_from_path"]

MAX_PAGE = 1000
"""The most events or streams one page holds."""
MAX_POSITION = 2**128 - 1
MAX_VERSION = 2**63 - 1

router = APIRouter(prefix="/api", default_response_class=JSONDocument)

StreamParam = Annotated[str, Path(
    description="The stream id, percent-encoded as one path segment (a / is %2F).")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="How many to return at most.")]


def store_of(request: Request) -> AsyncEventStore:
    store: AsyncEventStore = request.app.state.eskit_web_store
    return store


def stream_from_path(segment: str) -> str:
    """The stream id a path segment names (kept encoded by ``RawStreamPath``)."""
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("the stream id in the path is not valid UTF-8") from None


def _page_url(path: str, **params: Any) -> str:
    return path + "?" + urlencode({k: v for k, v in params.items() if v is not None})


def _expectation(body: Expected | str | None, if_match: str | None) -> tuple[Expected, bool]:
    """The expected version a request states, and whether it came from ``If-Match``."""
    if if_match is not None:
        if body is not None:
            raise InvalidInputError("give the expected version once: in If-Match or the body")
        tag = if_match.strip()
        if tag == "*":
            return STREAM_EXISTS, True
        digits = tag[1:-1]
        if len(tag) < 3 or tag[0] != '"' or tag[-1] != '"' or not digits.isdigit() \
                or not digits.isascii() or int(digits) > MAX_VERSION:
            raise InvalidInputError('If-Match must be one strong tag such as "3", or *')
        return int(digits), True
    named: dict[str, Expected] = {"any": ANY, "no_stream": NO_STREAM,
                                  "stream_exists": STREAM_EXISTS}
    if body is None:
        return ANY, False
    if isinstance(body, str):
        return named[body], False
    return body, False


@router.post(
    "/streams/{stream_id}", status_code=201, dependencies=[WriteAccess],
    response_model=AppendResponse, responses=responses(200, 400, 401, 403, 409, 410, 412, 413, 422),
    summary="Append events to a stream",
)
async def append(
    request: Request,
    stream_id: StreamParam,
    body: AppendRequest,
    if_match: Annotated[str | None, Header(
        description='The stream version the client saw, as an entity tag: "3"; * for any '
        "existing stream. A mismatch is 412.")] = None,
) -> Response:
    """Append the batch if the stream is at the expected version (409 if not; 412 when
    it was stated by ``If-Match``). A retried request with the same event ids is
    answered 200 with ``duplicate: true`` and stores nothing."""
    stream = stream_from_path(stream_id)
    expected, precondition = _expectation(body.expected_version, if_match)
    condition = _condition(body.condition)
    try:
        result = await store_of(request).append(stream, _new_events(body.events), expected,
                                                condition=condition)
    except ConcurrencyError as exc:
        # A failed DCB condition stays itself (409 condition-failed), not a 412.
        if precondition and not isinstance(exc, PreconditionFailed | AppendConditionFailed):
            raise PreconditionFailed(stream, str(if_match), exc.actual_version) from exc
        raise
    return JSONDocument(_appended(stream, result), status_code=200 if result.duplicate else 201,
                        headers={"ETag": etag(result.version), "Location": stream_path(stream)})


def _new_events(events: list[NewEventIn]) -> list[NewEvent]:
    return [
        NewEvent(e.type, e.data, e.metadata, tags=tuple(e.tags)) if e.id is None
        else NewEvent(e.type, e.data, e.metadata, event_id=e.id, tags=tuple(e.tags))
        for e in events
    ]


def _query(query: QueryIn) -> EventQuery:
    """The store's query (its checks raise InvalidInputError: a 422)."""
    return EventQuery([EventQueryItem(tuple(i.types), tuple(i.tags)) for i in query.items])


def _condition(condition: ConditionIn | None) -> AppendCondition | None:
    if condition is None:
        return None
    after = None if condition.after is None else _position(condition.after)
    return AppendCondition(_query(condition.query), after)


def _position(text: str) -> int:
    position = int(text)
    if position > MAX_POSITION:
        raise InvalidInputError(f"position {text} is past the largest one ({MAX_POSITION})")
    return position


def _appended(stream: str, result: AppendResult) -> dict[str, Any]:
    return {
        "stream_id": stream,
        "version": result.version,
        "position": str(result.position),
        "duplicate": result.duplicate,
        "events": [{"id": str(e.event_id), "version": e.version, "position": str(e.position)}
                   for e in result.events],
    }


@router.post(
    "/append-many", status_code=201, dependencies=[WriteAccess],
    response_model=AppendManyResponse,
    responses={**responses(400, 401, 403, 409, 410, 413, 422), 200: {
        "model": AppendManyResponse,
        "description": "The call was stored before: nothing new was written (duplicate: true)."}},
    summary="Append to several streams at once, all or nothing",
)
async def append_many(request: Request, body: AppendManyRequest) -> Response:
    """Append every stream's batch in one transaction, or none of them.

    Each stream is checked against its own ``expected_version`` (any when left out).
    If any stream moved, the answer is 409 ``conflict`` with ``conflicts``: one
    entry (``stream_id``, ``expected_version``, ``actual_version``) per stream that
    was not where the request expected, and nothing is written. A stream named
    twice is 422. A retried request with the same event ids is answered 200 with
    ``duplicate: true`` and stores nothing."""
    appends = [
        StreamAppend(a.stream_id, _new_events(a.events), _expectation(a.expected_version, None)[0])
        for a in body.appends
    ]
    if any(a.condition is not None for a in body.appends):
        raise InvalidInputError("append-many takes one condition for the whole call, "
                                "not one per stream")
    results = await store_of(request).append_many(appends,
                                                  condition=_condition(body.condition))
    duplicate = results[0].duplicate
    document = {"duplicate": duplicate,
                "results": [_appended(a.stream_id, r) for a, r in zip(body.appends, results,
                                                                       strict=True)]}
    return JSONDocument(document, status_code=200 if duplicate else 201)


@router.get(
    "/streams/{stream_id}", dependencies=[ReadAccess], response_model=StreamPage,
    responses=responses(401, 404, 422), summary="Read a stream, a page at a time",
)
async def read_stream(
    request: Request,
    stream_id: StreamParam,
    limit: Limit = 100,
    from_version: Annotated[int | None, Query(
        alias="from", ge=0, le=MAX_VERSION,
        description="The first version to return (inclusive); forward: from the first "
        "event by default, backward: from the last.")] = None,
    direction: Literal["forward", "backward"] = "forward",
) -> Response:
    """The stream's events in version order (``direction=backward``: newest first)."""
    stream = stream_from_path(stream_id)
    store = store_of(request)
    if direction == "forward":
        start = max((from_version or 1) - 1, 0)
        events = await store.read_stream(stream, start, limit=limit + 1)
    else:
        events = await store.read_stream(stream, 0, from_version, backwards=True,
                                         limit=limit + 1)
    more, events = len(events) > limit, events[:limit]
    if not events and await store.head_version(stream) == 0:
        raise AggregateNotFound(stream, reason="the stream has no events")
    following = None
    if more:
        last = events[-1].version
        following = _page_url(stream_path(stream), limit=limit, direction=direction,
                              **{"from": last + 1 if direction == "forward" else last - 1})
    return JSONDocument({"stream_id": stream, "direction": direction,
                         "events": [event_document(e) for e in events], "next": following})


@router.get(
    "/streams/{stream_id}/metadata", dependencies=[ReadAccess], response_model=StreamMetadata,
    responses=responses(401, 404, 422), summary="A stream's version and times",
)
async def stream_metadata(request: Request, stream_id: StreamParam) -> Response:
    """The stream's version, when it was created and last written, and its positions.
    The ``ETag`` is the version, ready for ``If-Match``."""
    stream = stream_from_path(stream_id)
    store = store_of(request)
    last = await store.read_stream(stream, backwards=True, limit=1)
    first = await store.read_stream(stream, limit=1)
    if not last or not first:
        raise AggregateNotFound(stream, reason="the stream has no events")
    head = last[0]
    return JSONDocument({
        "stream_id": stream, "version": head.version, "created": first[0].timestamp,
        "last_write": head.timestamp, "first_position": str(first[0].position),
        "last_position": str(head.position),
    }, headers={"ETag": etag(head.version)})


@router.get(
    "/streams", dependencies=[ReadAccess], response_model=StreamList,
    responses=responses(401, 422), summary="List streams by id, a page at a time",
)
async def list_streams(
    request: Request,
    limit: Limit = 100,
    prefix: Annotated[str | None, Query(description="Only streams whose id starts so.")]
    = None,
    after: Annotated[str | None, Query(
        description="Start after this stream id (the last one of the previous page); "
        "it need not exist.")] = None,
) -> Response:
    """Streams whose id starts with ``prefix``, ordered by id (code-point order), after
    the cursor ``after`` (deleted ones left out). A page does not shift when streams are
    created before it."""
    store = store_of(request)
    paged = getattr(store, "list_streams_page", None)
    if paged is not None:  # an index range, where the store has one
        infos = await paged(prefix or "", after, limit + 1)
    else:
        infos = sorted(await store.list_streams(), key=lambda i: str(i.stream_id))
        infos = [i for i in infos if (not prefix or str(i.stream_id).startswith(prefix))
                 and (after is None or str(i.stream_id) > after)][:limit + 1]
    page = infos[:limit]
    following = None
    if len(infos) > limit:
        following = _page_url("/api/streams", limit=limit, prefix=prefix,
                              after=str(page[-1].stream_id))
    return JSONDocument({"streams": [stream_document(i) for i in page], "next": following})


@router.get(
    "/events", dependencies=[ReadAccess], response_model=EventPage,
    responses=responses(401, 422), summary="Read the global log",
)
async def read_all(
    request: Request,
    limit: Limit = 100,
    from_position: Annotated[int, Query(
        ge=0, le=MAX_POSITION, description="Return the events after this position "
        "(exclusive: pass the last position you processed).")] = 0,
) -> Response:
    """Every stream's events in global order, after ``from_position``."""
    events = [e async for e in store_of(request).read_all(
        from_position, limit=limit + 1, on_undecodable="yield")]
    more, events = len(events) > limit, events[:limit]
    following = None
    if more:
        following = _page_url("/api/events", from_position=events[-1].position, limit=limit)
    return JSONDocument({"events": [event_document(e) for e in events], "next": following})


@router.post(
    "/read-events", dependencies=[ReadAccess], response_model=ReadEventsResponse,
    responses=responses(401, 422), summary="Read the events a DCB query matches",
)
async def read_events(request: Request, body: ReadEventsRequest) -> Response:
    """The events matching the query after ``after``, in global order, with the
    position the read is consistent with: decide, then append with
    ``condition: {"query": ..., "after": position}``. A read cut short by ``limit``
    is consistent up to its last event only: read on from there. A POST because the
    query is a document; it writes nothing."""
    found = await store_of(request).read_events(_query(body.query), _position(body.after),
                                                body.limit or MAX_BATCH)
    return JSONDocument({"events": [event_document(e) for e in found.events],
                         "position": str(found.position)})


@router.get(
    "/health", response_model=HealthOut, operation_id="health",
    responses={503: {"model": HealthOut}},
    summary="Whether the store can be read",
)
async def health(request: Request) -> Response:
    """eskit's health checks (:mod:`eskit.health`); 503 when one is failing. No token
    needed: it shows no events."""
    report = await check_health_async(store_of(request))
    return JSONDocument(report.to_dict(), status_code=503 if report.status == "failing" else 200)
