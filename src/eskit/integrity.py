"""Tamper evidence, the pure part: the bytes an event's chain hash covers, and the link.

Each stored event carries ``hash = sha256(previous + event_bytes(...))``, where
``event_bytes`` is the event's version then the sha256 of the rest of it, and
``previous`` is the hash of the event before it in its stream (:data:`GENESIS`
for a stream's first event). Changing, removing, inserting or reordering an
event of a stream therefore changes a hash that the next event's link, or a
recorded head (:func:`head_digest`), no longer matches.

What is hashed is the event as *stored*, in a form every encoding of it shares:

* the stream key, version, event id (16 bytes), event type, schema version and
  recorded time (integer microseconds since the epoch, UTC);
* the payload as the codec's JSON bytes, *decoded*: a zstd frame counts as the
  JSON it holds, so compression and ``eskit compact`` leave the hash alone;
* the metadata as the codec's JSON bytes.

Personal-data fields of a protected store (:mod:`eskit.protection`) are stored as
ciphertext envelopes, so the chain covers the ciphertext: erasing a subject
(deleting its key) and rotating master keys (re-wrapping subject keys) leave
every stored byte, and so every hash, as it was. The global position and the
DCB tags are not covered (a position is only known after the insert on some
backends; tags live in their own table).

No secret goes in: anyone who can write the database *and* knows this scheme
can recompute a whole chain. Only a head recorded outside the database
(``eskit verify --print-head``, ``--expect-head``) catches that. See
docs/data-protection.md, "Tamper evidence".
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

__all__ = [
    "GENESIS", "HASH_BYTES", "content_digest", "event_bytes", "head_digest", "link_hash",
    "version_bytes",
]

HASH_BYTES = 32
GENESIS = bytes(HASH_BYTES)
"""The ``previous`` hash of a stream's first event (and of the first event chained
after events that were stored before the chain existed)."""

CONTENT_TAG = b"eskit-event/1\x00"
"""The first bytes :func:`content_digest` hashes (the format's name and version)."""
_sha256 = hashlib.sha256


CONTENT_HEADER = struct.Struct(">qqIIIII").pack
"""Packs :func:`content_digest`'s header: schema version, recorded micros, then the
five lengths."""


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def content_digest(
    stream: str,
    event_id: bytes,
    event_type: str,
    schema_version: int,
    recorded_micros: int,
    data: bytes,
    metadata: bytes,
) -> bytes:
    """sha256 of everything an event's hash covers but its version and the link.

    The bytes hashed: a tag, the schema version and the recorded time (8 bytes each,
    big-endian, signed), the lengths of the five variable fields (4 bytes each), then
    those fields: stream key (UTF-8), event id, event type (UTF-8), data, metadata.
    So no two different events share their bytes. ``data`` and ``metadata`` are the
    codec's JSON, uncompressed. Kept apart from the version so that a store can
    compute it before it knows the version (PostgreSQL finishes the link in the
    append statement, with its own ``sha256``).
    """
    key = stream.encode("utf-8", "surrogatepass")
    kind = event_type.encode("utf-8", "surrogatepass")
    return _sha256(b"".join((
        CONTENT_TAG,
        CONTENT_HEADER(schema_version, recorded_micros, len(key), len(event_id), len(kind),
                len(data), len(metadata)),
        key, event_id, kind, data, metadata,
    ))).digest()


def event_bytes(
    stream: str,
    version: int,
    event_id: bytes,
    event_type: str,
    schema_version: int,
    recorded_micros: int,
    data: bytes,
    metadata: bytes,
) -> bytes:
    """The canonical bytes of one stored event: its version (8 bytes, big-endian, as
    PostgreSQL's ``int8send``) then its :func:`content_digest`."""
    return version_bytes(version) + content_digest(
        stream, event_id, event_type, schema_version, recorded_micros, data, metadata)


def version_bytes(version: int) -> bytes:
    """A version as the 8 bytes that start :func:`event_bytes`."""
    return version.to_bytes(8, "big", signed=True)


def link_hash(previous: bytes | None, event: bytes) -> bytes:
    """The chain hash of an event whose canonical bytes are ``event``, following
    the event whose hash is ``previous`` (``None``: :data:`GENESIS`)."""
    return _sha256((GENESIS if previous is None else previous) + event).digest()


def head_digest(heads: Iterable[tuple[str, int, bytes | None]]) -> str:
    """One hex digest over the streams' heads ``(stream, version, hash)``, given in
    stream-key order: what ``eskit verify --print-head`` prints."""
    digest = _sha256(b"eskit-head/1\x00")
    for stream, version, hash_ in heads:
        digest.update(_field(stream.encode("utf-8", "surrogatepass")))
        digest.update(_field(str(version).encode()))
        digest.update(_field(hash_ or b""))
    return digest.hexdigest()
