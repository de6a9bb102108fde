"""Sealing values into envelopes and opening them again (pure, no I/O).

Version 2 is written; every version ever written (1 and 2) is read.

**Version 2** (what eskit writes now, this module's ``_VERSION``). The marked
fields of one event that belong to one subject are sealed *together*, in one
AES-GCM call: the event's payload gets a top-level ``"$pd"`` list with one
*group* per subject, and each sealed field keeps its place in the payload with a
marker naming its group::

    {"customer_id": "c-7", "name": {"$pd": 0}, "email": {"$pd": 0}, "plan": "basic",
     "$pd": [{"v": 2, "s": "c-7", "k": "<data key id>", "f": ["name", "email"],
              "c": "<base64 of nonce, ciphertext and tag>"}]}

The plaintext is the list of the fields' values, in the order of ``"f"``, in
eskit's codec (so ``Decimal``, ``date`` and the rest round-trip exactly). The
paths are in clear: a reader whose subject was erased must know which fields to
redact. A whole payload, a metadata value and a snapshot are single *values*,
sealed one each: ``{"$pd": {"v": 2, "s": ..., "k": ..., "c": ...}}`` in place of
the value.

**Version 1** (read only): one envelope per field, in place of the value::

    {"$pd": {"v": 1, "s": "<subject id>", "k": "<data key id>",
             "n": "<nonce, base64>", "c": "<AES-GCM ciphertext and tag, base64>"}}

The associated data binds every ciphertext to the event id, the subject, the key
id and the field path (version 2 groups: every path of the group, in order): an
envelope or a group copied to another event, another field, or given another
list of paths does not open. The version is bound too (each version has its own
prefix), as is the difference between a group and a value.

The nonce is derived, not drawn: a keyed hash of the associated data and the
plaintext under a key of its own (the SIV idea; version 1 HMAC-SHA256, version 2
keyed BLAKE2b, a third of the cost). Sealing the same event again therefore
gives the same bytes, which keeps eskit's idempotent retries working (a retried
append compares payloads byte for byte), and two different plaintexts or events
never share a nonce (but for a 2**-96 chance). What it gives away: that one
event was sealed twice with the same values, which a retry is.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson

from eskit import codec
from eskit.protection._aead import AESGCM, InvalidTag
from eskit.protection.errors import DecryptionError

__all__ = ["ENVELOPE", "DataKey"]

ENVELOPE = "$pd"
_VERSION = 2
_V1_KEYS = frozenset(("v", "s", "k", "n", "c"))
_V2_KEYS = frozenset(("v", "s", "k", "c"))
_NONCE_BYTES = 12
_TAG = b'"' + codec.TAG.encode() + b'"'  # what a payload holding tagged values contains
KEY_BYTES = 32

# The first bytes of every associated data, one per version and kind.
_V1_VALUE = b"eskit-pd-v1\0"
_V2_VALUE = b"eskit-pd-v2\0"
_V2_GROUP = b"eskit-pg-v2\0"


@dataclass(frozen=True, slots=True)
class DataKey:
    """A subject's data key, unwrapped (internal: never stored in this form)."""

    key_id: str
    subject: str
    material: bytes = field(repr=False)
    _aead: AESGCM = field(init=False, repr=False, compare=False)
    _nonce_key: bytes = field(init=False, repr=False, compare=False)
    _aad_tail: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Keys from one: encryption and nonce derivation never share a key. The
        # version 1 nonce key is no longer needed: nothing is sealed in version 1.
        enc = hmac.digest(self.material, b"eskit field encryption", "sha256")
        object.__setattr__(self, "_aead", AESGCM(enc))
        object.__setattr__(
            self, "_nonce_key", hmac.digest(self.material, b"eskit nonce v2", "sha256")
        )
        # The end of every associated data this key seals or opens: NUL subject NUL key id.
        object.__setattr__(
            self, "_aad_tail", b"\0" + self.subject.encode() + b"\0" + self.key_id.encode()
        )


_from_b64 = binascii.a2b_base64
_to_b64 = binascii.b2a_base64
_blake2b = hashlib.blake2b


def _sealed_text(key: DataKey, aad: bytes, plaintext: bytes) -> str:
    """base64 of nonce, ciphertext and tag (version 2)."""
    nonce = _blake2b(aad + b"\0" + plaintext, key=key._nonce_key,
                     digest_size=_NONCE_BYTES).digest()
    return _to_b64(nonce + key._aead.encrypt(nonce, plaintext, aad), newline=False).decode()


def _opened_bytes(key: DataKey, aad: bytes, text: object) -> bytes:
    # binascii directly: base64.b64decode's argument checks cost more than the AES.
    sealed = _from_b64(text, strict_mode=True)  # type: ignore[arg-type]
    return key._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)


# -- values: a whole payload, a metadata value, a snapshot (and every version 1 field) ----


def seal(value: Any, key: DataKey, event_id: UUID, path: str, *, naive: bool) -> dict[str, Any]:
    """The envelope holding ``value`` at ``path`` of event ``event_id`` (version 2)."""
    return seal_bytes(codec.encode(value, naive_datetimes=naive), key, event_id, path)


def seal_bytes(plaintext: bytes, key: DataKey, event_id: UUID, path: str) -> dict[str, Any]:
    """:func:`seal` of a value already encoded by the codec."""
    aad = b"".join((_V2_VALUE, event_id.bytes, b"\0", path.encode(), key._aad_tail))
    return {ENVELOPE: {
        "v": _VERSION, "s": key.subject, "k": key.key_id,
        "c": _sealed_text(key, aad, plaintext),
    }}


def body_of(value: object) -> dict[str, Any] | None:
    """The body if ``value`` is a value envelope (any version), else ``None``."""
    if type(value) is dict and len(value) == 1:
        body = value.get(ENVELOPE)
        if type(body) is dict and (body.keys() == _V2_KEYS or body.keys() == _V1_KEYS):
            return body
    return None


def is_reserved(value: object) -> bool:
    """Whether ``value`` looks like anything the store writes: an envelope of either
    version or a field's marker (a dict whose one key is ``"$pd"``)."""
    return type(value) is dict and len(value) == 1 and ENVELOPE in value


class Unopened(Exception):
    """An envelope that does not decrypt (internal; the transcoder turns it into a
    :class:`DecryptionError` naming the event)."""


def open_body(body: dict[str, Any], key: DataKey, event_id: bytes, path: str) -> Any:
    """The value sealed in ``body`` at ``path`` of the event whose id's bytes are
    ``event_id``; :class:`Unopened` if it does not authenticate."""
    try:
        # The key was looked up by the body's key id; a body naming another subject
        # was not sealed by it (the associated data would differ): refused the same.
        if body["s"] != key.subject or body["k"] != key.key_id:
            raise ValueError("the envelope names another subject or key")
        if body["v"] == 2 and "n" not in body:
            aad = b"".join((_V2_VALUE, event_id, b"\0", path.encode(), key._aad_tail))
            plaintext = _opened_bytes(key, aad, body["c"])
        elif body["v"] == 1 and "n" in body:
            aad = b"".join((_V1_VALUE, event_id, b"\0", path.encode(), key._aad_tail))
            nonce = _from_b64(body["n"], strict_mode=True)
            ciphertext = _from_b64(body["c"], strict_mode=True)
            plaintext = key._aead.decrypt(nonce, ciphertext, aad)
        else:
            raise ValueError(f"unknown envelope version {body['v']!r}")
    except (InvalidTag, ValueError, TypeError, binascii.Error) as exc:
        raise Unopened(path) from exc
    return codec.decode(plaintext)


# -- groups: the marked fields of one event that belong to one subject (version 2) -------


def seal_group(plaintext: bytes, paths: list[str], key: DataKey, event_id: bytes
               ) -> dict[str, Any]:
    """The group body sealing the fields at ``paths`` in one AES-GCM call: ``plaintext``
    is the list of their values, in that order, encoded by the codec."""
    aad = b"".join((_V2_GROUP, event_id, b"\0", "\0".join(paths).encode(), key._aad_tail))
    return {"v": _VERSION, "s": key.subject, "k": key.key_id, "f": paths,
            "c": _sealed_text(key, aad, plaintext)}


def group_paths(body: object) -> list[str] | None:
    """The paths of a group body if it has the shape of one, else ``None``.

    Only the shape: that each path is a non-empty str is checked by opening (the
    associated data authenticates the paths) or, for a redacted group, by
    :func:`checked_paths`.
    """
    if type(body) is dict and len(body) == 5:
        paths = body.get("f")
        if type(paths) is list and paths:
            return paths
    return None


def checked_paths(paths: list[Any]) -> bool:
    """Whether every path of a group is a non-empty str (needed where nothing was opened)."""
    return all(type(p) is str and p for p in paths)


def open_group(body: dict[str, Any], paths: list[str], key: DataKey, event_id: bytes
               ) -> list[Any]:
    """The values sealed in a group body (:func:`group_paths` gave ``paths``), one per
    path; :class:`Unopened` if it does not authenticate."""
    try:
        # The key was looked up by the body's key id; a body naming another subject
        # was not sealed by it (the associated data would differ): refused the same.
        if body["s"] != key.subject or body["k"] != key.key_id or body["v"] != 2:
            raise ValueError("the group names another subject, key or version")
        sealed = _from_b64(body["c"], strict_mode=True)
        # Paths hold no NUL (they are checked names), so NUL-joined they are unambiguous.
        aad = b"".join((_V2_GROUP, event_id, b"\0", "\0".join(paths).encode(), key._aad_tail))
        plaintext = key._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError, TypeError, binascii.Error) as exc:
        raise Unopened(",".join(map(str, paths))) from exc
    # codec.decode without its checks for metadata and bad JSON: the plaintext
    # authenticated, so it is the codec's JSON of a list.
    try:
        values = orjson.loads(plaintext)
    except orjson.JSONDecodeError as exc:  # sealed by a key holder, not by eskit
        raise Unopened(",".join(paths)) from exc
    if _TAG in plaintext:
        values = codec.decode_tree(values)
    if type(values) is not list or len(values) != len(paths):  # only a key holder could
        raise Unopened(",".join(paths))
    return values


def not_decrypting(path: str, where: str, position: int, cause: Unopened) -> DecryptionError:
    """The error for a sealed field that did not open (its cause kept)."""
    error = DecryptionError(
        f"sealed field {path or '(the whole payload)'!r} of {where} does not decrypt: its "
        "ciphertext, event id, path or key was changed",
        position=position or None,
    )
    error.__cause__ = cause.__cause__
    return error
