"""Sealing one field value into an envelope and opening it again (pure, no I/O).

A sealed field is stored in place of the value as::

    {"$pd": {"v": 1, "s": "<subject id>", "k": "<data key id>",
             "n": "<nonce, base64>", "c": "<AES-GCM ciphertext and tag, base64>"}}

The plaintext is the value in eskit's codec (so ``Decimal``, ``date`` and the
rest round-trip exactly). The associated data binds the ciphertext to the
event id, the field's path, the subject and the key id: an envelope copied to
another event or field does not open.

The nonce is derived, not drawn: an HMAC of the associated data and the
plaintext under a key of its own (the SIV idea). Sealing the same event again
therefore gives the same bytes, which keeps eskit's idempotent retries working
(a retried append compares payloads byte for byte), and two different
plaintexts or events never share a nonce (but for a 2**-96 chance). What it
gives away: that one event's field was sealed twice with the same value,
which a retry is.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eskit import codec
from eskit.protection._aead import AESGCM, InvalidTag
from eskit.protection.errors import DecryptionError

__all__ = ["ENVELOPE", "DataKey"]

ENVELOPE = "$pd"
_VERSION = 1
_BODY_KEYS = frozenset(("v", "s", "k", "n", "c"))
_NONCE_BYTES = 12
KEY_BYTES = 32


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
        # Two keys from one: encryption and nonce derivation never share a key.
        enc = hmac.digest(self.material, b"eskit field encryption", "sha256")
        object.__setattr__(self, "_aead", AESGCM(enc))
        object.__setattr__(
            self, "_nonce_key", hmac.digest(self.material, b"eskit field nonce", "sha256")
        )
        # The end of every associated data this key seals or opens: NUL subject NUL key id.
        object.__setattr__(
            self, "_aad_tail", b"\0" + self.subject.encode() + b"\0" + self.key_id.encode()
        )


_from_b64 = binascii.a2b_base64


def aad_head(event_id: UUID) -> bytes:
    """The part of the associated data every field of one event shares (computed once
    per event on reads: ``UUID.bytes`` alone costs half a microsecond)."""
    return b"eskit-pd-v1\0" + event_id.bytes + b"\0"


def _aad(head: bytes, path: str, subject: str, key_id: str) -> bytes:
    # The fields NUL-separated: b"eskit-pd-v1\0" id "\0" path "\0" subject "\0" key id.
    return b"".join((head, path.encode(), b"\0", subject.encode(), b"\0", key_id.encode()))


def seal(value: Any, key: DataKey, event_id: UUID, path: str, *, naive: bool) -> dict[str, Any]:
    """The envelope holding ``value`` for field ``path`` of event ``event_id``."""
    plaintext = codec.encode(value, naive_datetimes=naive)
    aad = _aad(aad_head(event_id), path, key.subject, key.key_id)
    nonce = hmac.digest(key._nonce_key, aad + b"\0" + plaintext, "sha256")[:_NONCE_BYTES]
    ciphertext = key._aead.encrypt(nonce, plaintext, aad)
    return {ENVELOPE: {
        "v": _VERSION, "s": key.subject, "k": key.key_id,
        "n": base64.b64encode(nonce).decode(), "c": base64.b64encode(ciphertext).decode(),
    }}


def body_of(value: object) -> dict[str, Any] | None:
    """The envelope's body if ``value`` is an envelope, else ``None``."""
    if type(value) is dict and len(value) == 1:
        body = value.get(ENVELOPE)
        if type(body) is dict and body.keys() == _BODY_KEYS:
            return body
    return None


class Unopened(Exception):
    """An envelope that does not decrypt (internal; the transcoder turns it into a
    :class:`DecryptionError` naming the event)."""


def open_body(body: dict[str, Any], key: DataKey, head: bytes, path: str) -> Any:
    """The value sealed in ``body`` for field ``path`` of the event whose
    :func:`aad_head` is ``head``; :class:`Unopened` if it does not authenticate."""
    try:
        # binascii directly: base64.b64decode's argument checks cost more than the AES.
        nonce = _from_b64(body["n"], strict_mode=True)
        ciphertext = _from_b64(body["c"], strict_mode=True)
        # The key was looked up by the body's key id; a body naming another subject
        # was not sealed by it (the associated data would differ): refused the same.
        if body["s"] != key.subject or body["k"] != key.key_id:
            raise ValueError("the envelope names another subject or key")
        plaintext = key._aead.decrypt(nonce, ciphertext, head + path.encode() + key._aad_tail)
    except (InvalidTag, ValueError, TypeError, binascii.Error) as exc:
        raise Unopened(path) from exc
    return codec.decode(plaintext)


def not_decrypting(path: str, where: str, position: int, cause: Unopened) -> DecryptionError:
    """The error for a sealed field that did not open (its cause kept)."""
    error = DecryptionError(
        f"sealed field {path or '(the whole payload)'!r} of {where} does not decrypt: its "
        "ciphertext, event id, path or key was changed",
        position=position or None,
    )
    error.__cause__ = cause.__cause__
    return error
