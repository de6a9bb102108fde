"""A file-backed sink for CLI tests: each confirmed body is one line of ``file:///PATH``.

Registered by the CLI tests (in the subprocess's prelude) under the ``file`` scheme,
so ``eskit relay run`` can publish across processes without a broker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import ClassVar, Self
from urllib.parse import parse_qs, urlsplit

from eskit import InvalidInputError
from eskit.bus.sink import OutgoingMessage, Sink

PRELUDE = (
    "from eskit.bus import urls\n"
    "urls.SCHEMES['file'] = ('tests.bus.filesink', 'FileSink', 'FileSink', '', ())\n"
)


class FileSink(Sink):
    scheme: ClassVar[str] = "file"

    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.path = path
        self.delay = delay
        self._file: int | None = None

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        if parts.scheme != "file" or not parts.path:
            raise InvalidInputError(f"not a file:// URL: {url!r}")
        query = parse_qs(parts.query)
        return cls(parts.path, float(query.get("delay", ["0"])[0]))

    @property
    def destination(self) -> str:
        return f"file://{self.path}"

    @staticmethod
    def read(path: str) -> list[bytes]:
        """The bodies in ``path``; a last line without its newline was never confirmed."""
        with open(path, "rb") as file:
            data = file.read()
        lines = data.split(b"\n")
        return lines[:-1]  # the text after the last newline is incomplete (or empty)

    async def open(self) -> None:
        if self._file is None:
            self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        assert self._file is not None
        os.write(self._file, b"".join(m.body + b"\n" for m in messages))
        os.fsync(self._file)  # on disk; "confirmed" once this returns
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow confirm: a kill often lands here

    async def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
