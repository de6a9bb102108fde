"""The event bus: publish committed events to message brokers, and consume them once.

- :mod:`eskit.bus.sink` and :mod:`eskit.bus.source`: what a broker module implements.
- :mod:`eskit.bus.cloudevents`: the one message format (CloudEvents 1.0, structured JSON).
- :mod:`eskit.bus.relay`: the outbox relay (store → broker, checkpoint after confirm);
  :mod:`eskit.bus.relay_group`: several relays sharing one destination's partitions.
- :mod:`eskit.bus.consumer`: the inbox side (broker → handler, exactly-once effects).
- Brokers: :mod:`eskit.bus.rabbitmq`, :mod:`eskit.bus.jetstream`,
  :mod:`eskit.bus.redis_streams`, and :mod:`eskit.bus.memory` for tests, chosen by
  URL scheme in :mod:`eskit.bus.urls` (:func:`sink_for_url`, :func:`source_for_url`).
- :mod:`eskit.testing.bus_contract`: the suites every broker module passes.

The relay, the consumer and the format need the CloudEvents SDK, which every
broker extra installs (``eskit[rabbitmq]``, ``eskit[nats]``, ``eskit[redis]``);
importing this package needs none of them. See docs/event-bus.md.
"""

from __future__ import annotations

from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE, OutgoingMessage, Sink, stream_category
from eskit.bus.source import DeadMessage, Delivery, IncomingMessage, Source
from eskit.bus.urls import sink_for_url, source_for_url

__all__ = [
    "CLOUDEVENTS_CONTENT_TYPE",
    "DeadMessage",
    "Delivery",
    "IncomingMessage",
    "OutgoingMessage",
    "Sink",
    "Source",
    "sink_for_url",
    "source_for_url",
    "stream_category",
]
