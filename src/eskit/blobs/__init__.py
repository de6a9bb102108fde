"""Large payloads by reference: blobs stored once, by content, beside the events.

An event keeps small: it holds a :class:`BlobRef` (a SHA-256 digest, a size and a
media type), and the bytes live in a blob store::

    ref = blobs.put(scan_bytes, media_type="application/pdf")
    store.append("patient-7", [NewEvent("ScanAttached", {"scan": ref})])
    ...
    data = blobs.get(event.data["scan"])      # fetched only when asked for

Loading an aggregate reads only the events, never the blobs: state holds the
``BlobRef`` and code fetches the bytes when it needs them. Stores:
:class:`InMemoryBlobStore`, :class:`SQLiteBlobStore` (a table in the store's file),
:class:`DirectoryBlobStore` (one file per blob), :class:`PostgresBlobStore` (a table
in the store's schema); asyncio: :class:`AsyncBlobStore` over a local one,
:class:`AsyncPostgresBlobStore`. :func:`collect_blobs` deletes the blobs no stored
event, snapshot or archived event names any more. See docs/blobs.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eskit.blobs.aio import AsyncBlobStore
from eskit.blobs.base import BlobStore, InMemoryBlobStore
from eskit.blobs.collect import BlobCollection, collect_blobs
from eskit.blobs.directory import DirectoryBlobStore
from eskit.blobs.ref import DEFAULT_MAX_BLOB_BYTES, BlobRef
from eskit.blobs.sqlite import SQLiteBlobStore

if TYPE_CHECKING:
    from eskit.blobs.postgres import AsyncPostgresBlobStore, PostgresBlobStore

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "AsyncBlobStore",
    "AsyncPostgresBlobStore",
    "BlobCollection",
    "BlobRef",
    "BlobStore",
    "DirectoryBlobStore",
    "InMemoryBlobStore",
    "PostgresBlobStore",
    "SQLiteBlobStore",
    "collect_blobs",
]


def __getattr__(name: str) -> Any:
    # The PostgreSQL blob stores need psycopg (the postgres extra): imported on use.
    if name in ("PostgresBlobStore", "AsyncPostgresBlobStore"):
        from eskit.blobs import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module 'eskit.blobs' has no attribute {name!r}")
