"""The consuming side: broker messages to a handler, with exactly-once effects.

A :class:`Consumer` takes deliveries from a :class:`~eskit.bus.Source` one at a
time, decodes the CloudEvent, and runs ``handler(event, conn)`` in a worker
thread inside one transaction of its :class:`~eskit.projections.ProjectionTarget`,
together with the inbox record of the event id (:mod:`eskit.bus.inbox`). Then it
acknowledges. What that gives:

* **Exactly-once effects** on the target's database: a message redelivered (the
  relay published it twice, the ack was lost, a member died mid-handler) finds its
  id in the inbox and is acknowledged without running the handler.
* **Retries**: a handler error rolls the transaction back and the message is
  retried after ``backoff`` (exponential from ``backoff[0]`` to ``backoff[1]``
  seconds) while the broker's delivery count is below ``max_attempts``; then it is
  dead-lettered with the error as reason. A body that is not an eskit CloudEvent is
  dead-lettered at once. A lost target connection is retried without limit.

Not promised: effects outside the target's transaction (an e-mail sent by the
handler) happen at least once; order across streams is the broker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from eskit.bus.cloudevents import from_cloudevent
from eskit.bus.inbox import Inbox
from eskit.bus.relay import wake_soon
from eskit.bus.source import Delivery, Source
from eskit.errors import BrokerUnavailableError, BusError, InvalidInputError, InvalidMessageError
from eskit.events import Event
from eskit.projections.checkpoints import ProjectionTarget
from eskit.subscription import reconnect_delay

__all__ = ["Consumer", "Handler"]

_log = logging.getLogger("eskit.bus.consumer")

Handler = Callable[[Event, Any], None]
"""``handler(event, conn)``: apply one event using the target's open transaction ``conn``."""


def _number(label: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise InvalidInputError(f"{label} must be a number >= 0, got {value!r}")
    return float(value)


class Consumer:
    """Applies each message of ``source`` once to ``target`` through ``handler``.

    ``name`` names the inbox (one per consumer purpose; members of one group share
    it). Bad arguments raise :class:`~eskit.InvalidInputError` here, before any I/O.
    """

    def __init__(
        self,
        source: Source,
        target: ProjectionTarget,
        handler: Handler,
        *,
        name: str,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if not isinstance(source, Source):
            raise InvalidInputError(
                f"source must be an eskit.bus.Source, got {type(source).__name__}")
        if not isinstance(target, ProjectionTarget):
            raise InvalidInputError(
                f"target must be a ProjectionTarget, got {type(target).__name__}")
        if not callable(handler):
            raise InvalidInputError("handler must be callable: handler(event, conn)")
        if type(name) is not str or not name or len(name) > 200 or not name.isprintable():
            raise InvalidInputError(f"a consumer name is 1-200 printable characters, got {name!r}")
        if type(max_attempts) is not int or max_attempts < 1:
            raise InvalidInputError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not isinstance(backoff, tuple) or len(backoff) != 2:
            raise InvalidInputError("backoff must be a (first, longest) pair of seconds")
        first, longest = _number("backoff[0]", backoff[0]), _number("backoff[1]", backoff[1])
        if longest < first:
            raise InvalidInputError("backoff's longest delay must not be below its first")
        self.source = source
        self.target = target
        self.handler = handler
        self.name = name
        self.max_attempts = max_attempts
        self.backoff = (first, longest)
        self.inbox = Inbox(target, name)
        self.applied = 0
        """Messages whose handler ran and committed (this run)."""
        self.duplicates = 0
        """Messages acknowledged without running the handler: the inbox knew them."""
        self.retried = 0
        self.dead_lettered = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    def retry_delay(self, delivery_count: int) -> float:
        """Seconds before the next try after the ``delivery_count``-th failed one."""
        first, longest = self.backoff
        return float(min(longest, first * 2 ** min(max(delivery_count, 1) - 1, 30)))

    def stop(self) -> None:
        """Ask :meth:`run` to return after the message in hand; callable from any thread."""
        self._stopped = True
        wake_soon(self._loop, self._stop)

    def run_sync(self, *, idle_timeout: float | None = None) -> None:
        """:meth:`run` on a new event loop, for sync code."""
        asyncio.run(self.run(idle_timeout=idle_timeout))

    async def run(self, *, idle_timeout: float | None = None) -> None:
        """Consume until :meth:`stop`, or until ``idle_timeout`` s pass without a message.

        Opens the source (waiting, with backoff, while the broker is unreachable) and
        closes it on return (unsettled messages go back to the broker). A handler's
        exception never ends the run: it is retried or dead-lettered.
        """
        if idle_timeout is not None:
            idle_timeout = _number("idle_timeout", idle_timeout)
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stopped:
            self._stop.set()
        await asyncio.to_thread(self.inbox.setup)
        if not await self._open_source():
            self._stop = self._loop = None
            self._stopped = False
            return
        deliveries: AsyncIterator[Delivery] = aiter(self.source.deliveries())
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                next_delivery = asyncio.ensure_future(anext(deliveries))
                done, _ = await asyncio.wait(
                    {next_delivery, stop_wait}, timeout=idle_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if next_delivery not in done:
                    next_delivery.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_delivery
                    return
                try:
                    delivery = next_delivery.result()
                except StopAsyncIteration:
                    return
                await self._handle(delivery)
        finally:
            stop_wait.cancel()
            self._stop = self._loop = None
            self._stopped = False  # the consumer may run again
            await self.source.close()

    async def _open_source(self) -> bool:
        """Open the source, waiting out an unreachable broker; ``False`` if stopped first."""
        assert self._stop is not None
        failures = 0
        while not self._stop.is_set():
            try:
                await self.source.open()
                return True
            except BrokerUnavailableError as exc:
                failures += 1
                if failures == 1:
                    _log.warning("eskit: consumer %r cannot reach %s, retrying: %s",
                                 self.name, self.source.destination, exc)
                await self.source.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), reconnect_delay(failures))
        return False

    async def _handle(self, delivery: Delivery) -> None:
        message = delivery.message
        try:
            try:
                event = from_cloudevent(message.body)
            except InvalidMessageError as exc:
                _log.warning("eskit: consumer %r dead-letters undecodable message %s: %s",
                             self.name, message.broker_id, exc)
                self.dead_lettered += 1
                await delivery.dead_letter(f"undecodable: {exc}")
                return
            try:
                applied = await asyncio.to_thread(
                    self.inbox.apply_once, str(event.event_id),
                    lambda conn: self.handler(event, conn),
                )
            except Exception as exc:  # any handler error is retried or parked
                await self._failed(delivery, event, exc)
                return
            if applied:
                self.applied += 1
            else:
                self.duplicates += 1
                _log.debug("eskit: consumer %r: event %s was applied before; acknowledging",
                           self.name, event.event_id)
            await delivery.ack()
        except BusError as exc:
            # The settle did not reach the broker: it redelivers, the inbox absorbs it.
            _log.warning("eskit: consumer %r could not settle message %s: %s",
                         self.name, message.broker_id, exc)

    async def _failed(self, delivery: Delivery, event: Event, exc: Exception) -> None:
        count = delivery.message.delivery_count
        reason = f"{type(exc).__name__}: {exc}"
        if self.target.lost_connection(exc):
            _log.warning("eskit: consumer %r lost its database; retrying event %s: %s",
                         self.name, event.event_id, exc)
            self.retried += 1
            await delivery.retry(self.retry_delay(count))
        elif count < self.max_attempts:
            _log.warning("eskit: consumer %r: handler failed on event %s (attempt %d of %d): %s",
                         self.name, event.event_id, count, self.max_attempts, reason)
            self.retried += 1
            await delivery.retry(self.retry_delay(count))
        else:
            _log.error("eskit: consumer %r dead-letters event %s after %d attempts: %s",
                       self.name, event.event_id, count, reason)
            self.dead_lettered += 1
            await delivery.dead_letter(reason[:2000])
