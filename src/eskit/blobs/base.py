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
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
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

__all__ = ["BlobStore", "InMemoryBlobStore"]


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


class InMemoryBlobStore(BlobStore):
    """Blobs in a dict: for tests and examples."""

    def __init__(self, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.max_blob_bytes = max_blob_bytes
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return "memory"

    def _put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._blobs.setdefault(key, data)

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(key)

    def _has(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    def _delete(self, key: str) -> bool:
        with self._lock:
            return self._blobs.pop(key, None) is not None
