"""The read-only pages: streams, a stream, an event, time travel, the log, health.

Sync endpoints: Starlette runs each in its thread pool, so a slow store read
blocks one worker thread, never the event loop.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from eskit.health import check_health
from eskit.repository import Repository
from eskit.timetravel import MISSING, state_diff
from eskit.web.explorer._context import (
    BadRequest,
    Explorer,
    int_param,
    limit_param,
    text_param,
)
from eskit.web.explorer._queries import (
    correlated_events,
    event_at,
    find_event,
    log_page,
    related_ids,
    stream_timeline,
    streams_page,
)

__all__ = ["Pages"]


class Pages:
    """One method per page; each takes the request and returns the rendered page."""

    def __init__(self, explorer: Explorer) -> None:
        self.x = explorer

    def streams(self, request: Request) -> Response:
        prefix = text_param(request, "prefix")
        event_type = text_param(request, "type")
        after = request.query_params.get("after") or None
        limit = limit_param(request, 50)
        page = streams_page(self.x.store, prefix=prefix, event_type=event_type, after=after,
                            limit=limit)
        return self.x.render(request, "streams.html", {
            "page": page, "prefix": prefix, "event_type": event_type, "after": after,
            "limit": _unless(limit, 50),
        })

    def stream(self, request: Request) -> Response:
        stream_id = _stream_param(request)
        after = int_param(request, "from", 0, maximum=2**63 - 1) or 0
        limit = limit_param(request, 100)
        events, head = stream_timeline(self.x.store, stream_id, after_version=after,
                                       limit=limit)
        if head == 0:
            return self.x.error(request, 404, f"stream {stream_id!r} has no events")
        last = events[-1].version if events else after
        return self.x.render(request, "stream.html", {
            "stream_id": stream_id, "events": events, "head": head, "after": after,
            "next_from": last if last < head else None, "aggregates": self.x.aggregates,
            "limit": _unless(limit, 100),
        })

    def event(self, request: Request) -> Response:
        event_id = request.query_params.get("id")
        if event_id is not None:
            try:
                wanted = UUID(event_id)
            except ValueError:
                raise BadRequest(f"{event_id[:60]!r} is not an event id") from None
            event = find_event(self.x.store, wanted)
            missing = f"no event with id {event_id}"
        else:
            stream_id = _stream_param(request)
            version = int_param(request, "version", None, minimum=1, maximum=2**63 - 1)
            if version is None:
                raise BadRequest("give an event id, or a stream and a version")
            event = event_at(self.x.store, stream_id, version)
            missing = f"stream {stream_id!r} has no event at version {version}"
        if event is None:
            return self.x.error(request, 404, missing)
        return self.x.render(request, "event.html", {
            "event": event, "stream_id": str(event.aggregate_id), "related": related_ids(event),
        })

    def correlation(self, request: Request) -> Response:
        value = text_param(request, "id")
        if not value:
            raise BadRequest("give the correlation id to look for")
        events, more = correlated_events(self.x.store, value)
        return self.x.render(request, "correlation.html",
                             {"correlation": value, "events": events, "more": more})

    def state(self, request: Request) -> Response:
        """An aggregate's state at a version or a moment, or the diff between two versions."""
        stream_id = _stream_param(request)
        name = text_param(request, "class")
        cls = self.x.aggregates.get(name)
        if cls is None:
            raise BadRequest(
                f"{name!r} is not a registered aggregate class" if name else
                "choose an aggregate class (register classes with the explorer)"
            )
        repository = Repository(self.x.store)
        head = self.x.store.head_version(stream_id)
        before = int_param(request, "before", None, maximum=2**63 - 1)
        if before is not None:
            after = int_param(request, "after", head, maximum=2**63 - 1)
            assert after is not None
            diff = state_diff(repository, stream_id, cls, before, after)
            return self.x.render(request, "diff.html", {
                "stream_id": stream_id, "class_name": name, "diff": diff, "missing": MISSING,
                "head": head,
            })
        version = int_param(request, "version", None, minimum=1, maximum=2**63 - 1)
        at = _moment_param(request, "at")
        if at is not None:
            aggregate = repository.get(stream_id, cls, as_of=at)
        else:
            aggregate = repository.get(stream_id, cls, version=version)
        return self.x.render(request, "state.html", {
            "stream_id": stream_id, "class_name": name, "aggregate": aggregate,
            "state": aggregate.snapshot_state(), "head": head, "at": at,
        })

    def log(self, request: Request) -> Response:
        after = int_param(request, "after", 0) or 0
        limit = limit_param(request, 50)
        events = log_page(self.x.store, after=after, limit=limit)
        return self.x.render(request, "log.html", {
            "events": events, "after": after,
            "next_after": events[-1].position if len(events) == limit else None,
            "head": self.x.store.head_position(), "limit": _unless(limit, 50),
        })

    def health(self, request: Request) -> Response:
        report = check_health(self.x.store, projections=self.x.target)
        return self.x.render(request, "health.html", {"report": report},
                             status_code=503 if report.status == "failing" else 200)


def _unless(limit: int, default: int) -> int | None:
    """The limit to carry in paging links: none when it is the default."""
    return None if limit == default else limit


def _stream_param(request: Request) -> str:
    stream_id = text_param(request, "stream")
    if not stream_id:
        raise BadRequest("give a stream id (?stream=...)")
    return stream_id


def _moment_param(request: Request, name: str) -> datetime | None:
    raw = text_param(request, name).strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time, not {raw[:60]!r}") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name} needs a timezone (for example {raw}+00:00)")
    return moment
