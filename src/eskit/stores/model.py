"""The store contract's vocabulary: expected versions, results, limits, pending events.

Pure values with no I/O, shared by every backend and by the argument checks
(:mod:`eskit.stores.arguments`) and row decoding (:mod:`eskit.stores.rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from eskit.events import (
    Event,
    NewEvent,
    StreamId,
    recorded_event,
)

__all__: list[str] = []


MAX_VERSION = 2**63 - 1
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
READ_ALL_PAGE_SIZE = 1000


class ExpectedVersion(Enum):
    """Named expectations for :meth:`EventStore.append` besides an exact version."""

    ANY = "any"
    """Append wherever the stream is; no concurrency check."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (same as the exact version ``0``)."""
    STREAM_EXISTS = "stream_exists"
    """The stream must already have at least one event."""

    def __repr__(self) -> str:
        return self.name


ANY = ExpectedVersion.ANY
NO_STREAM = ExpectedVersion.NO_STREAM
STREAM_EXISTS = ExpectedVersion.STREAM_EXISTS

Expected = int | ExpectedVersion
AppendInput = Event | NewEvent | object


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append stored: the stream's new version and the recorded events."""

    stream_id: StreamId
    version: int
    """The stream's version after the append (the last event's version)."""
    position: int
    """The global position of the last event of the batch."""
    events: tuple[Event, ...]
    duplicate: bool = False
    """True when the batch had been stored before and this call wrote nothing."""


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """One stream's part of :meth:`EventStore.append_many`: its events and expectation.

    ``expected_version`` means what it means for :meth:`EventStore.append`; each
    stream of the call is checked against its own.
    """

    stream_id: StreamId
    events: Sequence[AppendInput]
    expected_version: Expected = ANY


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream as listed by :meth:`EventStore.list_streams`."""

    stream_id: StreamId
    version: int
    last_position: int
    last_timestamp: datetime


class PendingEvent:
    """A validated, encoded event on its way into a store (internal).

    A plain slotted class rather than a frozen dataclass: one is built per
    appended event, and the frozen ``__init__`` cost a microsecond each.
    """

    __slots__ = (
        "data",
        "event_data",
        "event_id",
        "event_type",
        "metadata",
        "metadata_dict",
        "schema_version",
        "tags",
        "timestamp",
    )

    def __init__(
        self,
        event_id: UUID,
        event_type: str,
        data: bytes,
        metadata: bytes,
        timestamp: datetime,
        schema_version: int,
        event_data: dict[str, Any],
        metadata_dict: dict[str, Any],
        tags: tuple[str, ...] = (),
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.data = data
        self.metadata = metadata
        self.timestamp = timestamp
        self.schema_version = schema_version
        self.event_data = event_data
        self.metadata_dict = metadata_dict
        self.tags = tags

    def recorded(self, stream_id: StreamId, version: int, position: int) -> Event:
        return recorded_event(
            self.event_id, stream_id, self.event_type, self.event_data, self.timestamp, version,
            position, self.metadata_dict, self.schema_version, self.tags,
        )


