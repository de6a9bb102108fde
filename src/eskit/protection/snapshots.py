"""Snapshots of a protected store, sealed: an aggregate's state is personal data too.

A snapshot holds the aggregate's state as it was folded from the events, personal
fields included, in clear. :class:`SealedSnapshotStore` wraps any snapshot store and
seals each snapshot's state (AES-256-GCM, :mod:`eskit.protection.envelope`) with a
data key of its stream's own, held in the same key table as the subjects' keys
under the reserved subject ``$snapshot:<stream>``. Erasing a subject deletes the
snapshots of the streams that held their data *and* those streams' snapshot keys, so
a copy of a snapshot left in a backup, a replica or PostgreSQL's WAL is ciphertext
whose key is gone, like the sealed fields of the events.

Guaranteed: the state never reaches the wrapped store in clear; a sealed state is
bound to its stream, aggregate type, version, state version and event id (moved or
changed, it raises :class:`~eskit.protection.DecryptionError`); a snapshot whose key
was erased reads as no snapshot, so the aggregate loads from its events.

Not guaranteed: anything about snapshots saved in clear before the wrapper was used
(they are still read as they are: prune them, or erase the subject, to remove them).

The asyncio twin, :class:`eskit.protection.aio_snapshots.AsyncSealedSnapshotStore`,
makes the same decisions: sealing and opening are the functions below, which do no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any, Protocol

from eskit import codec
from eskit.errors import DecodingError
from eskit.events import Event, StreamId
from eskit.protection.envelope import (
    DataKey,
    Unopened,
    body_of,
    not_decrypting,
    open_body,
    seal,
)
from eskit.snapshots import AggregateKey, Snapshot, SnapshotStore
from eskit.stores.base import EventStore

__all__ = ["SNAPSHOT_SUBJECT_PREFIX", "SealedSnapshotStore", "snapshot_subject"]

SNAPSHOT_SUBJECT_PREFIX = "$snapshot:"
"""The reserved subjects whose keys seal snapshots: ``$snapshot:`` and the stream key."""


class KeySource(Protocol):
    """What the sealed store needs of the protected store: its keys (fetched every time,
    as for events, so an erasure takes effect at once)."""

    def _keys_for(self, subjects: Collection[str]) -> dict[str, DataKey]: ...

    def _keys_by_id(self, key_ids: Collection[str]) -> dict[str, DataKey]: ...


def snapshot_subject(stream: str) -> str:
    """The key-table subject of ``stream``'s snapshot key."""
    return SNAPSHOT_SUBJECT_PREFIX + stream


def _path(snapshot: Snapshot) -> str:
    # The type last: it may hold any character, so nothing after it can be confused.
    return f"$snapshot/{snapshot.version}/{snapshot.state_version}/{snapshot.aggregate_type}"


# -- the decisions, no I/O: shared with eskit.protection.aio_snapshots ---------------


def seal_snapshot(snapshot: Snapshot, key: DataKey) -> Snapshot:
    """``snapshot`` with its state sealed under ``key``, its stream's snapshot key."""
    state = seal(snapshot.state.decode("utf-8"), key, snapshot.event_id, _path(snapshot),
                 naive=False)
    return replace(snapshot, state=codec.encode(state))


def sealed_body(found: Snapshot) -> tuple[dict[str, Any], str] | None:
    """The envelope of a stored state and the id of the key that sealed it.

    ``None`` for a state to return as it is: one saved in clear, before the store
    was wrapped, or one that is not JSON at all (the repository's checks refuse it
    as damaged).
    """
    try:
        body = body_of(codec.decode(found.state))
    except DecodingError:
        return None
    return None if body is None else (body, str(body["k"]))


def open_snapshot(
    found: Snapshot, stream: str, body: dict[str, Any], key: DataKey | None
) -> Snapshot | None:
    """``found`` with its sealed state (``body``, from :func:`sealed_body`) opened by
    ``key``, the key of the body's key id (``None``: no such key).

    ``None`` when the key was erased, or the body names another stream's key: no
    snapshot, the aggregate loads from its events. :class:`DecryptionError` when the
    state, or what it is bound to, was changed.
    """
    if key is None or body["s"] != snapshot_subject(stream):
        return None
    path = _path(found)
    try:
        state = open_body(body, key, found.event_id.bytes, path)
    except Unopened as exc:
        where = f"the snapshot of stream {stream!r} at version {found.version}"
        raise not_decrypting(path, where, 0, exc) from exc.__cause__
    if type(state) is not str:
        raise not_decrypting(path, f"the snapshot of stream {stream!r}", 0, Unopened(path))
    return replace(found, state=state.encode("utf-8"))


class SealedSnapshotStore(SnapshotStore):
    """``inner`` with every saved state sealed under its stream's snapshot key.

    Made by :meth:`eskit.protection.ProtectedEventStore.sealed_snapshots`; pass it to the
    :class:`~eskit.Repository` of the protected store. Pruning goes to ``inner``.
    """

    def __init__(self, protected: KeySource, inner: SnapshotStore) -> None:
        self.protected = protected
        self.inner = inner
        self.event_store = protected if isinstance(protected, EventStore) else None
        self.keep = inner.keep

    def _save(self, stream: str, snapshot: Snapshot) -> None:
        subject = snapshot_subject(stream)
        key = self.protected._keys_for([subject])[subject]
        self.inner.save(seal_snapshot(snapshot, key))

    def _latest(self, aggregate_id: StreamId, stream: str, aggregate_type: str,
                max_version: int | None) -> Snapshot | None:
        found = self.inner.latest(aggregate_id, aggregate_type, max_version)
        if found is None or (envelope := sealed_body(found)) is None:
            return found
        body, key_id = envelope
        key = self.protected._keys_by_id([key_id]).get(key_id)
        return open_snapshot(found, stream, body, key)

    def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]] | None:
        return None  # two calls: the snapshot here, the events through the protected store

    def _aggregates_after(self, after: AggregateKey | None, limit: int) -> list[AggregateKey]:
        return self.inner._aggregates_after(after, limit)

    def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        return self.inner._prune_aggregates(keys, keep)

    def _count_aggregates(self) -> int | None:
        return self.inner._count_aggregates()

    def close(self) -> None:
        self.inner.close()
