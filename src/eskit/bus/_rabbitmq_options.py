"""The pure half of the RabbitMQ bus: URL options, names and routing keys. No I/O, no aio-pika.

Everything here is checked before a connection is opened, so a typo in a URL
is an :class:`~eskit.InvalidInputError` at start-up, never a half-declared
topology.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from eskit.errors import InvalidInputError

__all__ = [
    "MAX_DELAY",
    "RabbitOptions",
    "delay_bucket_ms",
    "parse_url",
    "routing_key",
    "routing_word",
]

# AMQP's own rule for exchange and queue names (RabbitMQ accepts more, but these
# survive every client, the CLI and the management UI unquoted).
_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
_MAX_NAME = 255  # an AMQP shortstr
_QUEUE_SUFFIX_ROOM = 32  # ".retry.4294967295" and ".dead" fit in it
_EXPIRY_MARGIN_MS = 600_000  # a retry queue outlives its last message by 10 minutes
_WORD_LIMIT = 117  # two words and a dot stay under 255 bytes (235)
_WORD_KEEP = 100
MAX_DELAY = (2**32 - 1 - 600_000) / 1000
"""The longest retry delay, in seconds (~49 days): RabbitMQ's TTLs are 32-bit counts of ms."""

# Options aiormq reads from the URL itself: handed on untouched.
_CONNECTION_OPTIONS = frozenset(
    {"heartbeat", "cafile", "capath", "cadata", "keyfile", "certfile", "no_verify_ssl"}
)
_OPTIONS = frozenset(
    {
        "exchange", "name", "connect_timeout", "confirm_timeout", "in_flight", "mandatory",
        "bindings", "prefetch", "delivery_limit", "reconnect_timeout", "groups",
    }
) | _CONNECTION_OPTIONS


@dataclass(frozen=True, slots=True)
class RabbitOptions:
    """A parsed ``amqp://`` / ``amqps://`` URL: where to connect and how to behave."""

    connect_url: str
    """The URL handed to aio-pika (credentials and connection options, no eskit options)."""
    safe_url: str
    """The same without the password, for :attr:`destination`."""
    exchange: str
    name: str | None
    connect_timeout: float
    confirm_timeout: float
    in_flight: int
    mandatory: bool
    bindings: tuple[str, ...]
    prefetch: int
    delivery_limit: int
    reconnect_timeout: float
    groups: tuple[str, ...]


def _bad(message: str) -> InvalidInputError:
    return InvalidInputError(f"RabbitMQ URL: {message}")


def _number(options: dict[str, str], key: str, default: float, *, low: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < low:
        raise _bad(f"{key}={raw!r} must be a finite number >= {low}")
    return value


def _integer(options: dict[str, str], key: str, default: int, *, low: int, high: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise _bad(f"{key}={raw!r} must be between {low} and {high}")
    return value


def _flag(options: dict[str, str], key: str) -> bool:
    raw = options.get(key, "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise _bad(f"{key}={raw!r} is not a boolean (true/false)")


def check_name(kind: str, value: str) -> str:
    """``value`` as an exchange/group name, or :class:`InvalidInputError`."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"RabbitMQ {kind} {value!r} must be letters, digits, '_', '-', '.', ':' only"
        )
    if value.startswith("amq."):
        raise InvalidInputError(f"RabbitMQ {kind} {value!r}: names starting 'amq.' are reserved")
    return value


def _binding(key: str) -> str:
    if not key or len(key.encode("utf-8", "surrogatepass")) > _MAX_NAME:
        raise _bad(f"binding key {key!r} must be 1 to 255 bytes")
    if any(ord(c) < 32 for c in key):
        raise _bad(f"binding key {key!r} contains a control character")
    return key


def parse_url(url: str) -> RabbitOptions:
    """Parse and check an ``amqp://`` or ``amqps://`` URL (see :class:`RabbitMQSink`)."""
    if not isinstance(url, str):
        raise InvalidInputError(f"RabbitMQ URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise _bad(f"{url!r} is malformed: {exc}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise _bad(f"scheme must be amqp or amqps, not {parts.scheme!r}")
    if not parts.hostname:
        raise _bad("a host is required, e.g. amqp://guest:guest@127.0.0.1:5672/")
    if parts.fragment:
        raise _bad("a fragment (#...) is not allowed; percent-encode '#' as %23")
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS:
            raise _bad(f"unknown option {key!r} (known: {', '.join(sorted(_OPTIONS))})")
        if key in options:
            raise _bad(f"option {key!r} is given twice")
        options[key] = value
    passed = "&".join(
        f"{quote(k)}={quote(v)}" for k, v in pairs if k in _CONNECTION_OPTIONS or k == "name"
    )
    connect_url = urlunsplit((parts.scheme, parts.netloc, parts.path, passed, ""))
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if port is not None:
        netloc += f":{port}"
    public = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    safe_url = urlunsplit((parts.scheme, netloc, parts.path, public, ""))
    bindings = tuple(_binding(k) for k in options.get("bindings", "#").split(","))
    name = options.get("name")
    if name is not None and not name:
        raise _bad("name= must not be empty")
    exchange = check_name("exchange", options.get("exchange", "eskit"))
    groups_raw = options.get("groups")
    groups = () if groups_raw is None else tuple(
        check_group(exchange, g) for g in groups_raw.split(","))
    return RabbitOptions(
        connect_url=connect_url,
        safe_url=safe_url,
        exchange=exchange,
        name=name,
        connect_timeout=_number(options, "connect_timeout", 10.0, low=0.001),
        confirm_timeout=_number(options, "confirm_timeout", 10.0, low=0.001),
        in_flight=_integer(options, "in_flight", 1000, low=1, high=65535),
        mandatory=_flag(options, "mandatory"),
        bindings=bindings,
        prefetch=_integer(options, "prefetch", 100, low=1, high=65535),
        delivery_limit=_integer(options, "delivery_limit", 20, low=0, high=2**31 - 1),
        reconnect_timeout=_number(options, "reconnect_timeout", 60.0, low=0.0),
        groups=groups,
    )


def check_group(exchange: str, group: str) -> str:
    """``group`` as a consumer group name whose queues' names fit in 255 bytes."""
    check_name("group", group)
    if "." in group:
        # Queue names are "<exchange>.<group>[.dead|.retry.<ms>]": a dot in the
        # group would let two (exchange, group) pairs share a queue.
        raise InvalidInputError(f"RabbitMQ group {group!r} must not contain '.'")
    if len(exchange) + 1 + len(group) + _QUEUE_SUFFIX_ROOM > _MAX_NAME:
        raise InvalidInputError(
            f"RabbitMQ group {group!r}: exchange and group together must stay under "
            f"{_MAX_NAME - _QUEUE_SUFFIX_ROOM - 1} characters"
        )
    return group


def routing_word(name: str) -> str:
    """One word of a routing key: ``name`` percent-encoded so it holds no ``.``, ``*``, ``#``.

    ``%``, ``~``, spaces, ``*``, ``#``, ``.`` and every non-ASCII character are
    percent-encoded (UTF-8), so the word is ASCII and a binding key can name it
    exactly. A word longer than 117 bytes once encoded is cut, deterministically,
    to its first 100 bytes (never inside a ``%XX``) + ``~`` + the first 16 hex
    digits of the SHA-256 of ``name``: ``~`` occurs in no other word.
    """
    word = quote(name, safe="").replace(".", "%2E").replace("~", "%7E")
    if len(word) <= _WORD_LIMIT:
        return word
    cut = _WORD_KEEP
    if "%" in word[cut - 2 : cut]:
        cut = word.rindex("%", 0, cut)
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{word[:cut]}~{digest}"


def routing_key(category: str, event_type: str) -> str:
    """The routing key of an event: ``<category>.<event type>``, each a :func:`routing_word`.

    Bind ``account.*`` for a category, ``*.AccountOpened`` for a type, ``#`` for all.
    """
    return f"{routing_word(category)}.{routing_word(event_type)}"


def delay_bucket_ms(delay: float) -> int:
    """A retry delay rounded to two significant digits of milliseconds (one queue per value).

    Rounding bounds the number of retry queues a backoff with jitter creates to
    about 90 per decade of delays, and changes a delay by at most 5%.
    """
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidInputError(f"retry delay must be a number of seconds, not {delay!r}")
    if not math.isfinite(delay) or delay < 0 or delay > MAX_DELAY:
        raise InvalidInputError(f"retry delay must be between 0 and {MAX_DELAY:.0f} s, not {delay}")
    ms = round(delay * 1000)
    if ms < 100:
        return ms
    digits = len(str(ms)) - 2
    return min(round(ms, -digits), 2**32 - 1 - _EXPIRY_MARGIN_MS)


def retry_queue_expiry_ms(ms: int) -> int:
    """``x-expires`` of the retry queue for delay ``ms``: its last message expires well before."""
    return ms + _EXPIRY_MARGIN_MS
