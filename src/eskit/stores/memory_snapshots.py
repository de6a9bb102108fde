"""Snapshots held in process memory, beside any event store.

Usually paired with an :class:`~eskit.InMemoryEventStore` (tests, prototypes),
but it works beside any :class:`~eskit.EventStore`: it checks every snapshot
against that store's events before keeping it. It is the model the contract
tests of the other snapshot stores follow. Safe for threads; its contents
live as long as the object.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import replace

from eskit.errors import StoreError
from eskit.events import StreamId
from eskit.snapshots import Snapshot, SnapshotStore, no_event_there
from eskit.stores.base import EventStore

__all__ = ["InMemorySnapshotStore"]


class InMemorySnapshotStore(SnapshotStore):
    """Snapshots in memory, checked against ``event_store`` before they are kept."""

    event_store: EventStore

    def __init__(self, event_store: EventStore) -> None:
        if not isinstance(event_store, EventStore):
            raise StoreError(
                f"InMemorySnapshotStore needs an EventStore, got {type(event_store).__name__}"
            )
        self.event_store = event_store
        self._lock = threading.Lock()
        # (stream, aggregate type) -> sorted versions, and the snapshot of each.
        self._versions: dict[tuple[str, str], list[int]] = {}
        self._snapshots: dict[tuple[str, str, int], Snapshot] = {}

    def _save(self, stream: str, snapshot: Snapshot) -> None:
        # Events are never removed, so once the event is there the check stays true.
        stored = self.event_store.read_stream(
            snapshot.aggregate_id, snapshot.version - 1, snapshot.version
        )
        if not stored or stored[0].event_id != snapshot.event_id:
            raise no_event_there(snapshot)
        key = (stream, snapshot.aggregate_type)
        with self._lock:
            versions = self._versions.setdefault(key, [])
            if (stream, snapshot.aggregate_type, snapshot.version) not in self._snapshots:
                bisect.insort(versions, snapshot.version)
            self._snapshots[(*key, snapshot.version)] = snapshot

    def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None:
        with self._lock:
            versions = self._versions.get((stream, aggregate_type))
            if not versions:
                return None
            i = len(versions) if max_version is None else bisect.bisect_right(versions, max_version)
            if i == 0:
                return None
            found = self._snapshots[(stream, aggregate_type, versions[i - 1])]
        return found if found.aggregate_id == aggregate_id else replace(
            found, aggregate_id=aggregate_id
        )
