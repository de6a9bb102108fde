"""The publishing side of the event bus: a :class:`Sink` is one broker destination.

A relay (:mod:`eskit.bus.relay`) reads the store's global order from its own
checkpoint and hands each batch to a sink; the sink returns only once the broker
has confirmed every message of the batch, and only then does the relay move its
checkpoint. That is the whole outbox guarantee: the store is the outbox, and a
message is confirmed before it is forgotten. Delivery is therefore *at least
once* on the wire: after a crash or a lost connection the unconfirmed tail of a
batch is published again, with the same ``message_id``.

A sink for another broker (Kafka, say) is one more subclass: it implements
:meth:`Sink.open`, :meth:`Sink.publish`, :meth:`Sink.close`, :meth:`Sink.from_url`
and :attr:`Sink.destination`, and registers its URL scheme in
:mod:`eskit.bus.urls`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

from eskit.events import Event

__all__ = ["CLOUDEVENTS_CONTENT_TYPE", "OutgoingMessage", "Sink", "stream_category"]

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
"""The content type of every message eskit publishes (CloudEvents 1.0, structured JSON)."""


def stream_category(stream_id: str) -> str:
    """A stream's category: its id up to the first ``-`` (``"account-42"`` → ``"account"``).

    A stream id without ``-`` is its own category. Sinks route by it (an exchange
    routing key, a subject token, a Redis key); they escape it for their broker.
    """
    head, _, _ = stream_id.partition("-")
    return head


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One recorded event on its way to a broker.

    ``body`` is the CloudEvent in structured JSON (see :mod:`eskit.bus.cloudevents`),
    the same bytes for every broker; ``event`` is the recorded event it was made
    from, for routing (stream, category, type) and broker headers.
    """

    event: Event
    body: bytes

    @property
    def message_id(self) -> str:
        """The broker-level message id: the event id, so broker dedupe can drop repeats."""
        return str(self.event.event_id)


class Sink(ABC):
    """One destination on one broker (async; the broker clients are asyncio libraries).

    Not thread-safe: one relay task uses a sink at a time. ``open`` may be called
    again after ``close`` or after a :class:`~eskit.BrokerUnavailableError`, to
    reconnect.
    """

    scheme: ClassVar[str]
    """The URL scheme that selects this sink (``amqp``, ``nats``, ``redis``, ``memory``)."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Self:
        """A sink for ``url``; options ride in the query string. No I/O.

        Raises :class:`~eskit.InvalidInputError` for a malformed URL or option.
        """

    @property
    @abstractmethod
    def destination(self) -> str:
        """Where messages go, for status output and logs (never a password)."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and declare what the destination needs (exchange, stream, ...).

        Raises :class:`~eskit.BrokerUnavailableError` when the broker cannot be reached.
        """

    @abstractmethod
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish ``messages`` and return once the broker confirmed every one of them.

        Messages of one stream reach the broker in the order given (a sink may
        keep several in flight, but never reorders a stream). On return, every
        message is confirmed; on an exception, any prefix may have been
        published, and the caller publishes the whole batch again after
        reopening. Raises :class:`~eskit.BrokerUnavailableError` (connection
        lost, no confirm within the sink's timeout) or
        :class:`~eskit.PublishRejectedError` (a negative confirm).
        """

    @abstractmethod
    async def close(self) -> None:
        """Disconnect; safe to call twice and after a failure."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
