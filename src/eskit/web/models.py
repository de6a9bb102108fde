"""The API's request and response bodies, as pydantic models for the OpenAPI spec.

Requests are validated against them; responses are written by
:mod:`eskit.web.encoding` and documented by them (the spec tests check that the
two agree).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt

__all__ = [
    "AppendManyRequest",
    "AppendManyResponse",
    "AppendRequest",
    "AppendResponse",
    "ConditionIn",
    "EventOut",
    "EventPage",
    "HealthOut",
    "NewEventIn",
    "Problem",
    "QueryIn",
    "QueryItemIn",
    "ReadEventsRequest",
    "ReadEventsResponse",
    "StreamList",
    "StreamMetadata",
    "StreamOut",
    "StreamPage",
]

Position = Field(pattern=r"^[0-9]+$", description="a global position, as a string of digits")
MAX_BATCH = 10_000
Version = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewEventIn(_Strict):
    """One event to append."""

    id: UUID | None = Field(
        None, description="The event's id. Give one to make a retried request idempotent: "
        "the same events with the same ids at the same place are stored once.")
    type: str = Field(min_length=1, description="The event type, e.g. OrderPlaced.")
    data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(
        default_factory=list, max_length=32,
        description="DCB tags (course:c1, student:s7): what conditions and read-events "
        "select events by. At most 32, each non-empty, no two equal.")


class QueryItemIn(_Strict):
    """Matches an event whose type is one of ``types`` (any type if empty) and that
    carries every tag in ``tags`` (any tags if empty)."""

    types: list[str] = Field(default_factory=list, max_length=64)
    tags: list[str] = Field(default_factory=list, max_length=32)


class QueryIn(_Strict):
    """A DCB query: an event matches if it matches any of ``items``."""

    items: list[QueryItemIn] = Field(
        min_length=1, max_length=64,
        description="[{}] matches every event.")


class ConditionIn(_Strict):
    """Append only if no event matching ``query`` was stored after ``after``."""

    query: QueryIn
    after: str | None = Field(
        None, pattern=r"^[0-9]+$",
        description="The position the decision read up to (read-events' position); "
        "null: no event matching the query may exist at all.")


class AppendRequest(_Strict):
    """A batch of events for one stream, stored whole or not at all."""

    events: list[NewEventIn] = Field(min_length=1, max_length=MAX_BATCH)
    expected_version: Version | Literal["any", "no_stream", "stream_exists"] | None = Field(
        None, description="The version the stream must be at (0: it must not exist), or any, "
        "no_stream, stream_exists. Leave it out (and send no If-Match) for any.")
    condition: ConditionIn | None = Field(
        None, description="A DCB append condition, checked atomically with the insert: "
        "409 condition-failed if an event matching its query came after its position.")


MAX_STREAMS = 100
"""The most streams one append-many request names."""


class StreamAppendIn(AppendRequest):
    """One stream's batch of an append-many request."""

    stream_id: str = Field(min_length=1, description="The stream id (not percent-encoded).")


class AppendManyRequest(_Strict):
    """Batches for several streams, stored all together or not at all."""

    appends: list[StreamAppendIn] = Field(
        min_length=1, max_length=MAX_STREAMS,
        description="One entry per stream (each stream at most once), each checked "
        "against its own expected_version. Events get increasing positions in this order.")
    condition: ConditionIn | None = Field(
        None, description="A DCB append condition for the whole call (the entries take "
        "none of their own): 409 condition-failed and nothing written if it fails.")


class AppendedEvent(BaseModel):
    id: UUID
    version: int
    position: str = Position


class AppendResponse(BaseModel):
    stream_id: str
    version: int = Field(description="The stream's version after the append.")
    position: str = Position
    duplicate: bool = Field(description="True when these events were stored before "
                            "(a retried request) and nothing new was written.")
    events: list[AppendedEvent]


class AppendManyResponse(BaseModel):
    duplicate: bool = Field(description="True when this call was stored before "
                            "(a retried request) and nothing new was written.")
    results: list[AppendResponse] = Field(description="One per stream, in request order.")


class EventOut(BaseModel):
    id: UUID
    stream_id: str
    type: str
    version: int
    position: str = Position
    timestamp: datetime
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    tags: list[str] = Field(default_factory=list, description="The event's DCB tags.")
    undecodable: str | None = Field(
        None, description="Only on an event of the global log that the server cannot "
        "decode: why. Its data and metadata are then empty; it keeps its position.")


class StreamPage(BaseModel):
    stream_id: str
    direction: Literal["forward", "backward"]
    events: list[EventOut]
    next: str | None = Field(description="The URL of the next page; null on the last one.")


class EventPage(BaseModel):
    events: list[EventOut]
    next: str | None = Field(description="The URL of the next page; null on the last one.")


class ReadEventsRequest(_Strict):
    """The events matching a DCB query, for a decision."""

    query: QueryIn
    after: str = Field("0", pattern=r"^[0-9]+$",
                       description="Only events after this position.")
    limit: int | None = Field(None, ge=1, le=MAX_BATCH,
                              description="At most this many events (all by default, up "
                              f"to {MAX_BATCH}: more is 422, narrow the query).")


class ReadEventsResponse(BaseModel):
    events: list[EventOut]
    position: str = Field(
        pattern=r"^[0-9]+$",
        description="The position this read is consistent with: pass it as the "
        "condition's after.")


class StreamOut(BaseModel):
    stream_id: str
    version: int
    last_position: str = Position
    last_write: datetime


class StreamList(BaseModel):
    streams: list[StreamOut]
    next: str | None


class StreamMetadata(BaseModel):
    stream_id: str
    version: int
    created: datetime = Field(description="When the stream's first event was recorded.")
    last_write: datetime = Field(description="When its last event was recorded.")
    first_position: str = Position
    last_position: str = Position


class HealthCheckOut(BaseModel):
    name: str
    status: Literal["ok", "degraded", "failing"]
    message: str
    figure: float | None
    threshold: float | None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "failing"]
    checks: list[HealthCheckOut]


class Problem(BaseModel):
    """An error (RFC 9457 problem details); ``code`` names it for programs."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
