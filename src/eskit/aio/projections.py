"""The projection runner for asyncio: events read from an async store, batches committed whole.

:class:`AsyncProjectionRunner` runs the same projections into the same targets
as :class:`eskit.projections.ProjectionRunner`, with the same guarantees: each
batch's read-model writes and its checkpoint commit in one transaction of the
target (so each event takes effect exactly once in a SQLite or PostgreSQL read
model), a failing event is retried alone with backoff and then stops the
projection or is parked, ``parked_streams="wait"`` keeps a stream in order,
partitions split the streams, process managers (``transactional = False``) move
their checkpoint with a compare-and-set.

How, so that the two runners cannot drift: every batch is the sync runner's own
code (``ProjectionRunner.run_batch``: which events to handle, park or skip, the
retry and failure decisions, where to checkpoint). Only the read from the store
is different: the async runner reads the events after the checkpoint with
``await store.read_all(...)`` first, then hands them to that code, which opens the
target's transaction, locks the checkpoint and goes on only if it is still where
the events were read from (otherwise another runner moved it, and the batch is
read again). Handlers and targets are synchronous (``sqlite3``, psycopg's sync
connection), so the transaction runs in a worker thread (:func:`asyncio.to_thread`);
the event loop never waits on the target's database.

Not guaranteed: as for the sync runner, effects outside the target's database
are at least once. A runner belongs to the loop it runs in; call :meth:`stop`
from that loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import cast

from eskit.aio.process_manager import AsyncProcessManager
from eskit.aio.store import AsyncEventStore
from eskit.aio.subscription import AsyncWaiter
from eskit.errors import EskitError, StoreUnavailableError
from eskit.events import Event
from eskit.observability import _hooks
from eskit.projections.checkpoints import ProjectionTarget, wait_for_projection
from eskit.projections.failures import OnFailure, ParkedStreams, RetryPolicy
from eskit.projections.leases import ConsumerGroup, LeaseLost
from eskit.projections.pages import Page, Read, next_read
from eskit.projections.projection import Projection
from eskit.projections.rebuild import rebuild as sync_rebuild
from eskit.projections.runner import BatchResult, ProjectionRunner
from eskit.projections.sql import Tx
from eskit.stores.base import EventStore
from eskit.stores.rows import OnUndecodable
from eskit.subscription import reconnect_delay

__all__ = ["AsyncProjectionRunner", "rebuild"]

_log = logging.getLogger("eskit.projections.runner")


class _Stale(Exception):
    """The checkpoint moved after the batch's events were read: read them again."""


class _Core(ProjectionRunner):
    """The sync runner's batch, fed with events the async runner has read."""

    prefetched: tuple[int, Page] | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def _read(self, after: int, limit: int) -> Page:
        if self.prefetched is None or self.prefetched[0] != after:
            raise _Stale
        page = self.prefetched[1].first(limit)
        if (observer := _hooks.active) is not None:  # as the sync _read: the batch's links
            observer.link_events(page.events)
        return page

    def _apply(self, event: Read, tx: Tx | None) -> None:
        projection = self.projection
        if isinstance(projection, AsyncProcessManager) and isinstance(event, Event):
            # Called in the batch's worker thread: the async handler runs on the
            # runner's loop (which is free: it awaits this thread) and we wait for it.
            assert self.loop is not None
            asyncio.run_coroutine_threadsafe(projection.handle_async(event), self.loop).result()
            return
        super()._apply(event, tx)


class AsyncProjectionRunner:
    """Runs one projection (one partition of it) against an async store and a target.

    Takes the arguments of :class:`eskit.projections.ProjectionRunner` (same
    meaning, same checks, raised here before any I/O), with an
    :class:`~eskit.aio.AsyncEventStore`. The projection's handlers are the same
    synchronous functions, called with the same ``tx`` (an
    :class:`~eskit.aio.AsyncProcessManager`'s are awaited). One task at a time
    drives a runner; for parallel work start several runners (partitions), which
    is safe: their batches take turns on the checkpoint. With ``group=`` it is one
    member of a :class:`~eskit.projections.ConsumerGroup`, as the sync runner (the
    group's heartbeats run in a worker thread, like the batches).
    """

    def __init__(
        self,
        store: AsyncEventStore,
        projection: Projection,
        target: ProjectionTarget,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        partition: int = 0,
        partitions: int = 1,
        retry: RetryPolicy | None = None,
        on_failure: OnFailure = "stop",
        parked_streams: ParkedStreams = "continue",
        name: str | None = None,
        group: ConsumerGroup | str | None = None,
    ) -> None:
        self.store = store
        # The core never reads through its store (_read is overridden), nor waits on it.
        self._core = _Core(
            cast(EventStore, store), projection, target, batch_size=batch_size,
            poll_interval=poll_interval, partition=partition, partitions=partitions,
            retry=retry, on_failure=on_failure, parked_streams=parked_streams, name=name,
            group=group,
        )
        self._knowns: dict[int, int | None] = {}
        self._stopped = False
        self._waiter: AsyncWaiter | None = None
        self._known: int | None = None
        """The checkpoint as of the last batch, if this runner knows it."""
        self._ahead: tuple[int, int, asyncio.Future[Page]] | None = None
        """The next page being read ahead: (after, limit, its read)."""
        self._reading_ahead = False

    @property
    def projection(self) -> Projection:
        return self._core.projection

    @property
    def target(self) -> ProjectionTarget:
        return self._core.target

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def partition(self) -> int:
        return self._core.partition

    @property
    def partitions(self) -> int:
        return self._core.partitions

    async def setup(self) -> None:
        """Create the checkpoint tables and the read model (idempotent)."""
        await asyncio.to_thread(self._core.setup)

    async def run_batch(self) -> BatchResult:
        """Handle one batch in one transaction; ``read == 0`` means caught up."""
        core = self._core
        if not core._ready:
            await self.setup()
        while True:
            after = self._known
            if after is None:
                after = await asyncio.to_thread(self._checkpoint)
            # The sync runner's batch size: one event at a time while isolating a failure.
            limit = 1 if core._progress.isolate_until is not None else core.batch_size
            page = await self._ahead_page(after, limit)
            if page is None:
                page = core._shared_read(after, limit)  # in a group: this round's read
            if page is None:
                page = await self._page(after, limit)
                if core.group is not None:  # shared with the round's other partitions
                    wanted = core.read_filter()
                    core._round_read = (after, not page.more, page,
                                        None if wanted is None else wanted.partitions)
            core.prefetched = (after, page)
            core.loop = asyncio.get_running_loop()
            if self._reading_ahead and (ahead := next_read(page, limit)) is not None:
                # The next page is read on this loop while the batch runs in its thread.
                self._ahead = (ahead, limit, asyncio.ensure_future(self._page(ahead, limit)))
            try:
                result = await asyncio.to_thread(core.run_batch)
            except _Stale:
                self._known = None  # another runner moved the checkpoint: read again
                continue
            except BaseException:
                self._known = None
                raise
            finally:
                core.prefetched = None
            # A committed batch leaves its checkpoint at result.position. After a
            # failure, or a compare-and-set (process managers) another runner may
            # have won, ask the target next time.
            failed = result.read == 0 and core._progress.isolate_until is not None
            transactional = getattr(core.projection, "transactional", True)
            self._known = None if failed or not transactional else result.position
            return result

    async def _ahead_page(self, after: int, limit: int) -> Page | None:
        """The page read ahead from ``after`` (see eskit.projections.pages), or ``None``."""
        started, self._ahead = self._ahead, None
        if started is None:
            return None
        if started[:2] == (after, limit):
            return await started[2]  # its read's error is raised here, as a read now would
        await _finish(started[2])
        return None

    async def _drop_ahead(self) -> None:
        started, self._ahead = self._ahead, None
        if started is not None:
            await _finish(started[2])

    async def _page(self, after: int, limit: int) -> Page:
        """The sync runner's read, awaited: filtered in the database when the
        projection names its types or prefixes, or runs in partitions."""
        wanted = self._core.read_filter()
        if wanted is not None:
            return Page.filtered(*await self.store._filtered_page(after, limit, wanted, True))
        events: list[Read] = [
            event async for event in self.store.read_all(
                after, limit=limit, on_undecodable="yield"
            )
        ]
        return Page.of(after, events, limit)

    def _checkpoint(self) -> int:
        core = self._core
        with core.target.transaction() as conn:
            return core.target.load_state(conn, core.name, core.partition).position

    async def run_until_caught_up(
        self, progress: Callable[[BatchResult], None] | None = None
    ) -> int:
        """Handle every event now visible; return the number handled.

        As :meth:`eskit.projections.ProjectionRunner.run_until_caught_up`:
        ``progress(result)`` is called after each batch that read events;
        :class:`~eskit.projections.ProjectionFailed` ends it under ``on_failure="stop"``.
        """
        total = 0
        async with self._read_ahead():
            while not self._stopped:
                result = await self._step()
                total += result.handled
                if progress is not None and result.read:
                    progress(result)
                if result.read == 0 and not self._core._isolating():
                    return total
        return total

    @asynccontextmanager
    async def _read_ahead(self) -> AsyncIterator[None]:
        """Read each next page ahead inside the block where that pays, as the sync runner
        does (the same decisions: eskit.projections.pages), with a task instead of a thread."""
        core = self._core
        if (self._reading_ahead or core.group is not None or _hooks.active is not None
                or not self.store._reads_ahead):
            yield
            return
        self._reading_ahead = True
        try:
            yield
        finally:
            self._reading_ahead = False
            await self._drop_ahead()

    async def _step(self) -> BatchResult:
        """One batch; in a consumer group, one batch of each partition held."""
        core, group = self._core, self._core.group
        if group is None:
            return await self.run_batch()
        total = BatchResult(0, 0, 0)
        if group.heartbeat_due():
            await asyncio.to_thread(group.heartbeat)
        try:
            for p in sorted(group.owned):
                if group.heartbeat_due() and p not in await asyncio.to_thread(group.heartbeat):
                    continue
                self._knowns[core.partition] = self._known
                core._serve(p)
                self._known = self._knowns.get(p)
                try:
                    total.add(await self.run_batch())
                except LeaseLost as lost:
                    core._lost(p, lost)
        finally:
            core._round_read = None  # the next round reads afresh, as the sync runner's
        return total

    async def run(self) -> None:
        """Catch up, then follow new events live until :meth:`stop` is called.

        Woken as an :class:`~eskit.aio.AsyncSubscription` is (LISTEN/NOTIFY,
        appends through the store, SQLite commits of other processes), and at
        least every ``poll_interval`` seconds. An unreachable store or target is
        waited out with growing delays; the next batch starts from the stored
        checkpoint, so nothing is skipped or applied twice. In a consumer group it
        heartbeats between batches and leaves the group when it returns or raises.
        """
        if not self._core._ready:
            await self.setup()
        # Listen before the first read, so nothing committed in between is missed.
        self._waiter = waiter = await self.store._new_waiter()
        failures = 0
        try:
            async with self._read_ahead():
                while not self._stopped:
                    try:
                        result = await self._step()
                    except StoreUnavailableError as exc:
                        await self._drop_ahead()
                        failures += 1
                        if failures == 1:
                            _log.warning("projection %r lost its store or target, "
                                         "retrying: %s", self.name, exc)
                        await waiter.wait(reconnect_delay(failures))
                        continue
                    if failures:
                        _log.info("projection %r reconnected after %d failed batches",
                                  self.name, failures)
                        failures = 0
                    if result.read == 0 and not self._core._isolating():
                        wait = self._core.poll_interval
                        if (group := self._core.group) is not None:
                            wait = min(wait, group.next_heartbeat_in())
                        await waiter.wait(wait)
        finally:
            self._waiter = None
            await waiter.close()
            if (group := self._core.group) is not None:
                try:
                    await asyncio.to_thread(group.leave)
                except EskitError as exc:  # its leases then expire after lease_timeout
                    _log.warning("projection %r could not leave consumer group %r: %s",
                                 self.name, group.name, exc)

    async def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Wait until this projection has read every event up to ``position``.

        As :meth:`eskit.projections.ProjectionRunner.wait_for` (read your writes),
        polled in a worker thread.
        """
        core = self._core
        return await asyncio.to_thread(
            wait_for_projection, core.target, core.name, position, timeout,
            partitions=core.partitions,
        )

    def stop(self) -> None:
        """Make :meth:`run` return after the current batch; call it from the runner's loop.

        Also ends a retry's backoff wait at once.
        """
        self._stopped = True
        self._core._stopped.set()
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()


async def rebuild(
    store: AsyncEventStore,
    projection: Projection,
    target: ProjectionTarget,
    *,
    batch_size: int = 500,
    progress: Callable[[BatchResult], None] | None = None,
    retry: RetryPolicy | None = None,
    on_failure: OnFailure = "stop",
    replay_skipped: bool = False,
) -> int:
    """:func:`eskit.projections.rebuild` from an async store: blue/green, then swap.

    The very same rebuild (same arguments, same guarantees: queries never see a
    half-built read model, skipped events stay skipped, live runners continue
    from the swapped-in checkpoint), run in a worker thread; its reads of the
    store are awaited on this loop. ``progress`` is called from that thread.
    """
    blocking = _BlockingReads(store, asyncio.get_running_loop())
    return await asyncio.to_thread(
        sync_rebuild, cast(EventStore, blocking), projection, target,
        batch_size=batch_size, progress=progress, retry=retry, on_failure=on_failure,
        replay_skipped=replay_skipped,
    )


async def _finish(read: asyncio.Future[Page]) -> None:
    """Let an unused read-ahead end (not cancelled mid-query: its pooled connection
    goes back clean), ignoring its result and its error."""
    with suppress(Exception):
        await read


class _BlockingReads:
    """``read_all`` of an async store, for sync code in a worker thread (internal).

    Each call runs the async read on the store's loop, which is free because the
    coroutine that started the thread awaits it, and returns the events as a list.
    """

    def __init__(self, store: AsyncEventStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop

    def read_all(
        self, from_position: int = 0, limit: int | None = None, *,
        on_undecodable: OnUndecodable = "raise",
    ) -> list[Read]:
        async def collect() -> list[Read]:
            return [event async for event in self._store.read_all(
                from_position, limit, on_undecodable=on_undecodable,
            )]

        return asyncio.run_coroutine_threadsafe(collect(), self._loop).result()
