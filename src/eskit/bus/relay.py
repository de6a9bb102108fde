"""The outbox relay: the store's global order, published to one broker destination.

The store is the outbox. A :class:`Relay` reads the events after its own
checkpoint, page by page, publishes each page as one batch through a
:class:`~eskit.bus.Sink`, and moves the checkpoint only after
:meth:`~eskit.bus.Sink.publish` returned, i.e. after the broker confirmed every
message of the batch. What that gives, and what it does not:

* **No event is lost**: a crash (even SIGKILL) or a dropped connection at any
  moment leaves the checkpoint at or before the first unconfirmed message.
* **At least once on the wire**: the unconfirmed tail is published again after a
  restart or a reconnect, with the same message id (the event id), for the
  broker's dedupe or the consumer's inbox to drop.
* **Per-stream order**: batches go out in global order, one at a time, and a sink
  never reorders a stream within one.
* **One publisher per name, under a lease**: a second relay started with the same
  name waits until the first one's lease (``lease_seconds``, renewed every batch
  and while idle) is released or expires; the checkpoint move is fenced by the
  owner's token. A relay stalled past its lease while publishing (a frozen VM, a
  broker that takes longer than the lease to confirm) can still finish that one
  publish after another relay took over: that batch's events are then published
  twice. The stalled relay then finds its lease gone, does not move the checkpoint
  and goes back to waiting for the lease. A relay that was stalled anywhere else
  (between batches, idle) publishes nothing more: half a lease after it last
  extended it, it checks the lease is still its own before the next batch.

Not promised: exactly once on the wire, order across streams once a consumer
retries or competes, and lag bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from eskit.bus.checkpoints import RelayCheckpoints, checkpoints_for
from eskit.bus.cloudevents import _check_source, cloudevent_body
from eskit.bus.relay_report import RelayStatus, _read_page, relay_status, relay_status_async
from eskit.bus.sink import OutgoingMessage, Sink
from eskit.errors import (
    BrokerUnavailableError,
    EskitError,
    InvalidInputError,
    PublishRejectedError,
    StoreBusyError,
    StoreUnavailableError,
)
from eskit.events import Event
from eskit.observability import _hooks
from eskit.subscription import EventFilter, SubscriptionSteps, reconnect_delay

__all__ = ["Relay", "RelayStatus", "relay_status", "relay_status_async"]

_log = logging.getLogger("eskit.bus.relay")
T = TypeVar("T")

_NAME_MAX = 200


def wake_soon(loop: asyncio.AbstractEventLoop | None, event: asyncio.Event | None) -> None:
    """Set ``event`` of ``loop`` from its own thread or any other (a signal handler's)."""
    if loop is None or event is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
            loop.call_soon_threadsafe(event.set)


class _Stopped(Exception):
    """stop() was called while the relay waited for the broker."""


class _LeaseLost(Exception):
    """Another relay took the lease while this one waited for the broker."""


def _check_name(name: object) -> str:
    if type(name) is not str or not name or len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidInputError(
            f"a relay name is 1-{_NAME_MAX} printable characters, got {name!r}")
    return name


class Relay:
    """Publishes a store's events to ``sink``, from the checkpoint named ``name``.

    ``store`` is a sync :class:`~eskit.EventStore` (read in a worker thread) or an
    :class:`~eskit.aio.AsyncEventStore`: memory, SQLite or PostgreSQL; the
    checkpoint lives in the same database (see :mod:`eskit.bus.checkpoints`).
    ``event_types`` and ``stream_prefixes`` filter what is published; events
    filtered out still move the checkpoint. A page of ``batch_size`` events is
    published in batches of at most ``max_batch_bytes`` of bodies (one event
    larger than that goes alone), each confirmed and checkpointed in turn. Each
    destination needs its own name. Bad arguments raise
    :class:`~eskit.InvalidInputError` here, before any I/O.
    """

    def __init__(
        self,
        store: Any,
        sink: Sink,
        *,
        name: str,
        event_types: Iterable[str] | None = None,
        stream_prefixes: Iterable[str] | None = None,
        batch_size: int = 500,
        source: str = "eskit",
        lease_seconds: float = 15.0,
        poll_interval: float = 0.2,
        max_batch_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if not isinstance(sink, Sink):
            raise InvalidInputError(f"sink must be an eskit.bus.Sink, got {type(sink).__name__}")
        if type(batch_size) is not int or not 1 <= batch_size <= 100_000:
            raise InvalidInputError(f"batch_size must be an int in 1..100000, got {batch_size!r}")
        for label, value in (("lease_seconds", lease_seconds), ("poll_interval", poll_interval)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise InvalidInputError(f"{label} must be a number of seconds > 0, got {value!r}")
        if type(max_batch_bytes) is not int or max_batch_bytes < 1:
            raise InvalidInputError(
                f"max_batch_bytes must be an int >= 1, got {max_batch_bytes!r}")
        self.max_batch_bytes = max_batch_bytes
        self.name = _check_name(name)
        self.filter = EventFilter(event_types, stream_prefixes)
        self.source = _check_source(source)
        self.store = store
        self.sink = sink
        self.batch_size = batch_size
        self.lease_seconds = float(lease_seconds)
        self.poll_interval = float(poll_interval)
        self.checkpoints: RelayCheckpoints = checkpoints_for(store)
        self.owner = uuid.uuid4().hex
        self.position = 0
        """The checkpoint: the position of the last event of the last confirmed batch."""
        self.published = 0
        """Messages this run published and saw confirmed (repeats after a reconnect count)."""
        self._stopped = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in flight; callable from any thread."""
        self._stopped = True
        wake_soon(self._loop, self._wake)

    def run_sync(self, *, until_caught_up: bool = False) -> None:
        """:meth:`run` on a new event loop, for sync code (blocks until it returns)."""
        asyncio.run(self.run(until_caught_up=until_caught_up))

    async def run(self, *, until_caught_up: bool = False) -> None:
        """Publish until :meth:`stop` (or, with ``until_caught_up``, until no event is left).

        Waits for the lease first. Reconnects on
        :class:`~eskit.BrokerUnavailableError` and retries reads on
        :class:`~eskit.StoreUnavailableError`, backing off; a
        :class:`~eskit.PublishRejectedError` is recorded as the relay's last error,
        and raised, as is an event it cannot read (a :class:`~eskit.DecodingError`,
        say): the checkpoint stays before it. The sink is closed and the lease
        released on return.
        """
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            while not self._stopped:
                if not await self._acquire():
                    return
                try:
                    if await self._publish_until_lost(until_caught_up):
                        return
                except _Stopped:
                    return  # stopped while the broker was unreachable: nothing was lost
                except _LeaseLost:
                    _log.warning("eskit: relay %r lost its lease while the broker was down",
                                 self.name)
                await self.sink.close()  # lost the lease: reconnect once it is ours again
        except (PublishRejectedError, StoreUnavailableError, StoreBusyError):
            raise  # recorded where it happened, or the store is gone
        except EskitError as exc:
            # An event the relay cannot read or encode: stop where it is, and say why
            # in the status (the checkpoint stays before the event).
            _log.error("eskit: relay %r stopped after position %s: %s",
                       self.name, self.position, exc)
            with contextlib.suppress(EskitError):
                await self._record_error(str(exc))
            raise
        finally:
            self._wake = self._loop = None
            self._stopped = False  # the relay may run again
            await self.sink.close()
            try:
                await self._release()
            finally:
                await self.checkpoints.close()

    # Hooks a relay group (eskit.bus.relay_group) overrides: it holds several leases.

    async def _record_error(self, message: str | None) -> None:
        """Remember (``None``: clear) the last error where :func:`relay_status` shows it."""
        await self.checkpoints.record_error(self.name, self.owner, message)

    async def _keep_lease(self) -> bool:
        """Extend the lease while the broker is down; ``False`` if it is no longer ours."""
        return await self._retrying_store(
            self.checkpoints.renew, self.name, self.owner, self.lease_seconds)

    async def _release(self) -> None:
        """Give the lease up on return."""
        await self.checkpoints.release(self.name, self.owner)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _acquire(self) -> bool:
        """Wait for the lease (``False`` if stopped first); the position is the checkpoint's."""
        waited = False
        while not self._stopped:
            position = await self._retrying_store(
                self.checkpoints.acquire, self.name, self.owner, self.lease_seconds,
                self.sink.destination)
            if position is not None:
                self.position = position
                _log.info("eskit: relay %r publishes to %s from position %s",
                          self.name, self.sink.destination, position)
                return True
            if not waited:
                waited = True
                _log.warning("eskit: relay %r is leased by another relay; waiting for the lease",
                             self.name)
            await self._sleep(min(1.0, self.lease_seconds / 3))
        return False

    async def _retrying_store(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        failures = 0
        while True:
            try:
                return await call(*args)
            except (StoreUnavailableError, StoreBusyError) as exc:
                failures += 1
                if failures == 1:
                    _log.warning("eskit: relay %r lost the store, retrying: %s", self.name, exc)
                if self._stopped:
                    raise
                await self._sleep(reconnect_delay(failures))

    async def _publish_until_lost(self, until_caught_up: bool) -> bool:
        """Publish batches: ``True`` when stopped or caught up, ``False`` if the lease went."""
        renewed = time.monotonic()  # before the sink opens: the lease was taken before it
        await self._open_sink()
        steps = SubscriptionSteps(self.filter, "raise")
        started = time.monotonic()
        page: list[Any] | None = None
        while not self._stopped:
            if page is None:
                page = await self._read(self.position)
            if not page:
                page = None
                if until_caught_up:
                    return True
                if time.monotonic() - renewed > self.lease_seconds / 3:
                    if not await self._retrying_store(
                            self.checkpoints.renew, self.name, self.owner, self.lease_seconds):
                        _log.warning("eskit: relay %r lost its lease", self.name)
                        return False
                    renewed = time.monotonic()
                await self._sleep(self.poll_interval)
                continue
            batches = self._batches(page, steps)
            # Read the next page while this one is published: the read never waits on
            # the broker, and nothing of it is published before this page is confirmed.
            ahead = asyncio.ensure_future(self._read(batches[-1][0]))
            # Retrieved even when dropped, so that a failed read-ahead is not logged.
            ahead.add_done_callback(lambda task: task.cancelled() or task.exception())
            try:
                for position, messages in batches:
                    if messages and time.monotonic() - renewed > self.lease_seconds / 2:
                        # Half a lease since it was last extended (this process was frozen,
                        # or a batch was slow): another relay may hold it by now, so make
                        # sure it is still ours before publishing anything more.
                        checked = time.monotonic()
                        if not await self._retrying_store(
                                self.checkpoints.renew, self.name, self.owner,
                                self.lease_seconds):
                            _log.warning("eskit: relay %r lost its lease", self.name)
                            ahead.cancel()
                            return False
                        renewed = checked
                    if messages:
                        await self._publish(messages)
                    elapsed = time.monotonic() - started
                    self.published += len(messages)
                    rate = self.published / elapsed if elapsed > 0 else None
                    checked = time.monotonic()
                    moved = await self._retrying_store(
                        self.checkpoints.advance, self.name, self.owner, position,
                        len(messages), rate, self.lease_seconds)
                    if not moved:
                        _log.warning("eskit: relay %r lost its lease while publishing; the "
                                     "batch up to position %s may be published again by the "
                                     "new owner", self.name, position)
                        ahead.cancel()
                        return False
                    self.position = position
                    renewed = checked  # the advance extended the lease
            except BaseException:
                ahead.cancel()
                raise
            page = await ahead  # the lease was last extended by the page's last advance
        return True

    async def _read(self, after: int) -> list[Any]:
        page: list[Any] = await self._retrying_store(
            _read_page, self.store, after, self.batch_size)
        return page

    def _batches(
        self, page: list[Any], steps: SubscriptionSteps
    ) -> list[tuple[int, list[OutgoingMessage]]]:
        return batches(page, steps, self.position, self.source, self.max_batch_bytes)

    async def _open_sink(self) -> None:
        failures = 0
        while True:
            try:
                await self.sink.open()
                return
            except BrokerUnavailableError as exc:
                failures += 1
                await self._note_unavailable(exc, failures)

    async def _note_unavailable(self, exc: BaseException, failures: int) -> None:
        if failures == 1:
            _log.warning("eskit: relay %r: broker unavailable, reconnecting: %s", self.name, exc)
            await self._retrying_store(self._record_error, str(exc))
        if self._stopped:
            raise _Stopped from exc
        await self._sleep(reconnect_delay(failures))
        if self._stopped:
            raise _Stopped from exc
        # Keep the lease while the broker is down (a backoff is shorter than a lease);
        # if another relay has taken it meanwhile, this batch is no longer ours.
        if not await self._keep_lease():
            raise _LeaseLost from exc

    async def _publish(self, messages: list[OutgoingMessage]) -> None:
        """Publish the batch until confirmed, reconnecting as often as it takes."""
        failures = 0
        while True:
            try:
                observer = _hooks.active
                if observer is None:
                    await self.sink.publish(messages)
                else:  # one span per batch, linked to its first event's append
                    with observer.publish(self.sink.destination, messages[0].event):
                        await self.sink.publish(messages)
                if failures:
                    _log.info("eskit: relay %r reconnected after %d failures", self.name, failures)
                    await self._retrying_store(self._record_error, None)
                return
            except BrokerUnavailableError as exc:
                failures += 1
                await self.sink.close()
                await self._note_unavailable(exc, failures)
                await self._open_sink()
            except PublishRejectedError as exc:
                _log.error("eskit: relay %r: the broker rejected a message: %s", self.name, exc)
                await self._retrying_store(self._record_error, str(exc))
                raise


def batches(
    page: list[Any], steps: SubscriptionSteps, position: int, source: str, max_bytes: int
) -> list[tuple[int, list[OutgoingMessage]]]:
    """``page`` read after ``position`` as batches of at most ``max_bytes`` of bodies,
    each with the checkpoint once it is confirmed."""
    out: list[tuple[int, list[OutgoingMessage]]] = []
    messages: list[OutgoingMessage] = []
    size = 0
    for event in page:
        # The checkpoint before this event (SubscriptionSteps moves it past a split
        # only at its last part, so a cut inside a split repeats parts, never skips).
        before = position
        position, wanted = steps.take(event, position)
        if wanted is None:
            continue
        assert isinstance(wanted, Event)
        body = cloudevent_body(wanted, source)
        if messages and size + len(body) > max_bytes:
            out.append((before, messages))
            messages, size = [], 0
        messages.append(OutgoingMessage(wanted, body))
        size += len(body)
    out.append((position, messages))
    return out

