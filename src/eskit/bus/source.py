"""The consuming side of the event bus: a :class:`Source` delivers a broker's messages.

A source is transport only: it hands over the message bytes and the broker's
delivery count, and carries out the consumer's verdict (ack, retry later, dead-
letter). Decoding the CloudEvent, the inbox that makes a redelivered message
harmless, the handler's transaction and the retry policy live in
:mod:`eskit.bus.consumer`, shared by every broker.

Every process that opens a source with the same ``group`` competes for the same
messages (a RabbitMQ queue, a JetStream durable consumer, a Redis consumer
group): each message goes to one of them, and is redelivered to any of them if
it is not acknowledged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Self

__all__ = ["DeadMessage", "Delivery", "IncomingMessage", "Source"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message as a broker delivered it."""

    body: bytes
    """The message body: a CloudEvent in structured JSON, if an eskit relay published it."""
    delivery_count: int
    """1 on the first delivery, 2 on the first redelivery, ... as the broker counts."""
    broker_id: str
    """The broker's id of this message (stream sequence, entry id, message id), for logs."""


class Delivery(ABC):
    """One delivered message and the three ways to settle it. Settle exactly once."""

    message: IncomingMessage

    @abstractmethod
    async def ack(self) -> None:
        """Done: the broker forgets the message (for this group)."""

    @abstractmethod
    async def retry(self, delay: float) -> None:
        """Not now: deliver the message again, to this or another member, after ~``delay`` s."""

    @abstractmethod
    async def dead_letter(self, reason: str) -> None:
        """Give up: move the message to the group's dead-letter path, keeping ``reason``.

        It is no longer delivered, and stays inspectable and replayable through
        :meth:`Source.dead_letters` and :meth:`Source.replay_dead_letters`.
        """


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A message on a group's dead-letter path."""

    dead_letter_id: str
    """Its id on the dead-letter path: pass it to :meth:`Source.replay_dead_letters`."""
    body: bytes
    reason: str
    dead_at: datetime | None
    """When it was dead-lettered, if the broker records it (UTC)."""


class Source(ABC):
    """A durable, shared subscription of one consumer group on one broker (async)."""

    scheme: ClassVar[str]
    """The URL scheme that selects this source (``amqp``, ``nats``, ``redis``, ``memory``)."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, *, group: str) -> Self:
        """A source reading what a sink with the same ``url`` publishes, as ``group``. No I/O.

        Raises :class:`~eskit.InvalidInputError` for a malformed URL, option or group.
        """

    @property
    @abstractmethod
    def destination(self) -> str:
        """What it reads, for status output and logs (never a password)."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and declare the group's queue / consumer / group and its dead-letter path."""

    @abstractmethod
    def deliveries(self) -> AsyncIterator[Delivery]:
        """Deliveries as they arrive, until :meth:`close`; reconnects on a dropped connection.

        Unsettled deliveries of a lost connection are redelivered by the broker.
        """

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadMessage]:
        """The oldest ``limit`` messages on the group's dead-letter path, without removing them."""

    @abstractmethod
    async def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        """Move dead letters (``ids``, or all) back to be delivered again; returns how many."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering and disconnect; safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
