"""What an eskit web app allows: its tokens, its request size limit, read-only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eskit.errors import InvalidInputError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "WebSettings"]

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
"""1 MiB: the largest request body the app reads unless told otherwise."""


def _tokens(value: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    found = (value,) if isinstance(value, str) else tuple(value)
    for token in found:
        if not isinstance(token, str) or not token or token != token.strip():
            raise InvalidInputError(f"{what} must be non-empty strings without surrounding "
                                    "blanks")
        if not token.isascii() or not token.isprintable() or " " in token:
            # A bearer token is printable ASCII without blanks; any other could never match.
            raise InvalidInputError(f"{what} must be printable ASCII without blanks")
    return found


@dataclass(frozen=True)
class WebSettings:
    """The access rules of :func:`eskit.web.create_app`.

    * ``read_tokens``: when any are given, every read (streams, events,
      subscriptions) needs ``Authorization: Bearer <token>`` with one of them or a
      write token; without any, reads are open to whoever reaches the server.
    * ``write_tokens``: appends need one of them. Without any, or with
      ``read_only=True``, the API is read-only: every write is refused (403).
    * ``max_request_bytes``: a larger request body is refused (413) while it is
      being read, before it is parsed.
    * ``heartbeat_seconds``: how often an idle event stream sends a comment line,
      so that proxies and clients can tell a quiet stream from a dead one.

    Tokens are compared in constant time. The health check and the OpenAPI spec
    need no token: they show no events. Not guaranteed: tokens travel in clear
    text unless a TLS proxy sits in front of the server.
    """

    read_tokens: tuple[str, ...] = ()
    write_tokens: tuple[str, ...] = ()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    read_only: bool = False
    heartbeat_seconds: float = 15.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_tokens", _tokens(self.read_tokens, "read tokens"))
        object.__setattr__(self, "write_tokens", _tokens(self.write_tokens, "write tokens"))
        if type(self.max_request_bytes) is not int or self.max_request_bytes < 1:
            raise InvalidInputError("max_request_bytes must be an int >= 1")
        if type(self.read_only) is not bool:
            raise InvalidInputError("read_only must be True or False")
        if (not isinstance(self.heartbeat_seconds, int | float)
                or isinstance(self.heartbeat_seconds, bool)
                or not 0 < self.heartbeat_seconds <= 3600):
            raise InvalidInputError("heartbeat_seconds must be a number in (0, 3600]")

    @property
    def writable(self) -> bool:
        """Whether any request can write: a write token is configured and not read-only."""
        return bool(self.write_tokens) and not self.read_only

    @property
    def reads_need_token(self) -> bool:
        return bool(self.read_tokens)

    @property
    def write_token(self) -> str | None:
        """The first write token, ``None`` when the app is read-only: what the HTML
        explorer asks for before it changes anything (retrying a parked event)."""
        return self.write_tokens[0] if self.writable else None
