"""Master keys: the :class:`KeyProvider` that wraps and unwraps subjects' data keys.

Each data subject has a random 256-bit data key. It is stored only *wrapped*
(encrypted) by a master key the database never holds: a key file, an
environment variable, or a KMS implementing :class:`KeyProvider`. Every
wrapped key records the id of the master key that wrapped it, so master keys
can be rotated: :meth:`~eskit.protection.ProtectedEventStore.rewrap` re-wraps
the data keys under the provider's current master key, in bounded batches,
without rewriting a single event.

The local format, one master key per entry, the first being current::

    ESKIT_MASTER_KEYS="2026-12:<base64 of 32 bytes>,2026-01:<base64 of 32 bytes>"

(:func:`generate_master_key` prints an entry). A key file holds the same
entries, one per line; lines starting with ``#`` are comments.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from eskit.errors import InvalidInputError
from eskit.events import check_name, utc_now
from eskit.protection._aead import AESGCM, InvalidTag
from eskit.protection.envelope import KEY_BYTES, DataKey
from eskit.protection.errors import KeyUnavailableError

__all__ = [
    "DEFAULT_KEYS_ENV",
    "KeyProvider",
    "LocalKeyProvider",
    "WrappedKey",
    "generate_master_key",
]

DEFAULT_KEYS_ENV = "ESKIT_MASTER_KEYS"
"""The environment variable :meth:`LocalKeyProvider.from_env` reads by default."""


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys with master keys it keeps outside the database.

    ``wrap`` uses the current master key and says which one it used;
    ``unwrap`` must accept every master key still holding wrapped keys.
    ``aad`` (the subject and the key id) must be authenticated with the key:
    a wrapped key moved to another row must not unwrap.
    """

    def current_key_id(self) -> str:
        """The id of the master key :meth:`wrap` uses now."""
        ...

    def wrap(self, material: bytes, aad: bytes) -> tuple[str, bytes]:
        """``(master key id, wrapped bytes)`` for a data key."""
        ...

    def unwrap(self, master_key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; :class:`KeyUnavailableError` if that master key is unknown or
        the wrapped bytes do not authenticate."""
        ...


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A subject's data key as the key store keeps it: wrapped, never in clear."""

    key_id: str
    subject: str
    master_key_id: str
    wrapped: bytes = field(repr=False)
    created_at: datetime = field(default_factory=utc_now, compare=False)

    @property
    def aad(self) -> bytes:
        return wrap_aad(self.subject, self.key_id)


def wrap_aad(subject: str, key_id: str) -> bytes:
    return b"eskit-subject-key\0" + subject.encode() + b"\0" + key_id.encode()


class LocalKeyProvider:
    """Master keys held in this process: from a mapping, a key file or an environment variable.

    Wraps with AES-256-GCM and a random nonce (stored before the ciphertext).
    The first key given is current. Not guaranteed: protecting the keys
    themselves: whoever reads the key file or the environment can unwrap
    every data key still stored.
    """

    def __init__(self, keys: Mapping[str, bytes], *, current: str | None = None) -> None:
        if not keys:
            raise InvalidInputError("a key provider needs at least one master key")
        self._keys: dict[str, AESGCM] = {}
        for key_id, material in keys.items():
            check_name("master key id", key_id)
            if "," in key_id or ":" in key_id:
                raise InvalidInputError(f"master key id {key_id!r} must not contain ',' or ':'")
            if type(material) is not bytes or len(material) != KEY_BYTES:
                raise InvalidInputError(f"master key {key_id!r} must be {KEY_BYTES} bytes")
            self._keys[key_id] = AESGCM(material)
        self._current = next(iter(keys)) if current is None else current
        if self._current not in self._keys:
            raise InvalidInputError(f"current master key {self._current!r} is not among the keys")

    @classmethod
    def parse(cls, text: str) -> LocalKeyProvider:
        """Keys from ``id:base64`` entries separated by commas or new lines (first is current)."""
        keys: dict[str, bytes] = {}
        for raw in text.replace(",", "\n").splitlines():
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise InvalidInputError("a master key entry must be 'id:base64-key'")
            try:
                material = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise InvalidInputError(f"master key {key_id.strip()!r} is not base64") from None
            if key_id.strip() in keys:
                raise InvalidInputError(f"master key {key_id.strip()!r} is given twice")
            keys[key_id.strip()] = material
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Keys from a file of ``id:base64`` lines (keep it out of the database's backups)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the master key file {str(path)!r}: {exc}"
            ) from None
        return cls.parse(text)

    @classmethod
    def from_env(cls, name: str = DEFAULT_KEYS_ENV) -> LocalKeyProvider:
        """Keys from the environment variable ``name`` (default ``ESKIT_MASTER_KEYS``)."""
        text = os.environ.get(name)
        if not text:
            raise InvalidInputError(f"the environment variable {name} holds no master key")
        return cls.parse(text)

    def current_key_id(self) -> str:
        return self._current

    def wrap(self, material: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        return self._current, nonce + self._keys[self._current].encrypt(nonce, material, aad)

    def unwrap(self, master_key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        key = self._keys.get(master_key_id)
        if key is None:
            raise KeyUnavailableError(
                f"a subject key is wrapped by master key {master_key_id!r}, which the key "
                "provider does not hold"
            )
        try:
            return key.decrypt(wrapped[:12], wrapped[12:], aad)
        except InvalidTag:
            raise KeyUnavailableError(
                f"a subject key wrapped by master key {master_key_id!r} does not unwrap: the "
                "row was changed or moved, or the master key is not the one that wrapped it"
            ) from None


def generate_master_key(key_id: str) -> str:
    """A new ``id:base64`` master key entry, from the operating system's random source."""
    check_name("master key id", key_id)
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def new_wrapped_key(subject: str, provider: KeyProvider) -> tuple[DataKey, WrappedKey]:
    """A fresh data key for ``subject``, and its wrapped form to store (internal)."""
    material = secrets.token_bytes(KEY_BYTES)
    key_id = secrets.token_hex(16)
    master_key_id, wrapped = provider.wrap(material, wrap_aad(subject, key_id))
    return DataKey(key_id, subject, material), WrappedKey(key_id, subject, master_key_id, wrapped)


def unwrap(row: WrappedKey, provider: KeyProvider) -> DataKey:
    """The data key a stored row holds (internal)."""
    material = provider.unwrap(row.master_key_id, row.wrapped, row.aad)
    return DataKey(row.key_id, row.subject, material)


class UnwrapCache:
    """Data keys already unwrapped, by key id and the exact stored row (internal).

    Only saves the unwrap (a KMS call, or AES plus two HMACs): the row itself is
    still fetched from the key store on every use, so an erased key is never
    served from here. Bounded: cleared when it holds ``size`` keys.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._keys: dict[tuple[str, str, bytes], DataKey] = {}

    def unwrap(self, row: WrappedKey, provider: KeyProvider) -> DataKey:
        cache_key = (row.key_id, row.master_key_id, row.wrapped)
        key = self._keys.get(cache_key)
        if key is None or key.subject != row.subject:
            key = unwrap(row, provider)
            if len(self._keys) >= self._size:
                self._keys.clear()
            self._keys[cache_key] = key
        return key


def rewrapped(row: WrappedKey, provider: KeyProvider) -> WrappedKey:
    """``row`` wrapped again by the provider's current master key (internal)."""
    material = provider.unwrap(row.master_key_id, row.wrapped, row.aad)
    master_key_id, wrapped = provider.wrap(material, row.aad)
    return WrappedKey(row.key_id, row.subject, master_key_id, wrapped, row.created_at)


class KeyCache:
    """Unwrapped data keys kept between calls while nothing changed them (internal).

    Checked, never trusted: before each append and each page read the protected
    store asks the key store for its change count (one small query; see
    :class:`~eskit.protection.keystore.CountsKeyChanges`) and gives it to
    :meth:`validate`. Any change since the keys were cached (an erasure or a
    rewrap, in this process or another, or a key row changed by hand) empties
    the cache, so an erased key is never served from it. The count is read
    *before* the rows it guards, and keys are put under the count they were
    fetched after: a key fetched before an erasure is dropped at the next check,
    or not cached at all if another thread checked meanwhile. ``None`` (a key
    store that does not count) caches nothing. Bounded: emptied when it holds
    ``size`` keys.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._changes: int | None = None
        self._by_id: dict[str, DataKey] = {}
        self._by_subject: dict[str, DataKey] = {}

    def validate(self, changes: int | None) -> int | None:
        """Empty the cache unless ``changes`` is the count it was filled under; the
        count to :meth:`put` the keys fetched next under."""
        if changes is None or changes != self._changes:
            self.clear()
        self._changes = changes
        return changes

    def clear(self) -> None:
        self._by_id.clear()
        self._by_subject.clear()

    def invalidate(self) -> None:
        """Empty the cache and refuse every key fetched before now (an erasure here)."""
        self.clear()
        self._changes = None

    def by_subject(self, subjects: Collection[str]) -> tuple[dict[str, DataKey], list[str]]:
        """The cached keys of ``subjects``, and the subjects not cached."""
        cached = self._by_subject
        found = {s: key for s in subjects if (key := cached.get(s)) is not None}
        return found, [s for s in subjects if s not in found]

    def by_id(self, key_ids: Collection[str]) -> tuple[dict[str, DataKey], list[str]]:
        """The cached keys among ``key_ids``, and the ids not cached."""
        cached = self._by_id
        found = {k: key for k in key_ids if (key := cached.get(k)) is not None}
        return found, [k for k in key_ids if k not in found]

    def put(self, keys: Iterable[DataKey], changes: int | None) -> None:
        """Cache ``keys``, fetched after :meth:`validate` returned ``changes``; dropped if
        the count moved since (another thread saw a change, or erased here)."""
        if changes is None or changes != self._changes:
            return
        for key in keys:
            if len(self._by_id) >= self._size:
                self.clear()
            self._by_id[key.key_id] = key
            self._by_subject[key.subject] = key
