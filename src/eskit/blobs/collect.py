"""Garbage collection of blobs no stored event names: :func:`collect_blobs`.

Blobs are not part of the append-only log, so retention, hard deletes and
truncation leave the blobs their events named behind. ``collect_blobs`` is a
mark and sweep:

1. **List** the blob store; a blob put within ``grace`` of now (on the blob
   store's clock) is young and kept whatever happens next.
2. **Mark**: search every stored payload for blob digests
   (:mod:`eskit.blobs.references`): events (soft-deleted included), snapshots and
   the segments of archived streams.
3. **Sweep** the old blobs nothing named, each deleted only if no put touched it
   since the cutoff, checked atomically with the delete (a put of stored bytes
   refreshes their time).

Guaranteed: a blob named by a stored event, snapshot or archived event, or put
within ``grace`` before the collection started, is kept. So a writer that puts a
blob and appends the event naming it within ``grace`` never names a lost blob,
whatever runs concurrently. Not guaranteed: an event appended *later* that copies
the reference of a blob whose last naming event was removed meanwhile names a lost
blob; put the bytes again before appending such an event (it costs a lookup and
refreshes the time). References kept only outside the store (a read model, a
message in a queue) do not keep a blob: pass them in ``keep``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eskit.archive.storage import ArchiveStorage
from eskit.blobs.base import TOUCH_AFTER, BlobStore
from eskit.blobs.ref import BlobRef
from eskit.blobs.references import Progress, scan_store, supported_store
from eskit.errors import InvalidInputError

__all__ = ["DEFAULT_GRACE", "MIN_GRACE", "BlobCollection", "collect_blobs"]

DEFAULT_GRACE = timedelta(hours=24)
"""How long a blob put but not yet named is kept by default: the time a writer may
take between its put and the append of the event naming the blob."""
MIN_GRACE = timedelta(seconds=5 * TOUCH_AFTER)
"""The shortest ``grace`` accepted: well over :data:`~eskit.blobs.base.TOUCH_AFTER`,
so that a put that did not need to refresh a blob's time still protects it, with
room for clocks that differ between the machines involved."""
_BATCH = 500


@dataclass(frozen=True, slots=True)
class BlobCollection:
    """What :func:`collect_blobs` found and did."""

    blobs: int
    """Blobs the blob store held when listed."""
    blob_bytes: int
    referenced: int
    """Of those, the ones a stored payload names (or ``keep`` lists)."""
    young: int
    """Unnamed, but put within ``grace`` (or put again while the collection ran): kept."""
    removed: tuple[str, ...]
    """The digests (``sha256:...``) deleted; with ``dry_run``, those that would be."""
    removed_bytes: int
    payloads: int
    """Stored payload rows searched (events, snapshots, archived events)."""
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts and the removed digests."""
        return {"blobs": self.blobs, "blob_bytes": self.blob_bytes,
                "referenced": self.referenced, "young": self.young,
                "removed": len(self.removed), "removed_bytes": self.removed_bytes,
                "removed_digests": list(self.removed), "payloads": self.payloads,
                "dry_run": self.dry_run}


def collect_blobs(
    store: Any, blobs: BlobStore, *, grace: timedelta = DEFAULT_GRACE,
    archives: Sequence[ArchiveStorage] = (), keep: Iterable[BlobRef] = (),
    dry_run: bool = False, progress: Progress | None = None,
) -> BlobCollection:
    """Delete the blobs of ``blobs`` that nothing in ``store`` names any more.

    ``store`` is a sync :class:`~eskit.SQLiteEventStore`,
    :class:`~eskit.PostgresEventStore` or :class:`~eskit.InMemoryEventStore`;
    ``archives`` the storages of its archived streams (refused with
    :class:`~eskit.BlobCollectionRefusedError` if a stream is archived in one not
    given, as it is when a payload holds a sealed value: nothing deleted then).
    ``keep`` are references held elsewhere. ``dry_run`` deletes nothing and reports
    what would go. ``progress`` is called with the payload rows searched as the
    mark phase goes. Bad arguments raise :class:`~eskit.InvalidInputError` before
    any I/O. Safe to run while writers append and put, and from two processes at
    once; safe to interrupt (each batch of deletes is atomic). See docs/blobs.md.
    """
    kept = _checked(store, blobs, grace, archives, keep, dry_run)
    cutoff = blobs._now() - grace.total_seconds()
    sizes: dict[str, int] = {}
    old: list[str] = []
    for blob in blobs._listing():  # listed first: anything put from now on is young
        sizes[blob.key] = blob.size
        if blob.last_put < cutoff:
            old.append(blob.key)
    named = scan_store(store, archives, progress)
    live = named.digests | kept
    unnamed = sorted(key for key in old if key not in live)
    if dry_run:
        removed = unnamed
    else:
        removed = []
        for start in range(0, len(unnamed), _BATCH):
            removed.extend(blobs._delete_idle(unnamed[start:start + _BATCH], cutoff))
    referenced = sum(1 for key in sizes if key in live)
    return BlobCollection(
        blobs=len(sizes), blob_bytes=sum(sizes.values()), referenced=referenced,
        young=len(sizes) - referenced - len(removed),
        removed=tuple("sha256:" + key for key in removed),
        removed_bytes=sum(sizes[key] for key in removed), payloads=named.rows,
        dry_run=dry_run,
    )


def _checked(store: Any, blobs: object, grace: object, archives: object, keep: object,
             dry_run: object) -> set[str]:
    supported_store(store)
    if not isinstance(blobs, BlobStore):
        raise InvalidInputError(f"blobs must be a BlobStore, not {type(blobs).__name__}")
    if type(blobs)._listing is BlobStore._listing or \
            type(blobs)._delete_idle is BlobStore._delete_idle:
        raise InvalidInputError(f"{type(blobs).__name__} cannot list and delete idle blobs, "
                                "which collection needs")
    if not isinstance(grace, timedelta) or grace < MIN_GRACE:
        raise InvalidInputError(
            f"grace must be a timedelta of at least {MIN_GRACE}, not {grace!r}: a blob put "
            "but not yet named by an event is kept that long")
    if isinstance(archives, str | bytes) or not isinstance(archives, Sequence) or not all(
            hasattr(a, "location") and hasattr(a, "get") for a in archives):
        raise InvalidInputError("archives must be a sequence of ArchiveStorage objects")
    if isinstance(keep, str | bytes):
        raise InvalidInputError("keep must be an iterable of BlobRef, not a string")
    refs = list(keep)  # type: ignore[call-overload]
    if not all(isinstance(ref, BlobRef) for ref in refs):
        raise InvalidInputError("keep must hold BlobRef objects")
    if type(dry_run) is not bool:
        raise InvalidInputError("dry_run must be True or False")
    return {ref.hex for ref in refs}
