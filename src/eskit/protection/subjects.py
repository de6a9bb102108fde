"""Data subjects' requests on a :class:`~eskit.protection.ProtectedEventStore`: the work.

Export (article 15) and erasure (article 17) scan the whole store in pages, in
bounded memory; :meth:`~eskit.protection.ProtectedEventStore.export_subject` and
:meth:`~eskit.protection.ProtectedEventStore.erase_subject` document what they
guarantee. Re-wrapping data keys under a new master key is here too: the third
thing done to the key table rather than to events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Protocol

from eskit.errors import InvalidInputError
from eskit.events import Event, EventRegistry
from eskit.protection.envelope import DataKey
from eskit.protection.erasure import ERASURES_STREAM, SNAPSHOT_PAGE, Erasure, erasure_record
from eskit.protection.keys import KeyCache, KeyProvider, rewrapped
from eskit.protection.keystore import SubjectKeyStore
from eskit.protection.snapshots import snapshot_subject
from eskit.protection.transcoder import Transcoder
from eskit.snapshots import SnapshotStore
from eskit.stores.arguments import stream_key
from eskit.stores.base import EventStore
from eskit.stores.model import READ_ALL_PAGE_SIZE

__all__ = ["Protected", "delete_snapshots", "erase_subject", "export_subject",
           "rewrap"]


class Protected(Protocol):
    """What these functions use of :class:`eskit.protection.ProtectedEventStore`."""

    @property
    def inner(self) -> EventStore: ...
    @property
    def keys(self) -> SubjectKeyStore: ...
    @property
    def snapshots(self) -> SnapshotStore | None: ...
    @property
    def on_erased(self) -> Sequence[Callable[[Erasure], object]]: ...
    @property
    def _t(self) -> Transcoder: ...
    @property
    def _cache(self) -> KeyCache: ...
    @property
    def registry(self) -> EventRegistry: ...

    def _open_payloads(self, events: list[Event]) -> list[Event]: ...

    def _keys_by_id(self, key_ids: Collection[str]) -> dict[str, DataKey]: ...


def stored_pages(store: Protected) -> Iterator[list[Event]]:
    """Every stored event, payloads opened, fields still sealed, page by page."""
    after = 0
    while True:
        page = store.inner._read_all_page(after, READ_ALL_PAGE_SIZE)
        if page:
            yield store._open_payloads(page)
        if len(page) < READ_ALL_PAGE_SIZE:
            return
        after = page[-1].position or after


def export_subject(store: Protected, subject: str) -> Iterator[Event]:
    """The events carrying a field sealed for ``subject`` (checked), opened, in order."""
    for page in stored_pages(store):
        mine = [e for e in page if store._t.mentions(e, subject)]
        if mine:
            scan = store._t.scan(mine)
            yield from store.registry.upcast(
                store._t.open_fields(mine, scan, store._keys_by_id(scan.ids))
            )


def erase_subject(
    store: Protected, subject: str, snapshots: SnapshotStore | None, vacuum: bool,
    record: bool,
) -> Erasure:
    """:meth:`ProtectedEventStore.erase_subject` for a checked ``subject``."""
    streams: dict[str, None] = {}
    for page in stored_pages(store):
        for e in page:
            if store._t.mentions(e, subject):
                streams.setdefault(stream_key(e.aggregate_id))
    deleted = store.keys.delete_subject(subject)
    store._cache.invalidate()  # at once here, whatever the key store counts
    notes: list[str] = []
    target = snapshots or store.snapshots or _own_snapshots(store, notes)
    removed = 0 if target is None else delete_snapshots(target, set(streams))
    for stream in streams:  # sealed snapshots: copies elsewhere lose their key too
        store.keys.delete_subject(snapshot_subject(stream))
    store._cache.invalidate()
    position = 0
    if record:
        position = store.inner.append(
            ERASURES_STREAM, [erasure_record(subject, list(streams), deleted)]
        ).position
    purge = store.keys.purge(vacuum=vacuum)
    erasure = Erasure(subject, deleted, tuple(streams), removed, purge, position, tuple(notes))
    for callback in store.on_erased:
        callback(erasure)
    return erasure


def _own_snapshots(store: Protected, notes: list[str]) -> SnapshotStore | None:
    from eskit.maintenance.pruning import snapshot_store_beside

    try:
        return snapshot_store_beside(store.inner)
    except InvalidInputError:
        notes.append("no snapshot store given and the store keeps none of its own")
        return None


def delete_snapshots(snapshots: SnapshotStore, streams: set[str]) -> int:
    """Delete every snapshot of ``streams``, through the pruning primitives (keep 0)."""
    if not streams:
        return 0
    removed = 0
    after = None
    while page := snapshots._aggregates_after(after, SNAPSHOT_PAGE):
        mine = [key for key in page if key[0] in streams]
        if mine:
            removed += snapshots._prune_aggregates(mine, 0)
        after = page[-1]
    return removed


def rewrap(keys: SubjectKeyStore, provider: KeyProvider, batch_size: int,
           progress: Callable[[int], object] | None) -> int:
    """Re-wrap every data key of ``keys`` not under ``provider``'s current master key."""
    current = provider.current_key_id()
    done, after = 0, ""
    while rows := keys.not_wrapped_by(current, after, batch_size):
        done += keys.replace([rewrapped(row, provider) for row in rows])
        after = rows[-1].key_id
        if progress is not None:
            progress(done)
    return done
