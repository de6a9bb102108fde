"""The pure part of the JetStream module: URL options and the subject mapping (no I/O).

Kept apart from :mod:`eskit.bus.jetstream` so that it imports without nats-py and
is tested without a server.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from eskit.errors import InvalidInputError

__all__ = [
    "MAX_TOKEN_CHARS",
    "JetStreamOptions",
    "dead_subject",
    "parse_url",
    "replay_subject",
    "subject_for",
    "subject_token",
]

MAX_TOKEN_CHARS = 200
"""An escaped subject token longer than this is cut and ends in ``~`` + a 32-hex-digit hash."""

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,50}(\.[A-Za-z0-9_-]{1,50}){0,3}")
_FILTER_TOKEN = re.compile(r"\*|>|[A-Za-z0-9_%~-]{1,200}")
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # the common case, kept as it is


def subject_token(text: str) -> str:
    """One NATS subject token for ``text`` (a stream category or a stream id).

    ASCII letters, digits, ``-`` and ``_`` are kept; every other character is
    written as ``%XX`` per UTF-8 byte (so ``.``, space, ``*``, ``>``, ``%`` and
    non-ASCII never reach the subject raw); an empty text is ``%`` alone. An
    escaped token over :data:`MAX_TOKEN_CHARS` characters keeps its first 160
    characters and ends in ``~`` and a BLAKE2b-128 hash of the whole text: ``~``
    never occurs in an escaped token, so a cut token cannot equal an uncut one.
    Raises :class:`~eskit.InvalidInputError` for text that is not valid UTF-8
    (a lone surrogate), which a recorded stream id never is.
    """
    if len(text) <= MAX_TOKEN_CHARS and _SAFE_TOKEN.fullmatch(text):
        return text  # fast path: nothing to escape or cut (about 3x faster than below)
    if not text:
        return "%"
    try:
        raw = text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"a subject token must be valid UTF-8: {exc}") from None
    if all(b in _SAFE for b in raw):
        token = text
    else:
        token = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(token) <= MAX_TOKEN_CHARS:
        return token
    head = token[:160]
    cut = head.rfind("%", len(head) - 2)  # never split a %XX escape
    if cut != -1:
        head = head[:cut]
    return f"{head}~{hashlib.blake2b(raw, digest_size=16).hexdigest()}"


def subject_for(prefix: str, category: str, stream_id: str) -> str:
    """``<prefix>.<category token>.<stream id token>``, the subject an event is published on."""
    return f"{prefix}.{subject_token(category)}.{subject_token(stream_id)}"


def dead_subject(prefix: str, group: str) -> str:
    """The subject of ``group``'s dead letters, in the dead-letter stream."""
    return f"{prefix}_dlq.{group}.dead"


def replay_subject(prefix: str, group: str) -> str:
    """The subject replayed dead letters go to: only ``group``'s replay consumer reads it."""
    return f"{prefix}_dlq.{group}.replay"


@dataclass(frozen=True, slots=True)
class JetStreamOptions:
    """What a ``nats://`` / ``tls://`` URL says (see :class:`eskit.bus.jetstream.JetStreamSink`)."""

    server: str  # scheme://[user:pass@]host:port, for nats-py
    display: str  # scheme://host:port, no credentials
    stream: str = "ESKIT"
    prefix: str = "eskit"
    name: str = ""
    connect_timeout: float = 5.0
    timeout: float = 10.0
    in_flight: int = 1000
    dupe_window: float = 120.0
    storage: str = "file"
    replicas: int = 1
    max_age: float = 0.0
    ack_wait: float = 30.0
    max_deliver: int = -1
    batch: int = 16
    filter: str = ">"

    @property
    def dlq_stream(self) -> str:
        """The dead-letter stream: one per event stream, each group on its own subject."""
        return f"{self.stream}_DLQ"

    @property
    def filter_subject(self) -> str:
        """The group consumer's filter on the event stream (``<prefix>.<filter>``)."""
        return f"{self.prefix}.{self.filter}"


def _positive(name: str, value: str, *, integer: bool, allow_zero: bool = False) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InvalidInputError(f"option {name}={value!r} must be {kind}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise InvalidInputError(f"option {name}={value!r} must be > 0")
    return number


def _check_filter(value: str) -> str:
    tokens = value.split(".")
    if any(_FILTER_TOKEN.fullmatch(t) is None for t in tokens) or ">" in tokens[:-1]:
        raise InvalidInputError(
            f"option filter={value!r} must be a subject pattern below the prefix, e.g. "
            "'account.*' or 'account.>' (escaped tokens, '*', a final '>')"
        )
    return value


def parse_url(url: str) -> JetStreamOptions:
    """Parse a JetStream URL; raises :class:`~eskit.InvalidInputError`. No I/O."""
    if type(url) is not str:
        raise InvalidInputError(f"a NATS URL must be a str, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port or 4222
    except ValueError as exc:
        raise InvalidInputError(f"malformed NATS URL: {exc}") from None
    if parts.scheme not in ("nats", "tls"):
        raise InvalidInputError(f"a JetStream URL starts with nats:// or tls://, got {url!r}")
    if not parts.hostname:
        raise InvalidInputError("a NATS URL needs a host, e.g. nats://127.0.0.1:4222")
    if parts.path not in ("", "/") or parts.fragment:
        raise InvalidInputError("a NATS URL has no path or fragment: options go in the query")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    auth = parts.netloc.rpartition("@")[0]
    hostport = f"{host}:{port}"
    values: dict[str, object] = {
        "server": f"{parts.scheme}://{auth + '@' if auth else ''}{hostport}",
        "display": f"{parts.scheme}://{hostport}",
    }
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidInputError(f"malformed NATS URL query: {exc}") from None
    for key, value in pairs:
        if key in values:
            raise InvalidInputError(f"option {key} given twice in the NATS URL")
        values[key] = _option(key, value)
    return JetStreamOptions(**values)  # type: ignore[arg-type]


def _option(key: str, value: str) -> object:
    if key in ("stream", "name"):
        if _NAME.fullmatch(value) is None:
            raise InvalidInputError(
                f"option {key}={value!r} must be 1-100 of A-Z a-z 0-9 _ -"
            )
        return value
    if key == "prefix":
        if _PREFIX.fullmatch(value) is None:
            raise InvalidInputError(
                f"option prefix={value!r} must be 1-4 dot-separated tokens of A-Z a-z 0-9 _ -"
            )
        return value
    if key == "filter":
        return _check_filter(value)
    if key == "storage":
        if value not in ("file", "memory"):
            raise InvalidInputError(f"option storage={value!r} must be file or memory")
        return value
    if key in ("in_flight", "replicas", "batch"):
        number = int(_positive(key, value, integer=True))
        if key == "replicas" and number > 5:
            raise InvalidInputError("option replicas must be 1 to 5")
        if key == "batch" and number > 1000:
            raise InvalidInputError("option batch must be 1 to 1000")
        return number
    if key == "max_deliver":
        return int(_positive(key, value, integer=True))
    if key in ("connect_timeout", "timeout", "dupe_window", "ack_wait"):
        return _positive(key, value, integer=False)
    if key == "max_age":
        return _positive(key, value, integer=False, allow_zero=True)
    raise InvalidInputError(
        f"unknown NATS URL option {key!r}; known: stream, prefix, name, connect_timeout, "
        "timeout, in_flight, dupe_window, storage, replicas, max_age, ack_wait, max_deliver, "
        "batch, filter"
    )


def check_group(group: object) -> str:
    """A consumer group is a JetStream durable name: 1-100 of A-Z a-z 0-9 _ -."""
    if type(group) is not str or _NAME.fullmatch(group) is None:
        raise InvalidInputError(
            f"a JetStream consumer group must be 1-100 of A-Z a-z 0-9 _ -, got {group!r}"
        )
    return group
