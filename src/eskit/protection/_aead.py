"""The one import of ``cryptography`` (the ``crypto`` extra), with a clear error without it."""

from __future__ import annotations

from eskit.errors import MissingExtraError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - the checkout's venv installs it
    raise MissingExtraError("crypto", "eskit.protection", name=exc.name) from exc

__all__ = ["AESGCM", "InvalidTag"]
