"""Bus URLs: the scheme picks the broker module, imported only when used.

==================  ==============================  ===========================
scheme              module                          extra
==================  ==============================  ===========================
``amqp``/``amqps``  :mod:`eskit.bus.rabbitmq`       ``eskit[rabbitmq]``
``nats``/``tls``    :mod:`eskit.bus.jetstream`      ``eskit[nats]``
``redis``/``rediss`` :mod:`eskit.bus.redis_streams` ``eskit[redis]``
``memory``          :mod:`eskit.bus.memory`         (none; one process only)
==================  ==============================  ===========================

A broker module for another system (Kafka, say) is one more entry in
:data:`SCHEMES`.
"""

from __future__ import annotations

import importlib
from typing import Any

from eskit._extras import installed
from eskit.bus.sink import Sink
from eskit.bus.source import Source
from eskit.errors import InvalidInputError, MissingExtraError

__all__ = ["SCHEMES", "sink_for_url", "source_for_url"]

SCHEMES: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    # scheme: (module, sink class, source class, extra, client modules the extra installs)
    "amqp": ("eskit.bus.rabbitmq", "RabbitMQSink", "RabbitMQSource", "rabbitmq", ("aio_pika",)),
    "amqps": ("eskit.bus.rabbitmq", "RabbitMQSink", "RabbitMQSource", "rabbitmq", ("aio_pika",)),
    "nats": ("eskit.bus.jetstream", "JetStreamSink", "JetStreamSource", "nats", ("nats",)),
    "tls": ("eskit.bus.jetstream", "JetStreamSink", "JetStreamSource", "nats", ("nats",)),
    "redis": ("eskit.bus.redis_streams", "RedisStreamsSink", "RedisStreamsSource", "redis",
              ("redis",)),
    "rediss": ("eskit.bus.redis_streams", "RedisStreamsSink", "RedisStreamsSource", "redis",
               ("redis",)),
    "memory": ("eskit.bus.memory", "MemorySink", "MemorySource", "", ()),
}
"""URL scheme → where its sink and source live, and the extra that brings the client."""


def _class(url: object, index: int) -> Any:
    if type(url) is not str:
        raise InvalidInputError(f"a bus URL is a str, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    entry = SCHEMES.get(scheme.lower()) if sep else None
    if entry is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        shown = url if len(url) <= 80 else url[:80] + "..."
        raise InvalidInputError(f"unknown bus URL {shown!r}: it must start with one of {known}")
    module_name, sink_name, source_name, extra, clients = entry
    if clients and not installed(*clients):
        missing = next(c for c in clients if not installed(c))
        raise MissingExtraError(extra, f"the {scheme}:// bus", name=missing)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, MissingExtraError) or not extra:
            raise
        raise MissingExtraError(extra, f"the {scheme}:// bus", name=exc.name) from exc
    return getattr(module, (sink_name, source_name)[index])


def sink_for_url(url: str) -> Sink:
    """The sink for ``url`` (no I/O: call ``await sink.open()``, or hand it to a relay).

    Raises :class:`~eskit.InvalidInputError` for an unknown scheme or a malformed
    URL, :class:`~eskit.MissingExtraError` when the broker's client is not installed.
    """
    sink = _class(url, 0).from_url(url)
    assert isinstance(sink, Sink)
    return sink


def source_for_url(url: str, *, group: str) -> Source:
    """The source of consumer group ``group`` for ``url`` (no I/O); errors as for a sink."""
    source = _class(url, 1).from_url(url, group=group)
    assert isinstance(source, Source)
    return source
