"""The chain hashes of a batch being appended, with no I/O (the append's hot path).

The same bytes as :func:`eskit.integrity.content_digest` and
:func:`eskit.integrity.link_hash`, inlined because they run for every appended
event; ``tests/test_integrity.py`` holds them equal to the definitions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from eskit.integrity import CONTENT_HEADER, CONTENT_TAG, GENESIS
from eskit.stores.model import PendingEvent
from eskit.stores.rows import timestamp_to_micros

__all__ = ["chain_hashes", "digests"]


def digests(stream: str, batch: Sequence[PendingEvent]) -> list[bytes]:
    """Each event's :func:`~eskit.integrity.content_digest` (all but version and link).

    The same bytes as ``content_digest``, inlined: it runs for every appended event
    (``tests/test_integrity.py`` holds the two equal)."""
    key = stream.encode("utf-8", "surrogatepass")
    prefix = CONTENT_TAG
    header, sha256, n_key = CONTENT_HEADER, hashlib.sha256, len(key)
    out: list[bytes] = []
    append = out.append
    micros = -1
    stamp: object = None
    for p in batch:
        if p.timestamp is not stamp:
            stamp, micros = p.timestamp, timestamp_to_micros(p.timestamp)
        eid = p.event_id.bytes
        kind = p.event_type.encode("utf-8", "surrogatepass")
        data, meta = p.data, p.metadata
        append(sha256(b"".join((
            prefix, header(p.schema_version, micros, n_key, len(eid), len(kind), len(data),
                           len(meta)),
            key, eid, kind, data, meta))).digest())
    return out


def chain_hashes(head: int, previous: bytes | None, digests: Sequence[bytes]) -> list[bytes]:
    """The hashes of events of ``digests`` appended after version ``head`` whose hash is
    ``previous`` (``None``: none, or stored before the chain); as
    :func:`~eskit.integrity.link_hash` of :func:`~eskit.integrity.event_bytes`."""
    hashes = []
    sha256 = hashlib.sha256
    if previous is None:
        previous = GENESIS
    for version, digest in enumerate(digests, head + 1):
        previous = sha256(previous + version.to_bytes(8, "big", signed=True) + digest).digest()
        hashes.append(previous)
    return hashes
