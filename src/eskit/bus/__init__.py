"""The event bus: publish committed events to message brokers, and consume them once.

- :mod:`eskit.bus.sink` and :mod:`eskit.bus.source`: what a broker module implements.
- :mod:`eskit.bus.cloudevents`: the one message format (CloudEvents 1.0, structured JSON).
- :mod:`eskit.bus.relay`: the outbox relay (store → broker, checkpoint after confirm).
- :mod:`eskit.bus.consumer`: the inbox side (broker → handler, exactly-once effects).
- Brokers: :mod:`eskit.bus.rabbitmq`, :mod:`eskit.bus.jetstream`,
  :mod:`eskit.bus.redis_streams`, and :mod:`eskit.bus.memory` for tests.
"""

from __future__ import annotations

from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE, OutgoingMessage, Sink, stream_category
from eskit.bus.source import DeadMessage, Delivery, IncomingMessage, Source

__all__ = [
    "CLOUDEVENTS_CONTENT_TYPE",
    "DeadMessage",
    "Delivery",
    "IncomingMessage",
    "OutgoingMessage",
    "Sink",
    "Source",
    "stream_category",
]
