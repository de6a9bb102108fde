"""An event store held in process memory.

It is a real store, not a mock: it encodes every event with the same codec as
the databases (so it rejects what they reject and returns fresh copies, never
the caller's objects), passes the same contract suite, and is the model that the
property-based tests compare the other stores against. It is safe to share
between threads. Its contents live only as long as the object.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eskit.errors import InvalidInputError
from eskit.events import Event, EventRegistry, StreamId
from eskit.stores.base import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    EventStore,
    Expected,
    PendingEvent,
    StreamInfo,
    decode_event,
    expected_matches,
    resolve_conflict,
    stream_id_from_key,
)

__all__ = ["InMemoryEventStore"]


@dataclass(frozen=True, slots=True)
class _Row:
    event_id: UUID
    stream: str
    version: int
    position: int
    event_type: str
    data: bytes
    metadata: bytes
    timestamp: datetime
    schema_version: int

    def decode(self, stream_id: StreamId | None = None) -> Event:
        return decode_event(
            self.event_id, stream_id_from_key(self.stream) if stream_id is None else stream_id,
            self.event_type, self.data, self.metadata, self.timestamp, self.version,
            self.position, self.schema_version,
        )


class InMemoryEventStore(EventStore):
    """An event store in process memory, safe for threads."""

    def __init__(
        self, *, registry: EventRegistry | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        if registry is not None:
            self.registry = registry
        if type(max_event_bytes) is not int or max_event_bytes < 1:
            raise InvalidInputError("max_event_bytes must be a positive int")
        self.max_event_bytes = max_event_bytes
        self._lock = threading.Lock()
        self._log: list[_Row] = []
        self._streams: dict[str, list[_Row]] = {}
        self._by_id: dict[UUID, _Row] = {}

    def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        with self._lock:
            rows = self._streams.get(stream, [])
            head = len(rows)
            by_id = self._by_id
            found = {p.event_id: by_id[p.event_id] for p in batch if p.event_id in by_id}
            if found or not expected_matches(expected, head):
                return resolve_conflict(
                    stream_id, stream, expected, head, batch,
                    {eid: row.decode() for eid, row in found.items()},
                )
            start = len(self._log)
            new_rows = [
                _Row(p.event_id, stream, head + i + 1, start + i + 1, p.event_type, p.data,
                     p.metadata, p.timestamp, p.schema_version)
                for i, p in enumerate(batch)
            ]
            self._log.extend(new_rows)
            self._streams.setdefault(stream, rows).extend(new_rows)
            self._by_id.update((r.event_id, r) for r in new_rows)
        events = tuple(
            p.recorded(stream_id, r.version, r.position)
            for p, r in zip(batch, new_rows, strict=True)
        )
        return AppendResult(stream_id, events[-1].version, new_rows[-1].position, events)

    def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        with self._lock:
            rows = self._streams.get(stream, [])[from_version:to_version]
        if backwards:
            rows = rows[::-1]
        if limit is not None:
            rows = rows[:limit]
        return [r.decode(stream_id) for r in rows]

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # Positions are list indexes + 1 and never have gaps in this store.
        with self._lock:
            rows = self._log[after : after + limit]
        return [r.decode() for r in rows]

    def _head_version(self, stream: str) -> int:
        with self._lock:
            return len(self._streams.get(stream, ()))

    def _version_at(self, stream: str, as_of: datetime) -> int:
        with self._lock:
            rows = self._streams.get(stream, [])
            for row in reversed(rows):
                if row.timestamp <= as_of:
                    return row.version
        return 0

    def _head_position(self) -> int:
        with self._lock:
            return len(self._log)

    def _list_streams(self) -> list[StreamInfo]:
        with self._lock:
            return [
                StreamInfo(stream_id_from_key(s), rows[-1].version, rows[-1].position,
                           rows[-1].timestamp)
                for s, rows in self._streams.items()
            ]
