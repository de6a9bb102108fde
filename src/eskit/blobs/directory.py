"""Blobs as files in a directory: :class:`DirectoryBlobStore`.

Each blob is one file, named by its digest, in a subdirectory per first two hex
digits (so no directory holds more than 1/256 of them). Files are written with
temp file + fsync + rename + directory fsync (the archive's
:class:`~eskit.archive.LocalDirectoryStorage`), so a crash leaves a blob either
whole or absent, and writing one never takes the SQLite store's write lock.

A file's mtime is its last put: a put of bytes already stored touches the file
(once it is :data:`~eskit.blobs.base.TOUCH_AFTER` old). Collection renames a file
aside before it looks at the mtime, so a put racing it either touches the file
first (and the collection puts the file back) or finds no file and writes a new one.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from eskit.archive.storage import LocalDirectoryStorage
from eskit.blobs.base import TOUCH_AFTER, BlobStore, StoredBlob
from eskit.blobs.ref import DEFAULT_MAX_BLOB_BYTES

__all__ = ["DirectoryBlobStore"]

_KEY = re.compile(r"[0-9a-f]{64}")
_SUBDIR = re.compile(r"[0-9a-f]{2}")


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
        path = self._file(key)
        try:
            if time.time() - path.stat().st_mtime > TOUCH_AFTER:
                os.utime(path)  # a put of stored bytes: it is in use again
            return
        except FileNotFoundError:  # not stored, or a collection took it meanwhile
            pass
        # Two writers of the same blob both rename a complete file into place:
        # the same bytes, whichever lands last.
        LocalDirectoryStorage(self.directory / key[:2]).put(key, data)

    def _get(self, key: str) -> bytes | None:
        for _ in range(2):
            try:
                return self._file(key).read_bytes()
            except FileNotFoundError:
                if not self._recover(key):
                    return None
        return None

    def _has(self, key: str) -> bool:
        return self._file(key).is_file() or self._recover(key)

    def _recover(self, key: str) -> bool:
        """Put back a file a collection set aside and did not finish with (it was
        killed between its rename and its decision): whether one was there."""
        sub = self.directory / key[:2]
        leftovers = sorted(sub.glob(f".gc-{key}-*")) if sub.is_dir() else []
        for leftover in leftovers:
            try:
                os.replace(leftover, self._file(key))
            except FileNotFoundError:  # another process put it back first
                continue
        return self._file(key).is_file() if leftovers else False

    def _delete(self, key: str) -> bool:
        try:
            self._file(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def _listing(self) -> Iterator[StoredBlob]:
        for sub in sorted(os.scandir(self.directory), key=lambda entry: entry.name):
            if not (_SUBDIR.fullmatch(sub.name) and sub.is_dir(follow_symlinks=False)):
                continue
            for leftover in Path(sub.path).glob(".gc-*"):
                self._recover(leftover.name[4:68])
            for entry in os.scandir(sub.path):  # temp files (".tmp-...") do not match
                if _KEY.fullmatch(entry.name) and entry.name[:2] == sub.name:
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                    yield StoredBlob(entry.name, stat.st_size, stat.st_mtime)

    def _delete_idle(self, keys: Sequence[str], cutoff: float) -> list[str]:
        deleted = []
        for key in keys:
            path = self._file(key)
            aside = path.with_name(f".gc-{key}-{uuid.uuid4().hex}")
            try:
                os.rename(path, aside)  # from here on a put writes a fresh file
            except FileNotFoundError:
                continue
            try:
                if os.stat(aside).st_mtime >= cutoff:  # put again before the rename
                    os.replace(aside, path)  # the same bytes as any fresh copy
                    continue
                os.unlink(aside)
            except FileNotFoundError:  # a reader missed it and put it back: keep it
                continue
            deleted.append(key)
        return deleted
