"""An event store held in process memory.

It is a real store, not a mock: it encodes every event with the same codec as
the databases (so it rejects what they reject and returns fresh copies, never
the caller's objects), passes the same contract suite, and is the model that the
property-based tests compare the other stores against. It is safe to share
between threads. Its contents live only as long as the object.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from eskit.dcb import AppendCondition, Query, set_tags
from eskit.errors import AppendConditionFailed, InvalidInputError
from eskit.events import Event, EventRegistry, StreamId
from eskit.stores.arguments import (
    expected_matches,
    resolve_conflict,
    stream_id_from_key,
    stream_key,
)
from eskit.stores.base import EventStore
from eskit.stores.deletion import deleted_error, must_write_delete
from eskit.stores.filtered import ReadFilter
from eskit.stores.model import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    Expected,
    PendingEvent,
    StreamInfo,
)
from eskit.stores.multi import (
    PreparedAppend,
    all_event_ids,
    condition_failed,
    recorded,
    resolve_many,
)
from eskit.stores.rows import decode_rows
from eskit.stores.truncation import truncation_cut

__all__ = ["InMemoryEventStore"]


class _Row(NamedTuple):
    """One stored event, in the shape every store hands to ``decode_rows``."""

    tx: int  # always 0 here: the position is ``seq``
    position: int
    event_id: UUID
    stream: str
    version: int
    event_type: str
    schema_version: int
    timestamp: datetime
    data: str
    metadata: str


class InMemoryEventStore(EventStore):
    """An event store in process memory, safe for threads."""

    db_system = "memory"  # OpenTelemetry's db.system.name

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
        self._log: list[_Row | None] = []  # None: a hole left by a hard delete
        self._deleted: dict[str, bool] = {}  # deleted streams: True if hard (a tombstone)
        self._removed_events = 0  # by hard deletes (for eskit.maintenance.stats)
        # A stream's rows by version - 1; None where truncate_stream removed one (the
        # list keeps its length, so the head stays len(rows) everywhere).
        self._streams: dict[str, list[_Row | None]] = {}
        self._first: dict[str, int] = {}  # truncated streams: the version they start at
        # InMemorySnapshotStores beside this store: truncate_stream looks there.
        self._snapshot_stores: weakref.WeakSet[Any] = weakref.WeakSet()
        self._by_id: dict[int, _Row] = {}  # by UUID.int: an int hashes in C, a UUID in Python
        self._tags: dict[int, tuple[str, ...]] = {}  # by position; events with tags only

    def _append(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> AppendResult:
        return self._append_if(stream_id, stream, expected, batch, None)

    def _append_if(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent],
        condition: AppendCondition | None,
    ) -> AppendResult:
        with self._lock:
            if (hard := self._deleted.get(stream)) is not None:
                raise deleted_error(stream_id, hard)
            rows = self._streams.get(stream, [])
            head = len(rows)
            by_id = self._by_id
            found = [by_id[key] for p in batch if (key := p.event_id.int) in by_id]
            if found or not expected_matches(expected, head):
                return resolve_conflict(
                    stream_id, stream, expected, head, batch,
                    {e.event_id: e for e in decode_rows(found)},
                )
            # The condition after the retry check: a retried conditional append
            # matches its own stored events, and is a duplicate, not a failure.
            if condition is not None and self._first_match(
                condition.fail_if_events_match, condition.after_position, 1
            ):
                raise AppendConditionFailed(stream_id, condition)
            start = len(self._log)
            new_rows = [
                _Row(0, start + i + 1, p.event_id, stream, head + i + 1, p.event_type,
                     p.schema_version, p.timestamp, p.data.decode(), p.metadata.decode())
                for i, p in enumerate(batch)
            ]
            self._log.extend(new_rows)
            self._streams.setdefault(stream, rows).extend(new_rows)
            by_id.update((r.event_id.int, r) for r in new_rows)
            self._tags.update((r.position, p.tags) for p, r in zip(batch, new_rows, strict=True)
                              if p.tags)
        events = tuple(
            p.recorded(stream_id, r.version, r.position)
            for p, r in zip(batch, new_rows, strict=True)
        )
        return AppendResult(stream_id, events[-1].version, new_rows[-1].position, events)

    def _append_many(
        self, prepared: list[PreparedAppend], condition: AppendCondition | None = None
    ) -> list[AppendResult]:
        # One lock for the whole call: nothing else reads or writes in between.
        with self._lock:
            for a in prepared:
                if (hard := self._deleted.get(a.stream)) is not None:
                    raise deleted_error(a.stream_id, hard)
            by_id = self._by_id
            heads = {a.stream: len(self._streams.get(a.stream, ())) for a in prepared}
            stored = [by_id[key] for p in all_event_ids(prepared) if (key := p.int) in by_id]
            retried = resolve_many(
                prepared, heads, {e.event_id: e for e in decode_rows(stored)}
            )
            if retried is not None:
                return retried
            # After the retry check, as for one stream: a stored retry is a duplicate.
            if condition is not None and self._first_match(
                condition.fail_if_events_match, condition.after_position, 1
            ):
                raise condition_failed(prepared, condition)
            placed: list[list[_Row]] = []
            for a in prepared:
                rows = self._streams.setdefault(a.stream, [])
                start, head = len(self._log), len(rows)
                new_rows = [
                    _Row(0, start + i + 1, p.event_id, a.stream, head + i + 1, p.event_type,
                         p.schema_version, p.timestamp, p.data.decode(), p.metadata.decode())
                    for i, p in enumerate(a.batch)
                ]
                self._log.extend(new_rows)
                rows.extend(new_rows)
                by_id.update((r.event_id.int, r) for r in new_rows)
                self._tags.update((r.position, p.tags)
                                  for p, r in zip(a.batch, new_rows, strict=True) if p.tags)
                placed.append(new_rows)
        return [
            recorded(a, [(r.version, r.position) for r in rows])
            for a, rows in zip(prepared, placed, strict=True)
        ]

    def _read_stream(
        self, stream_id: StreamId, stream: str, from_version: int, to_version: int | None,
        backwards: bool, limit: int | None,
    ) -> list[Event]:
        with self._lock:
            if stream in self._deleted:
                return []
            rows = [r for r in self._streams.get(stream, [])[from_version:to_version]
                    if r is not None]
            if backwards:
                rows = rows[::-1]
            if limit is not None:
                rows = rows[:limit]
            tagged = self._tagged(rows)
        return self._with_tags(decode_rows(rows, stream_id), tagged)

    def _tagged(self, rows: list[_Row]) -> list[tuple[int, tuple[str, ...]]] | None:
        """``(index, tags)`` of the rows with tags (lock held); ``None``, at the cost
        of one test, while no event of the store has any."""
        tags = self._tags
        if not tags:
            return None
        return [(i, t) for i, r in enumerate(rows) if (t := tags.get(r.position))]

    @staticmethod
    def _with_tags(
        events: list[Event], tagged: list[tuple[int, tuple[str, ...]]] | None
    ) -> list[Event]:
        for i, tags in tagged or ():
            set_tags(events[i], tags)
        return events

    def _read_all_page(self, after: int, limit: int) -> list[Event]:
        # Positions are list indexes + 1; deleted and truncated streams leave holes to
        # step over (a page is full unless the log ends).
        with self._lock:
            if not self._deleted and not self._first:
                rows = [r for r in self._log[after : after + limit] if r is not None]
            else:
                rows = []
                deleted = self._deleted
                for row in itertools.islice(self._log, after, None):
                    if row is not None and row.stream not in deleted:
                        rows.append(row)
                        if len(rows) == limit:
                            break
            tagged = self._tagged(rows)
        return self._with_tags(decode_rows(rows), tagged)

    def _read_filtered_page(
        self, after: int, upto: int, limit: int, wanted: ReadFilter
    ) -> list[Event]:
        # A scan of the log in memory: the same rows a database's indexes would find.
        types, deleted = wanted.types, self._deleted
        rows = []
        with self._lock:
            for row in itertools.islice(self._log, after, upto):
                if (row is None or (types is not None and row.event_type not in types)
                        or not wanted.stream_matches(row.stream) or row.stream in deleted):
                    continue
                rows.append(row)
                if len(rows) == limit:
                    break
            tagged = self._tagged(rows)
        return self._with_tags(decode_rows(rows), tagged)

    def _first_match(self, query: Query, after: int, limit: int | None) -> list[_Row]:
        """The matching rows after ``after`` (deleted streams left out); lock held.

        A scan of the log: the memory store is the model the others are tested
        against, written to be obviously right rather than fast.
        """
        out: list[_Row] = []
        tags, deleted = self._tags, self._deleted
        for row in itertools.islice(self._log, after, None):
            if row is None or row.stream in deleted:
                continue
            if query.matches_type_and_tags(row.event_type, tags.get(row.position, ())):
                out.append(row)
                if limit is not None and len(out) == limit:
                    break
        return out

    def _read_events(
        self, query: Query, after: int, limit: int | None
    ) -> tuple[list[Event], int]:
        with self._lock:
            rows = self._first_match(query, after, limit)
            head = len(self._log)
            tags = [self._tags.get(r.position, ()) for r in rows]
        events = decode_rows(rows)
        for event, event_tags in zip(events, tags, strict=True):
            set_tags(event, event_tags)
        return events, head

    def _head_version(self, stream: str) -> int:
        with self._lock:
            if stream in self._deleted:
                return 0
            return len(self._streams.get(stream, ()))

    def _version_at(self, stream: str, as_of: datetime) -> int:
        with self._lock:
            if stream in self._deleted:
                return 0
            rows = self._streams.get(stream, [])
            for row in reversed(rows):
                if row is not None and row.timestamp <= as_of:
                    return row.version
        return 0

    def _head_position(self) -> int:
        with self._lock:
            return len(self._log)

    def _locate_event(self, event_id: UUID) -> tuple[StreamId, int] | None:
        with self._lock:
            row = self._by_id.get(event_id.int)
            if row is None or row.stream in self._deleted:
                return None
            return stream_id_from_key(row.stream), row.version

    def _list_streams(self) -> list[StreamInfo]:
        with self._lock:
            # The newest row is never truncated away: rows[-1] is not None.
            found = [
                StreamInfo(stream_id_from_key(s), last.version, last.position, last.timestamp)
                for s, rows in self._streams.items()
                if s not in self._deleted and (last := rows[-1]) is not None
            ]
            if not self._first:
                return found  # streams are kept in order of their first event
            first = {s: (r.position if (r := rows[self._first.get(s, 1) - 1]) else 0)
                     for s, rows in self._streams.items()}
        return sorted(found, key=lambda info: first[stream_key(info.stream_id)])

    def _delete_stream(self, stream_id: StreamId, stream: str, expected: Expected,
                       hard: bool) -> int:
        with self._lock:
            rows = self._streams.get(stream, [])
            head = len(rows)
            if not must_write_delete(stream_id, expected, head, self._deleted.get(stream), hard):
                return head
            self._deleted[stream] = hard
            if hard:
                gone = [r for r in rows if r is not None]
                self._remove(gone)
                self._removed_events += len(gone)
                for row in gone:
                    self._tags.pop(row.position, None)
                self._streams.pop(stream, None)
        return head

    def _remove(self, rows: list[_Row]) -> None:
        """Leave holes where ``rows`` were (under the lock)."""
        for row in rows:
            self._log[row.position - 1] = None
            del self._by_id[row.event_id.int]

    def _truncate_stream(self, stream_id: StreamId, stream: str, before: int,
                         expected: Expected, force: bool) -> int:
        with self._lock:
            rows = self._streams.get(stream, [])
            first = self._first.get(stream, 1)
            found = [v for s in self._snapshot_stores
                     if (v := s._newest_version(stream)) is not None]
            snapshot = max(found, default=None)
            cut = truncation_cut(stream_id, expected, len(rows), self._deleted.get(stream),
                                 first, before, snapshot, force)
            if cut is None:
                return 0
            self._remove([r for r in rows[first - 1 : cut - 1] if r is not None])
            rows[first - 1 : cut - 1] = [None] * (cut - first)
            self._first[stream] = cut
            for snapshots in self._snapshot_stores:  # they describe events now gone
                snapshots._drop_below(stream, cut)
        return cut - first

    def _restore_stream(self, stream_id: StreamId, stream: str) -> bool:
        with self._lock:
            hard = self._deleted.get(stream)
            if hard:
                raise deleted_error(stream_id, hard)
            return self._deleted.pop(stream, None) is not None
