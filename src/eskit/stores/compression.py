"""Payload compression: zstd frames for large event data, with no I/O.

A stored payload is either the codec's JSON text or a zstd frame of it. They
are told apart by the frame's magic number ``28 b5 2f fd``: its first byte is
``(``, which can never start a JSON text (a JSON text starts with whitespace,
``{``, ``[``, ``"``, a digit, ``-``, ``t``, ``f`` or ``n``), so no flag column is
needed and a row's encoding cannot disagree with its bytes. SQLite stores a frame
as a BLOB in the same ``data`` column (text stays TEXT); PostgreSQL, whose ``data``
column is ``json``, keeps frames in the ``data_zstd`` bytea column (schema 5) and
reads them back as ``\\x`` and hex, which cannot start a JSON text either.

Only event data is compressed: metadata is small in practice (ids, trace
context), and below the threshold compression does not pay.

Reading a frame is bounded: the frame must declare its decoded size, which must
not exceed :data:`MAX_INFLATED_BYTES` (the default 8 MiB event limit); the buffer
is allocated for that size and zstd refuses to write past it, and the frame's
checksum must match. So a corrupt frame or a decompression bomb is a
:class:`~eskit.errors.DecodingError` (handled like any undecodable event), never
a hang or an allocation beyond the bound. Events larger than the bound (a store
with a raised ``max_event_bytes``) are stored uncompressed.
"""

from __future__ import annotations

import threading
from typing import Any

from eskit.errors import DecodingError, InvalidInputError
from eskit.stores.model import DEFAULT_MAX_EVENT_BYTES

__all__ = ["DEFAULT_COMPRESS_THRESHOLD", "MAX_INFLATED_BYTES"]

MAGIC = b"\x28\xb5\x2f\xfd"
"""The zstd frame magic number, the first four bytes of every compressed payload."""
HEX_PREFIX = "\\x28b52ffd"
"""How PostgreSQL's bytea text output of a compressed payload starts."""

DEFAULT_COMPRESS_THRESHOLD = 1024
"""Payloads of at least this many encoded bytes are compressed by default.

Below about 1 KiB a JSON event without a shared dictionary shrinks little (the
frame header and checksum cost 10 bytes, and short texts repeat little), while
every compressed row costs a decompression on each read
(``benchmarks/README.md``, "Compression")."""

MAX_INFLATED_BYTES = DEFAULT_MAX_EVENT_BYTES
"""The largest decoded size a stored frame may declare; larger payloads are
stored uncompressed."""

LEVEL = 3  # zstd's default: most of the ratio of higher levels at a fraction of the time

class _Zstd(threading.local):
    """zstandard's contexts, one set per thread (its compressor and decompressor
    objects must not be used by two threads at once), made on first use: most
    processes (small events only) never compress or inflate, and the import costs
    several milliseconds at start-up."""

    def __init__(self) -> None:
        import zstandard

        self.module: Any = zstandard
        self.compress = zstandard.ZstdCompressor(
            level=LEVEL, write_checksum=True, write_content_size=True
        ).compress
        self.decompress = zstandard.ZstdDecompressor().decompress
        self.unknown = (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR)


_zstd: _Zstd | None = None


def _lib() -> _Zstd:
    global _zstd
    if _zstd is None:
        _zstd = _Zstd()  # a threading.local: each thread runs __init__ on first access
    return _zstd


def check_compress_threshold(value: object) -> int | None:
    """``value`` as a store's ``compress_threshold``: a positive int or ``None`` (off)."""
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise InvalidInputError(
            f"compress_threshold must be a positive int or None, not {value!r}"
        )
    return value


def compress(data: bytes) -> bytes:
    """``data`` as one checksummed zstd frame that declares its decoded size."""
    return bytes(_lib().compress(data))


def should_compress(data: bytes, threshold: int | None) -> bool:
    return threshold is not None and threshold <= len(data) <= MAX_INFLATED_BYTES


def stored_data(data: bytes, threshold: int | None) -> str | bytes:
    """What a store writes for encoded event data: the JSON text, or a frame of it
    when it is at least ``threshold`` bytes and the frame is smaller."""
    if threshold is not None and threshold <= len(data) <= MAX_INFLATED_BYTES:
        frame = compress(data)
        if len(frame) < len(data):
            return frame
    return data.decode()


def inflate(frame: bytes, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """The payload a stored frame holds; :class:`DecodingError` if it is not a
    sound frame of at most ``limit`` decoded bytes."""
    if frame[:4] != MAGIC:
        raise DecodingError("stored payload is not a zstd frame")
    lib = _lib()
    try:
        size = lib.module.frame_content_size(frame)
    except lib.module.ZstdError as exc:
        raise DecodingError(f"corrupt zstd frame header: {exc}") from exc
    if size in lib.unknown or size < 1:
        # eskit writes no empty payload; and max_output_size=0 would mean "no bound".
        raise DecodingError("zstd frame does not declare a decoded size")
    if size > limit:
        raise DecodingError(
            f"zstd frame declares {size} decoded bytes, over the limit of {limit}"
        )
    try:
        # One shot into a buffer of the declared size: zstd stops with an error
        # rather than write past it, and checks the checksum.
        out: bytes = lib.decompress(frame, max_output_size=size)
    except (lib.module.ZstdError, SystemError, ValueError) as exc:
        raise DecodingError(f"corrupt zstd frame: {exc}") from exc
    if len(out) != size:
        raise DecodingError("zstd frame decodes to fewer bytes than it declares")
    return out


FRAME_HEADER_BYTES = 18
"""The most bytes a zstd frame header takes (magic, descriptor, window, dictionary id,
content size): what :func:`declared_size` needs of a stored frame."""


def declared_size(head: bytes) -> int | None:
    """The decoded size a frame's header (its first :data:`FRAME_HEADER_BYTES`)
    declares, without inflating it; ``None`` if it is not a frame that declares one."""
    if head[:4] != MAGIC:
        return None
    lib = _lib()
    try:
        size = lib.module.frame_content_size(head)
    except lib.module.ZstdError:
        return None
    return None if size in lib.unknown else int(size)


def plain(stored: str | bytes) -> str | bytes:
    """A stored payload as JSON: ``stored`` itself unless it is a frame (bytes, or
    PostgreSQL's hex text of one), which is inflated; :class:`DecodingError` for a
    bad frame."""
    if type(stored) is bytes:
        if stored[:4] == MAGIC:
            return inflate(stored)
    elif type(stored) is str and stored.startswith(HEX_PREFIX):
        try:
            frame = bytes.fromhex(stored[2:])
        except ValueError as exc:
            raise DecodingError(f"corrupt compressed payload: {exc}") from exc
        return inflate(frame)
    return stored


def is_compressed(stored: object) -> bool:
    """Whether a stored payload is a zstd frame (or PostgreSQL's hex text of one)."""
    if isinstance(stored, bytes | bytearray | memoryview):
        return bytes(stored[:4]) == MAGIC
    return isinstance(stored, str) and stored.startswith(HEX_PREFIX)

