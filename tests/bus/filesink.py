"""A file-backed sink for CLI tests: each confirmed body is one line of ``file:///PATH``.

Registered by the CLI tests (in the subprocess's prelude) under the ``file`` scheme,
so ``eskit relay run`` can publish across processes without a broker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar, Self
from urllib.parse import urlsplit

from eskit import InvalidInputError
from eskit.bus.sink import OutgoingMessage, Sink

PRELUDE = (
    "from eskit.bus import urls\n"
    "urls.SCHEMES['file'] = ('tests.bus.filesink', 'FileSink', 'FileSink', '', ())\n"
)


class FileSink(Sink):
    scheme: ClassVar[str] = "file"

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: int | None = None

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        if parts.scheme != "file" or not parts.path:
            raise InvalidInputError(f"not a file:// URL: {url!r}")
        return cls(parts.path)

    @property
    def destination(self) -> str:
        return f"file://{self.path}"

    async def open(self) -> None:
        if self._file is None:
            self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        assert self._file is not None
        os.write(self._file, b"".join(m.body + b"\n" for m in messages))
        os.fsync(self._file)  # "confirmed": on disk

    async def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
