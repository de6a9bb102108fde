"""The reference an event carries instead of a large payload: :class:`BlobRef`.

Pure: no I/O. A blob is stored once, content-addressed by its SHA-256, in a
:class:`~eskit.blobs.BlobStore` beside the events; the event holds only the
``BlobRef`` (digest, size, media type), which the codec stores like any other
record under the stable name ``eskit.BlobRef``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from eskit.codec import has_lone_surrogate, register_type
from eskit.errors import BlobNotFoundError, DamagedStoreError, InvalidInputError

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES", "BlobRef", "blob_bytes", "checked_ref", "not_found", "prepared",
    "ref_for", "verified",
]

DEFAULT_MAX_BLOB_BYTES = 256 * 1024 * 1024
"""The largest blob a store accepts unless told otherwise (256 MiB). A blob is read
and written whole, in memory; SQLite and PostgreSQL refuse values near 1 GB."""

MAX_MEDIA_TYPE_BYTES = 255
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A content-addressed reference to a blob: ``sha256:<hex>``, its size and media type.

    Equal blobs have equal digests, so putting the same bytes twice stores them
    once. A ``BlobRef`` says nothing about *where* the blob is: any blob store
    holding those bytes can serve it.
    """

    digest: str
    size: int
    media_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        if not isinstance(self.digest, str) or not _DIGEST.fullmatch(self.digest):
            raise InvalidInputError(
                f"blob digest {self.digest!r}: expected 'sha256:' and 64 lowercase hex digits")
        if (isinstance(self.size, bool) or not isinstance(self.size, int)
                or not 0 <= self.size <= 2**63 - 1):
            raise InvalidInputError(f"blob size {self.size!r}: expected an int >= 0")
        media = self.media_type
        if (not isinstance(media, str) or not media or not media.isprintable()
                or has_lone_surrogate(media)
                or len(media.encode("utf-8")) > MAX_MEDIA_TYPE_BYTES):
            raise InvalidInputError(
                f"blob media type {media!r}: expected printable text of 1 to "
                f"{MAX_MEDIA_TYPE_BYTES} bytes, such as 'image/png'")

    @property
    def hex(self) -> str:
        """The digest's 64 hex digits, without the ``sha256:`` prefix."""
        return self.digest[7:]


register_type(BlobRef, "eskit.BlobRef")


def blob_bytes(data: object, max_bytes: int) -> bytes:
    """``data`` as bytes (``bytes``, ``bytearray``, ``memoryview``; ``str`` as UTF-8),
    refused with :class:`InvalidInputError` if it is anything else or too large."""
    if isinstance(data, str):
        if has_lone_surrogate(data):
            raise InvalidInputError("blob text holds a lone surrogate, which is not valid UTF-8")
        data = data.encode("utf-8")
    elif isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise InvalidInputError(
            f"a blob is bytes or str, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise InvalidInputError(
            f"blob of {len(data):,} bytes is over this store's limit of {max_bytes:,} bytes")
    return data


def ref_for(data: bytes, media_type: str) -> BlobRef:
    """The reference of ``data``."""
    return BlobRef("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type)


def verified(ref: BlobRef, data: bytes, where: str) -> bytes:
    """``data`` if it is what ``ref`` names; :class:`DamagedStoreError` otherwise."""
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.hex:
        raise DamagedStoreError(
            f"blob {ref.digest} in {where} is damaged: its bytes do not match the digest "
            f"({len(data):,} bytes stored, {ref.size:,} expected)")
    return data


TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
BINARY_MEDIA_TYPE = "application/octet-stream"


def prepared(data: object, media_type: str, max_bytes: int) -> tuple[BlobRef, bytes]:
    """What a put stores: the reference and the bytes, checked before any I/O.

    ``str`` data without a media type of its own is ``text/plain; charset=utf-8``.
    """
    raw = blob_bytes(data, max_bytes)
    if isinstance(data, str) and media_type == BINARY_MEDIA_TYPE:
        media_type = TEXT_MEDIA_TYPE
    return ref_for(raw, media_type), raw


def checked_ref(ref: object) -> BlobRef:
    """``ref`` if it is a :class:`BlobRef`; :class:`InvalidInputError` otherwise."""
    if not isinstance(ref, BlobRef):
        raise InvalidInputError(f"expected a BlobRef, not {type(ref).__name__}")
    return ref


def not_found(ref: BlobRef, where: str) -> BlobNotFoundError:
    """The error for a blob ``where`` does not hold."""
    return BlobNotFoundError(f"no blob {ref.digest} in {where}", digest=ref.digest)
