"""Where archive objects live: a small interface, and a local directory.

An archive is a set of named objects (segment files and manifests). Anything
that can put, get, list and test for named bytes can hold one: implement
:class:`ArchiveStorage` for an object store (S3 ``put_object``/``get_object``/
``list_objects_v2``/``head_object``). ``put`` must be atomic: an object is either
absent or complete, never partial.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from eskit.errors import InvalidInputError

__all__ = ["ArchiveStorage", "LocalDirectoryStorage"]


@runtime_checkable
class ArchiveStorage(Protocol):
    """Named immutable objects. Names are ``/``-free ASCII words."""

    @property
    def location(self) -> str:
        """Where the archive is, as named in errors (a path, a URL)."""
        ...

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically and durably (replacing any)."""
        ...

    def get(self, name: str) -> bytes:
        """The bytes stored under ``name``; ``FileNotFoundError`` if none."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """The names starting with ``prefix``, sorted."""
        ...

    def exists(self, name: str) -> bool:
        """Whether an object ``name`` is stored."""
        ...


def _checked(name: str) -> str:
    if (not name or "/" in name or "\\" in name or name.startswith(".")
            or not name.isascii() or not name.isprintable()):
        raise InvalidInputError(f"archive object name {name!r}: use ASCII without / or a "
                                "leading dot")
    return name


class LocalDirectoryStorage:
    """An archive in a local directory: temp file + fsync + rename + directory fsync,
    so a crash leaves each object either whole or absent."""

    def __init__(self, directory: str | os.PathLike[str], *, create: bool = True) -> None:
        self.directory = Path(directory)
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.directory.is_dir():
            raise InvalidInputError(f"no archive directory at {str(self.directory)!r}")

    @property
    def location(self) -> str:
        return str(self.directory)

    def put(self, name: str, data: bytes) -> None:
        target = self.directory / _checked(name)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, name: str) -> bytes:
        return (self.directory / _checked(name)).read_bytes()

    def list(self, prefix: str = "") -> list[str]:
        return sorted(p.name for p in self.directory.iterdir()
                      if p.is_file() and p.name.startswith(prefix)
                      and not p.name.startswith("."))

    def exists(self, name: str) -> bool:
        return (self.directory / _checked(name)).is_file()
