"""Segment files and manifests, pure (no I/O): encoding and checking them.

A segment is a zstd frame of JSON lines, one per stored row, with every column
exactly as stored: position, event id, stream, version, type, schema version,
recorded_at (microseconds), metadata (text), data (text, or base64 of a
compressed BLOB), the chain hash (hex, absent if the row had none; see
:mod:`eskit.integrity`) and the event's DCB tags in their order (absent if it had
none), so a restore writes the same bytes back. Its manifest (JSON)
names the segment, its sha256, its streams with version and position ranges, the
counts and the eskit and schema versions. The manifest is written after the
segment: a manifest always points at a whole segment.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from eskit.errors import EskitError

__all__ = [
    "ArchiveCorruptError", "RawRow", "RowTags", "StreamRange", "decode_segment",
    "decode_segment_tags", "encode_segment", "manifest_bytes", "parse_manifest", "sha256",
]

MANIFEST_FORMAT = "eskit-archive-manifest/1"

RawRow = tuple[int, bytes, str, int, str, int, int, "str | bytes", str, "bytes | None"]
"""A stored row: position, event id bytes, stream, version, type, schema version,
recorded_at micros, data (text, or bytes if stored compressed), metadata, chain hash."""

RowTags = dict[int, tuple[str, ...]]
"""The DCB tags of a segment's tagged rows, by position (rows without tags absent)."""


class ArchiveCorruptError(EskitError):
    """A segment or manifest does not match its checksum or cannot be decoded."""


@dataclass(frozen=True)
class StreamRange:
    """One archived stream inside a segment."""

    stream: str
    first_version: int
    last_version: int
    first_position: int
    last_position: int
    events: int


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_segment(rows: Iterable[RawRow], tags: RowTags | None = None) -> bytes:
    lines = []
    for pos, eid, stream, version, etype, schema, at, data, meta, hash_ in rows:
        item: dict[str, Any] = {
            "p": pos, "id": eid.hex(), "s": stream, "v": version, "t": etype,
            "sv": schema, "at": at, "m": meta,
        }
        if hash_ is not None:
            item["h"] = hash_.hex()
        if tags and (row_tags := tags.get(pos)):
            item["tg"] = list(row_tags)
        if isinstance(data, bytes):
            item["db"] = base64.b64encode(data).decode()
        else:
            item["d"] = data
        # ensure_ascii keeps lone surrogates as escapes, so any stored text survives.
        lines.append(json.dumps(item, ensure_ascii=True, separators=(",", ":")))
    return zstandard.ZstdCompressor(level=3).compress(("\n".join(lines) + "\n").encode())


def decode_segment(blob: bytes) -> list[RawRow]:
    """The rows of a segment (its tags left out: see :func:`decode_segment_tags`)."""
    return decode_segment_tags(blob)[0]


def decode_segment_tags(blob: bytes) -> tuple[list[RawRow], RowTags]:
    """The rows of a segment and the tags of its tagged rows."""
    try:
        text = zstandard.ZstdDecompressor().decompressobj().decompress(blob).decode()
        rows: list[RawRow] = []
        tags: RowTags = {}
        for line in text.splitlines():
            if not line:
                continue
            i = json.loads(line)
            data: str | bytes = base64.b64decode(i["db"]) if "db" in i else i["d"]
            rows.append((int(i["p"]), bytes.fromhex(i["id"]), i["s"], int(i["v"]), i["t"],
                         int(i["sv"]), int(i["at"]), data, i["m"],
                         bytes.fromhex(i["h"]) if "h" in i else None))
            if "tg" in i:
                found = i["tg"]
                if not isinstance(found, list) or not all(isinstance(t, str) for t in found):
                    raise ValueError(f"tags of position {i['p']} are not a list of strings")
                tags[int(i["p"])] = tuple(found)
        return rows, tags
    except (zstandard.ZstdError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveCorruptError(f"segment cannot be decoded: {exc}") from exc


def stream_ranges(rows: Sequence[RawRow]) -> list[StreamRange]:
    by: dict[str, list[RawRow]] = {}
    for row in rows:
        by.setdefault(row[2], []).append(row)
    return [StreamRange(s, min(r[3] for r in rs), max(r[3] for r in rs),
                        min(r[0] for r in rs), max(r[0] for r in rs), len(rs))
            for s, rs in by.items()]


def manifest_bytes(segment: str, blob: bytes, rows: Sequence[RawRow], *,
                   eskit_version: str, schema_version: int, store: str,
                   created_at: str) -> bytes:
    ranges = stream_ranges(rows)
    doc = {
        "format": MANIFEST_FORMAT, "segment": segment, "sha256": sha256(blob),
        "bytes": len(blob), "events": len(rows), "eskit_version": eskit_version,
        "schema_version": schema_version, "store": store, "created_at": created_at,
        "positions": [min(r[0] for r in rows), max(r[0] for r in rows)] if rows else [0, 0],
        "streams": [vars(r) for r in ranges],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ArchiveCorruptError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ArchiveCorruptError("not an eskit archive manifest")
    return doc
