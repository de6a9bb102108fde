"""The pure part of the Redis Streams bus: URL options and key names (no I/O, no redis import)."""

from __future__ import annotations

import math
import os
import re
import socket
import uuid
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

from eskit.errors import InvalidInputError

__all__ = [
    "DEFAULT_KEY",
    "SinkOptions",
    "SourceOptions",
    "category_key",
    "check_text",
    "dead_key",
    "parse_sink_url",
    "parse_source_url",
    "replay_key",
]

DEFAULT_KEY = "eskit:events"
SCHEMES = ("redis", "rediss")
MAX_NAME_BYTES = 1024  # keys, groups, consumer names: generous, but not unbounded
_ENTRY_ID = re.compile(r"\A[0-9]{1,20}-[0-9]{1,20}\Z")


def check_text(value: object, what: str, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``value`` if it is a non-empty str Redis can hold (valid UTF-8, no NUL), else an error."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string, not {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"{what} holds a lone surrogate: not valid UTF-8") from None
    if "\x00" in value:
        raise InvalidInputError(f"{what} must not contain NUL")
    if size > max_bytes:
        raise InvalidInputError(f"{what} is {size} bytes; at most {max_bytes} are allowed")
    return value


def check_entry_id(value: object) -> str:
    """A Redis stream entry id (``<ms>-<seq>``), else :class:`~eskit.InvalidInputError`."""
    if not isinstance(value, str) or not _ENTRY_ID.match(value):
        raise InvalidInputError(f"not a Redis stream entry id (<ms>-<seq>): {value!r}")
    return value


def category_key(key: str, category: str) -> str:
    """The key of one category with ``key_per_category``: ``<key>:<category, %-escaped>``.

    The category is percent-encoded (UTF-8, only ``A-Z a-z 0-9 _ . ~`` kept), so it
    never holds a ``:``: no category key can equal another one's, or a group's
    dead-letter or replay key (``<key>:dead:<group>``, ``<key>:replay:<group>``).
    """
    return f"{key}:{quote(category, safe='')}"


def dead_key(key: str, group: str) -> str:
    """The group's dead-letter stream."""
    return f"{key}:dead:{group}"


def replay_key(key: str, group: str) -> str:
    """The group's replay stream: dead letters sent back go here, read by that group only."""
    return f"{key}:replay:{group}"


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """What a ``redis://`` URL says, for a sink."""

    client_url: str  # the URL without eskit's options, for redis-py
    destination: str  # the URL without password, for logs
    key: str
    key_per_category: bool
    maxlen: int | None
    confirm_timeout: float
    client_name: str
    batch_bytes: int


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """What a ``redis://`` URL says, for a source."""

    client_url: str
    destination: str
    key: str
    keys: tuple[str, ...]  # the stream keys the group reads (not the replay key)
    group: str
    consumer: str
    client_name: str
    block_ms: int
    count: int
    claim_idle_ms: int
    timeout: float
    start: str
    max_deliveries: int  # 0: off


_SINK_OPTIONS = {"key", "key_per_category", "maxlen", "confirm_timeout", "client_name",
                 "batch_bytes"}
# One URL serves both sides ("a source reads what a sink with the same URL publishes"):
# each accepts the other's options, and ignores them.
_SOURCE_OPTIONS = {"categories", "consumer", "block", "count", "claim_idle", "timeout", "start",
                   "max_deliveries"}
_ALL_OPTIONS = _SINK_OPTIONS | _SOURCE_OPTIONS


def _split(url: object, allowed: set[str]) -> tuple[SplitResult, dict[str, str]]:
    if not isinstance(url, str):
        raise InvalidInputError(f"a Redis URL must be a string, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise InvalidInputError(f"malformed Redis URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise InvalidInputError(f"a Redis URL starts with redis:// or rediss://, not {url!r}")
    if not parts.hostname:
        raise InvalidInputError("a Redis URL needs a host, e.g. redis://127.0.0.1:6379/0")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and path.isascii()):
        raise InvalidInputError(f"the Redis URL's path is a database number, not {path!r}")
    options: dict[str, str] = {}
    try:  # strict: an undecodable %-escape must not turn silently into U+FFFD
        pairs = parse_qsl(parts.query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"a Redis URL option is not UTF-8 once unquoted: {exc}") from None
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise InvalidInputError(f"unknown Redis URL option {name!r} (known: {known})")
        if name in options:
            raise InvalidInputError(f"Redis URL option {name!r} is given twice")
        options[name] = value
    return parts, options


def _base(parts: SplitResult) -> tuple[str, str]:
    client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    user = f"{parts.username}@" if parts.username else ""
    db = parts.path.strip("/") or "0"
    return client_url, f"{parts.scheme}://{user}{host}{port}/{db}"


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.get(name, "0").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InvalidInputError(f"Redis URL option {name} is 0 or 1, not {value!r}")


def _number(
    options: dict[str, str], name: str, default: float, *, least: float, most: float = 86_400.0
) -> float:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"Redis URL option {name} is a number, not {raw!r}") from None
    if not math.isfinite(value) or not least <= value <= most:
        raise InvalidInputError(
            f"Redis URL option {name} must be from {least} to {most} seconds, not {raw!r}"
        )
    return value


def _integer(
    options: dict[str, str], name: str, default: int, *, least: int, most: int = 1 << 62
) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise InvalidInputError(f"Redis URL option {name} is a whole number, not {raw!r}")
    if not least <= int(raw) <= most:
        raise InvalidInputError(f"Redis URL option {name} is from {least} to {most}, not {raw}")
    return int(raw)


def _client_name(options: dict[str, str], default: str) -> str:
    name = options.get("client_name", default)
    # Redis refuses names with spaces, newlines or anything outside printable ASCII.
    if not name or len(name) > 128 or not all("!" <= c <= "~" for c in name):
        raise InvalidInputError(
            f"Redis URL option client_name must be 1-128 printable ASCII characters without "
            f"spaces, not {name!r}"
        )
    return name


def _key(options: dict[str, str]) -> str:
    return check_text(options.get("key", DEFAULT_KEY), "Redis URL option key")


def parse_sink_url(url: object) -> SinkOptions:
    """The sink's options from ``url``; :class:`~eskit.InvalidInputError` if malformed."""
    parts, options = _split(url, _ALL_OPTIONS)
    client_url, where = _base(parts)
    key = _key(options)
    per_category = _flag(options, "key_per_category")
    maxlen = _integer(options, "maxlen", 0, least=1) if "maxlen" in options else None
    timeout = _number(options, "confirm_timeout", 10.0, least=0.001)
    batch_bytes = _integer(options, "batch_bytes", 8 << 20, least=1, most=256 << 20)
    destination = f"{where}?key={key}" + ("&key_per_category=1" if per_category else "")
    return SinkOptions(
        client_url, destination, key, per_category, maxlen, timeout,
        _client_name(options, "eskit-sink"), batch_bytes,
    )


def parse_source_url(url: object, group: object) -> SourceOptions:
    """The source's options from ``url`` and ``group``; :class:`~eskit.InvalidInputError` if bad."""
    parts, options = _split(url, _ALL_OPTIONS)
    group = check_text(group, "a consumer group")
    client_url, where = _base(parts)
    key = _key(options)
    if _flag(options, "key_per_category"):
        raw = options.get("categories", "")
        categories = [c for c in raw.split(",") if c]
        if not categories:
            raise InvalidInputError(
                "with key_per_category=1 a Redis source reads the categories it is told: "
                "add categories=account,customer (comma-separated)"
            )
        for category in categories:
            check_text(category, "a category", max_bytes=1 << 16)
        keys = tuple(dict.fromkeys(category_key(key, c) for c in categories))
        reads = f"&key_per_category=1&categories={','.join(categories)}"
    else:
        if "categories" in options:
            raise InvalidInputError("Redis URL option categories needs key_per_category=1")
        keys, reads = (key,), ""
    default_consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    consumer = check_text(options.get("consumer", default_consumer), "Redis URL option consumer")
    start = options.get("start", "0")
    if start not in ("0", "$"):
        raise InvalidInputError(f"Redis URL option start is 0 (all) or $ (new only), not {start!r}")
    block_ms = round(_number(options, "block", 1.0, least=0.001) * 1000)
    claim_idle_ms = round(_number(options, "claim_idle", 30.0, least=0.01) * 1000)
    timeout = _number(options, "timeout", 10.0, least=0.001)
    count = _integer(options, "count", 100, least=1, most=10_000)  # a read is held in memory
    max_deliveries = _integer(options, "max_deliveries", 0, least=0, most=1 << 31)
    return SourceOptions(
        client_url, f"{where}?key={key}{reads} group={group}", key, keys, group, consumer,
        _client_name(options, "eskit-source"), block_ms, count, claim_idle_ms, timeout, start,
        max_deliveries,
    )
