"""The blob store contract, :class:`BlobStore`, and the in-memory one.

A backend implements four primitives on hex digests (``_put``, ``_get``,
``_has``, ``_delete``); checks and digests are computed here, before any I/O.

Guarantees every blob store gives (checked by :mod:`eskit.testing.blob_contract`):

* **Content addressing.** :meth:`BlobStore.put` returns a :class:`BlobRef` whose
  digest is the SHA-256 of the bytes; the same bytes put twice, from any thread
  or process, are stored once.
* **Durable before referenced.** ``put`` returns only after the blob is
  committed (SQLite, PostgreSQL) or fsynced (directory), so an event appended
  with the reference afterwards never names a blob that a crash lost.
* **Verified reads.** :meth:`BlobStore.get` checks the bytes against the digest:
  damaged bytes raise :class:`~eskit.errors.DamagedStoreError`, never return.

Not guaranteed: that a blob is still there. Blobs are not part of the append-only
log; :meth:`BlobStore.delete` removes one (an event still naming it then reads
fine, but ``get`` raises :class:`~eskit.errors.BlobNotFoundError`).

For garbage collection (:func:`eskit.blobs.collect_blobs`) a backend also lists its
blobs with the time each was last put (``_listing``), tells the time on its own
clock (``_now``), and deletes a batch of blobs only if none was put since a cutoff
(``_delete_idle``). A put of a blob already stored refreshes that time once it is
older than :data:`TOUCH_AFTER`, so a writer that puts a blob and then appends the
event naming it is safe from a collection running meanwhile.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from eskit.blobs.ref import (
    BINARY_MEDIA_TYPE,
    DEFAULT_MAX_BLOB_BYTES,
    BlobRef,
    checked_ref,
    not_found,
    prepared,
    verified,
)

__all__ = ["TOUCH_AFTER", "BlobStore", "InMemoryBlobStore", "StoredBlob"]

TOUCH_AFTER = 60.0
"""Seconds: a put of a blob that is already stored refreshes its last-put time when
that time is older than this (and only then, so that repeated puts of the same bytes
stay cheap). A collection's ``grace`` is at least five times as long."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob as a blob store lists it for garbage collection."""

    key: str
    """The digest's 64 hex digits."""
    size: int
    last_put: float
    """When it was last put (stored, or refreshed by a put of the same bytes), in
    seconds since 1970-01-01 UTC on the blob store's clock (:meth:`BlobStore._now`)."""


class BlobStore(ABC):
    """Large payloads stored once, by content, beside the events."""

    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the blobs are, as errors name it."""

    def put(self, data: bytes | bytearray | memoryview | str, *,
            media_type: str = BINARY_MEDIA_TYPE) -> BlobRef:
        """Store ``data`` (``str`` as UTF-8) unless it is there; its reference.

        Put the blob first, then append the event holding the reference.
        """
        ref, raw = prepared(data, media_type, self.max_blob_bytes)
        self._put(ref.hex, raw)
        return ref

    def get(self, ref: BlobRef) -> bytes:
        """The blob's bytes, checked against its digest.

        :class:`~eskit.errors.BlobNotFoundError` if this store does not hold it;
        :class:`~eskit.errors.DamagedStoreError` if the stored bytes do not match.
        """
        ref = checked_ref(ref)
        data = self._get(ref.hex)
        if data is None:
            raise not_found(ref, self.location)
        return verified(ref, data, self.location)

    def get_text(self, ref: BlobRef) -> str:
        """The blob decoded as UTF-8 (for blobs put as ``str``)."""
        return self.get(ref).decode("utf-8")

    def exists(self, ref: BlobRef) -> bool:
        """Whether this store holds the blob (without reading it)."""
        return self._has(checked_ref(ref).hex)

    def delete(self, ref: BlobRef) -> bool:
        """Remove the blob; whether it was there. Events naming it are unchanged."""
        return self._delete(checked_ref(ref).hex)

    def close(self) -> None:  # noqa: B027 - most blob stores hold nothing to release
        """Release connections or files; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the primitives, on the digest's hex digits -----------------------------------

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably unless ``key`` is stored (then do nothing)."""

    @abstractmethod
    def _get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def _has(self, key: str) -> bool: ...

    @abstractmethod
    def _delete(self, key: str) -> bool: ...

    # -- for garbage collection (eskit.blobs.collect) ---------------------------------

    def _now(self) -> float:
        """The time on the clock that stamps :attr:`StoredBlob.last_put`."""
        return time.time()

    def _listing(self) -> Iterator[StoredBlob]:
        """Every stored blob. A blob store that cannot list refuses collection."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its blobs")

    def _delete_idle(self, keys: Sequence[str], cutoff: float) -> list[str]:
        """Delete those of ``keys`` not put since ``cutoff``, each checked and deleted
        atomically against a concurrent put; the keys deleted."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete idle blobs")


class InMemoryBlobStore(BlobStore):
    """Blobs in a dict: for tests and examples."""

    def __init__(self, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.max_blob_bytes = max_blob_bytes
        self._blobs: dict[str, bytes] = {}
        self._put_at: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return "memory"

    def _put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._blobs.setdefault(key, data)
            self._put_at[key] = time.time()

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(key)

    def _has(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    def _delete(self, key: str) -> bool:
        with self._lock:
            self._put_at.pop(key, None)
            return self._blobs.pop(key, None) is not None

    def _listing(self) -> Iterator[StoredBlob]:
        with self._lock:
            found = [StoredBlob(key, len(data), self._put_at[key])
                     for key, data in self._blobs.items()]
        return iter(found)

    def _delete_idle(self, keys: Sequence[str], cutoff: float) -> list[str]:
        with self._lock:
            idle = [key for key in keys if self._put_at.get(key, cutoff) < cutoff]
            for key in idle:
                del self._blobs[key], self._put_at[key]
        return idle
