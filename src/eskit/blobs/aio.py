"""An asyncio front end over a sync blob store: :class:`AsyncBlobStore`.

For blob stores whose I/O is local (memory, SQLite, a directory): each call runs
the sync store's method in a worker thread, so the event loop never waits on the
disk. For PostgreSQL use the native :class:`~eskit.blobs.AsyncPostgresBlobStore`.
"""

from __future__ import annotations

import asyncio

from eskit.blobs.base import BlobStore
from eskit.blobs.ref import BINARY_MEDIA_TYPE, BlobRef

__all__ = ["AsyncBlobStore"]


class AsyncBlobStore:
    """``await``-able ``put``/``get``/``exists``/``delete`` of ``blobs``, with its guarantees."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    @property
    def location(self) -> str:
        return self.blobs.location

    async def put(self, data: bytes | bytearray | memoryview | str, *,
                  media_type: str = BINARY_MEDIA_TYPE) -> BlobRef:
        """See :meth:`eskit.blobs.BlobStore.put`."""
        return await asyncio.to_thread(self.blobs.put, data, media_type=media_type)

    async def get(self, ref: BlobRef) -> bytes:
        """See :meth:`eskit.blobs.BlobStore.get`."""
        return await asyncio.to_thread(self.blobs.get, ref)

    async def exists(self, ref: BlobRef) -> bool:
        """See :meth:`eskit.blobs.BlobStore.exists`."""
        return await asyncio.to_thread(self.blobs.exists, ref)

    async def delete(self, ref: BlobRef) -> bool:
        """See :meth:`eskit.blobs.BlobStore.delete`."""
        return await asyncio.to_thread(self.blobs.delete, ref)
