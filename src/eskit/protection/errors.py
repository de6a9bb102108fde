"""The errors of :mod:`eskit.protection`, in eskit's one exception tree::

    EskitError
    ├── DecodingError
    │   └── DecryptionError          a sealed field failed authentication (tampered,
    │                                moved to another event or field, or a wrong key)
    └── StoreError
        └── KeyUnavailableError      a subject key exists but cannot be unwrapped (its
                                     master key is missing from the key provider)

An erased subject is not an error: its fields read as their redacted value.
Bad input (a personal-data field whose subject field is missing, a payload that
already looks like a sealed field) is an :class:`~eskit.InvalidInputError`,
raised before anything is written.
"""

from __future__ import annotations

from eskit.errors import DecodingError, StoreError

__all__ = ["DecryptionError", "KeyUnavailableError"]


class DecryptionError(DecodingError):
    """A sealed field's ciphertext did not authenticate: nothing is returned for it.

    AES-GCM authenticates the ciphertext together with the event id and the
    field's path, so a changed byte, an envelope copied to another event or
    field, or a key that is not the one it was sealed with all end here.
    """


class KeyUnavailableError(StoreError):
    """A subject key is stored but its master key is not in the key provider.

    Unlike an erased subject (no key row at all, read as redacted), this is a
    configuration error: reading on would silently hide data that still exists.
    """
