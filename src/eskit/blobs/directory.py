"""Blobs as files in a directory: :class:`DirectoryBlobStore`.

Each blob is one file, named by its digest, in a subdirectory per first two hex
digits (so no directory holds more than 1/256 of them). Files are written with
temp file + fsync + rename + directory fsync (the archive's
:class:`~eskit.archive.LocalDirectoryStorage`), so a crash leaves a blob either
whole or absent, and writing one never takes the SQLite store's write lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from eskit.archive.storage import LocalDirectoryStorage
from eskit.blobs.base import BlobStore
from eskit.blobs.ref import DEFAULT_MAX_BLOB_BYTES

__all__ = ["DirectoryBlobStore"]


class DirectoryBlobStore(BlobStore):
    """Blobs under ``directory`` (created if missing). Back it up with the store."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_blob_bytes = max_blob_bytes

    @property
    def location(self) -> str:
        return str(self.directory)

    def _file(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def _put(self, key: str, data: bytes) -> None:
        if not self._file(key).is_file():
            # Two writers of the same blob both rename a complete file into place:
            # the same bytes, whichever lands last.
            LocalDirectoryStorage(self.directory / key[:2]).put(key, data)

    def _get(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            return None

    def _has(self, key: str) -> bool:
        return self._file(key).is_file()

    def _delete(self, key: str) -> bool:
        try:
            self._file(key).unlink()
        except FileNotFoundError:
            return False
        return True
