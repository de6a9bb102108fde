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
from eskit.snapshots import AggregateKey, Snapshot, SnapshotStore, check_keep, no_event_there
from eskit.stores.base import EventStore

__all__ = ["InMemorySnapshotStore"]


class InMemorySnapshotStore(SnapshotStore):
    """Snapshots in memory, checked against ``event_store`` before they are kept.

    ``keep=N``: each save also drops that aggregate's snapshots below its N newest.
    """

    event_store: EventStore

    def __init__(self, event_store: EventStore, *, keep: int | None = None) -> None:
        if not isinstance(event_store, EventStore):
            raise StoreError(
                f"InMemorySnapshotStore needs an EventStore, got {type(event_store).__name__}"
            )
        self.event_store = event_store
        self.keep = None if keep is None else check_keep(keep, minimum=1)
        self._lock = threading.Lock()
        # (stream, aggregate type) -> sorted versions, and the snapshot of each.
        self._versions: dict[tuple[str, str], list[int]] = {}
        self._snapshots: dict[tuple[str, str, int], Snapshot] = {}
        attached = getattr(event_store, "_snapshot_stores", None)
        if attached is not None:  # an InMemoryEventStore: its truncate_stream looks here
            attached.add(self)

    def _save(self, stream: str, snapshot: Snapshot) -> None:
        # Once the event is there the check stays true, unless truncate_stream removes
        # it, which then drops the snapshots below its cut (_drop_below).
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
            if self.keep is not None:
                self._trim(key, self.keep)

    def _trim(self, key: AggregateKey, keep: int) -> int:
        # Under the lock. The versions list is sorted: the newest are at its end.
        versions = self._versions.get(key)
        if not versions or len(versions) <= keep:
            return 0
        cut = len(versions) - keep
        for version in versions[:cut]:
            del self._snapshots[(*key, version)]
        del versions[:cut]
        if not versions:
            del self._versions[key]
        return cut

    def _newest_version(self, stream: str) -> int | None:
        """The version of the stream's newest snapshot (any type); None if it has none."""
        with self._lock:
            return max((v[-1] for (s, _), v in self._versions.items() if s == stream and v),
                       default=None)

    def _drop_below(self, stream: str, version: int) -> None:
        """Forget the stream's snapshots below ``version`` (their events were removed)."""
        with self._lock:
            for key in [k for k in self._versions if k[0] == stream]:
                versions = self._versions[key]
                cut = bisect.bisect_left(versions, version)
                for gone in versions[:cut]:
                    del self._snapshots[(*key, gone)]
                del versions[:cut]
                if not versions:
                    del self._versions[key]

    def _aggregates_after(self, after: AggregateKey | None, limit: int) -> list[AggregateKey]:
        with self._lock:
            keys = sorted(k for k in self._versions if after is None or k > after)
        return keys[:limit]

    def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        with self._lock:
            return sum(self._trim(key, keep) for key in keys)

    def _count_aggregates(self) -> int:
        with self._lock:
            return len(self._versions)

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
