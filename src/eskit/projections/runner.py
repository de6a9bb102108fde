"""The projection runner: read events after the checkpoint, handle them, commit both.

Each batch is one transaction on the target:

1. lock and read the checkpoint (a second runner of the same projection waits);
2. read up to ``batch_size`` events after it from the event store;
3. hand the wanted ones to the projection's handlers, through the same transaction;
4. move the checkpoint to the last event *read* (wanted or not) and commit.

A crash anywhere before the commit loses the whole batch, handler writes and
checkpoint together; the next run reads the same events again. So on SQLite and
PostgreSQL targets each event takes effect **exactly once** in the read model.
Effects outside the target's database are **at least once**: use
:func:`~eskit.projections.idempotency_key`.

**Failures.** When a handler raises, the batch is rolled back and the runner goes
on one event at a time until past the failing event, so only that event is retried:
``retry.max_attempts`` attempts with exponential backoff. Then ``on_failure``
decides: ``"stop"`` (the default) records the error and raises
:class:`ProjectionFailed`; ``"park"`` records the event in ``eskit_dead_letters``
and moves on, in the same transaction as the checkpoint. With
``parked_streams="continue"`` (the default) later events of the parked event's
stream are handled as usual — the read model for that stream may be missing one
event until the parked one is retried; with ``"wait"`` they are parked too (status
"waiting behind an earlier parked event") so that a stream's events are never
applied out of order. Retrying parked events (:func:`~eskit.projections.parked.retry_parked`,
in :mod:`eskit.projections.parked`) replays them
in position order.

The decisions (which events a partition takes, the backoff, what to do after a
failure) are pure functions, so an asyncio runner can share them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from eskit.errors import EskitError, InvalidInputError, StoreUnavailableError
from eskit.observability import _hooks
from eskit.projections.checkpoints import ProjectionTarget, wait_for_projection
from eskit.projections.failures import (
    WAITING,
    HandlerError,
    OnFailure,
    ParkedStreams,
    Progress,
    ProjectionFailed,
    RetryPolicy,
    last_whole,
)
from eskit.projections.leases import ConsumerGroup, LeaseLost
from eskit.projections.outside import OutsideBatches
from eskit.projections.pages import BatchResult, Page, Read, ReadAhead
from eskit.projections.projection import Projection
from eskit.projections.sql import Tx, create_views
from eskit.stores.arguments import stream_key
from eskit.stores.base import EventStore
from eskit.stores.filtered import ReadFilter
from eskit.stores.partitions import partition_of
from eskit.stores.rows import UndecodableEvent
from eskit.subscription import EventFilter, reconnect_delay

__all__ = [
    "BatchResult",
    "ProjectionFailed",
    "ProjectionRunner",
    "RetryPolicy",
    "partition_of",
    "wait_for_projection",
]

_log = logging.getLogger("eskit.projections.runner")

class ProjectionRunner(OutsideBatches):
    """Runs one projection (one partition of it) against one store and one target.

    ``name`` defaults to the projection's name; the checkpoint row is
    ``(name, partition)``. With ``partitions=N`` the runner handles only streams
    for which :func:`partition_of` gives ``partition``; run N runners (in N
    processes) for ``partition = 0 .. N-1``.

    With ``group=`` (a :class:`~eskit.projections.leases.ConsumerGroup` on the same
    target, or a group name with ``partitions=N``) the runner is one member of a
    consumer group instead: it handles whichever partitions its leases give it,
    rebalanced as members join and leave, each batch fenced by its lease (see
    :mod:`eskit.projections.leases`).

    Partitioned runners read only their partitions' rows: the stores filter on each
    event's stored ``stream_hash`` in SQL (:mod:`eskit.stores.partitions`; a group
    member asks for every partition it holds and shares the page among them). Rows
    stored before that column existed are read by every partition and sorted out in
    Python.
    """

    def __init__(
        self,
        store: EventStore,
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
        if isinstance(group, str):
            group = ConsumerGroup(target, group, partitions=partitions)
        if group is not None:
            if not isinstance(group, ConsumerGroup) or group.target is not target:
                raise InvalidInputError("group must be a ConsumerGroup on the runner's target")
            if partition != 0 or partitions not in (1, group.partitions):
                raise InvalidInputError("a consumer group assigns the partitions: pass "
                                        "neither partition nor another partitions count")
            partitions = group.partitions
            served = name or projection.name
            if group.serves not in (None, served):
                raise InvalidInputError(f"consumer group {group.name!r} is in use by "
                                        f"projection {group.serves!r}")
            group.serves = served
        if type(batch_size) is not int or batch_size < 1:
            raise InvalidInputError("batch_size must be an int >= 1")
        if type(partitions) is not int or partitions < 1 or not 0 <= partition < partitions:
            raise InvalidInputError("need 0 <= partition < partitions")
        if on_failure not in ("stop", "park"):
            raise InvalidInputError("on_failure must be 'stop' or 'park'")
        if parked_streams not in ("continue", "wait"):
            raise InvalidInputError("parked_streams must be 'continue' or 'wait'")
        self.store = store
        self.projection = projection
        self.target = target
        self.name = name or projection.name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.partition = partition
        self.partitions = partitions
        self.retry = retry or RetryPolicy()
        self.on_failure: OnFailure = on_failure
        self.parked_streams: ParkedStreams = parked_streams
        self.filter: EventFilter = projection.event_filter()
        self._stopped = threading.Event()
        self._progress = Progress()
        self.group = group
        self._progresses: dict[int, Progress] = {partition: self._progress}
        self._round_read: tuple[int, bool, Page, frozenset[int] | None] | None = None
        """In a group: this round's last read (after, reached the end, page, the
        partitions it was read for), shared."""
        self._ahead: ReadAhead | None = None
        """The next page, being read ahead (inside run and run_until_caught_up)."""
        self._ready = False
        self._rate: float | None = None
        self._skip: frozenset[str] = frozenset()
        """Ids of events to pass over unhandled: a rebuild's skipped events."""

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the checkpoint tables and the read model (idempotent)."""
        self.target.setup()
        with self.target.transaction() as conn:
            self.target.lock_setup(conn, self.projection.name)
            state = self.target.load_state(conn, self.name, self.partition)
            tx = self._tx(conn, state.generation)
            self.projection.setup(tx)
            create_views(tx, self.projection.tables, state.generation)
        if self.group is not None:
            self.group.setup()
        self._ready = True

    def _tx(self, conn: object, generation: int) -> Tx:
        return Tx(self.target.dialect, conn, generation=generation,
                  tables=self.projection.tables)

    # -- the loop -----------------------------------------------------------------------

    def wants(self, event: Read) -> bool:
        """Whether this runner dispatches ``event`` (its filter and its partition)."""
        return self.filter.matches(event) and (
            self.partitions == 1
            or partition_of(event.aggregate_id, self.partitions) == self.partition
        ) and (not self._skip or str(event.event_id) not in self._skip)

    def run_batch(self) -> BatchResult:
        """Handle one batch in one transaction; ``read == 0`` means caught up."""
        if not self._ready:
            self.setup()
        progress = self._progress
        limit = 1 if progress.isolate_until is not None else self.batch_size
        try:
            if (observer := _hooks.active) is None:
                result = self._batch(limit)
            else:  # a span linked to the appends of the batch's events (see _read)
                with observer.batch(self.name, self.partition):
                    result = self._batch(limit)
        except HandlerError as failed:
            self._after_failure(failed.event, failed.error, limit)
            return BatchResult(read=0, handled=0, position=failed.event.position or 0)
        if progress.isolate_until is not None and result.position >= progress.isolate_until:
            progress.isolate_until = None
        return result

    def _batch(self, limit: int) -> BatchResult:
        if not getattr(self.projection, "transactional", True):
            return self._batch_outside(limit)
        started = time.perf_counter()
        with self.target.transaction() as conn:
            if self.group is not None:
                self.group.guard(conn)
            state = self.target.load_state(conn, self.name, self.partition)
            page = self._read(state.position, limit)
            events = page.events
            if not events:
                if page.upto > state.position:  # a filtered read passed unwanted rows
                    self._fence(conn)
                    self.target.save_position(
                        conn, self.name, self.partition, page.upto, 0, None, self._rate
                    )
                return BatchResult(page.rows, 0, page.upto)
            tx = self._tx(conn, state.generation)
            with tx._deferring():  # tx.write's statements: pipelined, sent before the checkpoint
                handled, parked = self._handle(conn, tx, events)
            if handled:
                rate = handled / max(time.perf_counter() - started, 1e-6)
                self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
            self._fence(conn)  # last: a takeover meanwhile rolls the whole batch back
            self.target.save_position(
                conn, self.name, self.partition, page.upto, handled, events[-1], self._rate,
            )
            if self._recovered(state.last_error, events[-1]):
                self.target.clear_error(conn, self.name, self.partition)
        if parked:
            _log.warning("projection %r parked %d event%s (see eskit_dead_letters)",
                         self.name, parked, "s" * (parked != 1))
        return BatchResult(len(events), handled, page.upto, parked)

    def _read(self, after: int, limit: int) -> Page:
        page = self._shared_read(after, limit)
        if page is None and self._ahead is not None:
            page = self._ahead.take(after, limit)
        if page is None:
            wanted = self.read_filter()
            page = self._read_store(after, limit)
            if self.group is not None:
                served = None if wanted is None else wanted.partitions
                self._round_read = (after, not page.more, page, served)
        if self._ahead is not None:
            self._ahead.start(page, limit)  # the next page, while this one is handled
        if (observer := _hooks.active) is not None:
            observer.link_events(page.events)
        return page

    def read_filter(self) -> ReadFilter | None:
        """What this runner asks the store for: the projection's types and prefixes,
        and with partitions, the ones it serves (all it holds, in a group), so that the
        database sends only their rows (:mod:`eskit.stores.partitions`)."""
        wanted = self.filter.read_filter
        if self.partitions == 1:
            return wanted
        held = sorted(self.group.owned) if self.group is not None else [self.partition]
        if not held:  # a group member holding nothing yet: read as for this partition
            held = [self.partition]
        return (wanted or ReadFilter(None, None)).in_partitions(self.partitions, held)

    def _read_store(self, after: int, limit: int) -> Page:
        # Undecodable events come as placeholders, in order, so that the failure
        # policy applies to them like to a handler error (and the runner keeps its place).
        wanted = self.read_filter()
        filtered = None if wanted is None else getattr(self.store, "_filtered_page", None)
        if filtered is not None:
            # The projection's types and prefixes, in the database (eskit.stores.filtered):
            # a projection of a few types reads only their rows.
            return Page.filtered(*filtered(after, limit, wanted, True))
        events = list(self.store.read_all(after, limit=limit, on_undecodable="yield"))
        return Page.of(after, events, limit)

    @contextmanager
    def _reading_ahead(self) -> Iterator[None]:
        """Read each next page ahead inside the block, where that pays (see pages.py).

        Not in a consumer group (its partitions share reads instead), and not while
        tracing, whose spans follow the batch in the runner's thread.
        """
        if (self._ahead is not None or self.group is not None or _hooks.active is not None
                or not getattr(self.store, "_reads_ahead", False)):
            yield
            return
        self._ahead = ReadAhead(self._read_store)
        try:
            yield
        finally:
            ahead, self._ahead = self._ahead, None
            ahead.close()

    def _shared_read(self, after: int, limit: int) -> Page | None:
        """In a group: this round's last read, cut to start after ``after``, if it can be.

        Every event up to a page's end is final (the stores' ordering guarantee), so
        the part of a page read from one partition's checkpoint that lies after
        another's is exactly what that one would read; a page that reached the end
        of the log then shows all there was. So a member holding several partitions
        at about the same checkpoint reads the log about once per round, not once
        per partition. ``None``: read afresh.
        """
        if (shared := self._round_read) is None:
            return None
        read_after, complete, page, served = shared
        if not read_after <= after <= page.upto or (
            served is not None and self.partition not in served
        ):
            return None  # (a page read for other partitions holds none of this one's rows)
        rest = [e for e in page.events if (e.position or 0) > after]
        if rest:
            upto = page.upto if complete else rest[-1].position or after
            return Page(rest, upto, len(rest), not complete).first(limit)
        return Page([], page.upto, 0) if complete else None

    def _fence(self, conn: object) -> None:
        if self.group is not None:
            self.group.check(conn, self.partition)

    def _handle(self, conn: object, tx: Tx, events: list[Read]) -> tuple[int, int]:
        """Dispatch a batch's events (or park them); return (handled, parked).

        Every write the handlers queued has been sent and confirmed on return.
        """
        progress = self._progress
        blocked = (
            self.target.parked_streams(conn, self.name, self.partition)
            if self.parked_streams == "wait" else set()
        )
        handled = parked = 0
        for index, event in enumerate(events):
            if not self.wants(event):
                continue
            park = progress.to_park.pop(event.event_id, None) if progress.to_park else None
            if park is not None or blocked:
                stream = stream_key(event.aggregate_id)
                if park is None and stream in blocked:
                    park = (WAITING, 0)
                if park is not None:
                    self._flush(tx, events)  # the park goes to conn, after the writes so far
                    self.target.park(conn, self.name, self.partition, event, *park)
                    if self.parked_streams == "wait":
                        blocked.add(stream)
                    parked += 1
                    continue
            tx._writer = index
            try:
                self._apply(event, tx)
                if tx.failure is not None:  # the handler caught a failed flush's error
                    raise tx.failure.error
            except Exception as exc:
                index, exc = self._blame(tx, index, exc)
                done = last_whole(events, index)
                if self.target.dialect == "memory" and done is not None:
                    # Nothing rolls back in memory: keep what the earlier events of
                    # the batch did, and checkpoint them, so they are not applied twice.
                    # (Earlier parts of the failing event's own split are applied
                    # again on retry: a checkpoint at their shared position would
                    # skip the failing part.)
                    self.target.save_position(
                        conn, self.name, self.partition, done.position or 0, handled,
                        done, self._rate,
                    )
                raise HandlerError(events[index], exc) from exc
            handled += 1
        self._flush(tx, events)
        return handled, parked

    def _flush(self, tx: Tx, events: list[Read]) -> None:
        """Send the writes the handlers queued so far; a failure is a handler failure."""
        try:
            tx.flush()
        except Exception as exc:
            index, exc = self._blame(tx, len(events) - 1, exc)
            raise HandlerError(events[index], exc) from exc

    def _apply(self, event: Read, tx: Tx | None) -> None:
        if isinstance(event, UndecodableEvent):
            raise event.error
        self.projection.handle(event, tx)  # type: ignore[arg-type]

    def run_until_caught_up(
        self, progress: Callable[[BatchResult], None] | None = None
    ) -> int:
        """Handle every event now visible; return the number handled.

        ``progress(batch_result)`` is called after each batch that read events
        (for a progress bar: ``result.read`` events more are done). In a consumer
        group: every partition this member holds (it joins, and claims its share,
        first); it stays a member afterwards (``group.leave()`` releases its leases).
        """
        if not self._ready:
            self.setup()
        total = 0
        with self._reading_ahead():
            while not self._stopped.is_set():
                result = self._step()
                total += result.handled
                if progress is not None and result.read:
                    progress(result)
                if result.read == 0 and not self._isolating():
                    return total
        return total

    def _step(self) -> BatchResult:
        """One batch; in a consumer group, one batch of each partition held."""
        group = self.group
        if group is None:
            return self.run_batch()
        total = BatchResult(0, 0, 0)
        if group.heartbeat_due():
            group.heartbeat()
        try:
            for p in sorted(group.owned):
                if group.heartbeat_due() and p not in group.heartbeat():
                    continue  # given up to a member that joined
                self._serve(p)
                try:
                    total.add(self.run_batch())
                except LeaseLost as lost:
                    self._lost(p, lost)
        finally:
            self._round_read = None  # the next round reads afresh
        return total

    def _serve(self, partition: int) -> None:
        """In a group: the next batches are ``partition``'s (its own failure progress)."""
        self.partition = partition
        self._progress = self._progresses.setdefault(partition, Progress())

    def _lost(self, partition: int, lost: LeaseLost) -> None:
        """In a group: ``partition``'s lease went to another member meanwhile."""
        _log.info("projection %r: %s", self.name, lost)
        assert self.group is not None
        self.group.forget(partition)

    def _isolating(self) -> bool:
        """Whether a partition (held, in a group) is stepping towards a failed event."""
        if self.group is None:
            return self._progress.isolate_until is not None
        return any(self._progresses[p].isolate_until is not None
                   for p in self.group.owned if p in self._progresses)

    def run(self) -> None:
        """Catch up, then follow new events live until :meth:`stop` is called.

        In a consumer group the runner heartbeats between batches and leaves the
        group (releasing its leases at once) when it returns or raises.
        """
        if not self._ready:
            self.setup()
        # Listen before the first read, so nothing committed in between is missed.
        waiter = self.store._new_waiter()
        failures = 0
        try:
            with self._reading_ahead():
                while not self._stopped.is_set():
                    try:
                        result = self._step()
                    except StoreUnavailableError as exc:
                        # The batch committed whole or not at all, with its checkpoint:
                        # the next one starts from the stored checkpoint, exactly.
                        if self._ahead is not None:
                            self._ahead.drop()
                        failures += 1
                        if failures == 1:
                            _log.warning("projection %r lost its store or target, "
                                         "retrying: %s", self.name, exc)
                        self._stopped.wait(reconnect_delay(failures))
                        continue
                    if failures:
                        _log.info("projection %r reconnected after %d failed batches",
                                  self.name, failures)
                        failures = 0
                    if result.read == 0 and not self._isolating():
                        wait = self.poll_interval
                        if self.group is not None:
                            wait = min(wait, self.group.next_heartbeat_in())
                        waiter.wait(wait)
        finally:
            waiter.close()
            if self.group is not None:
                try:
                    self.group.leave()
                except EskitError as exc:  # its leases then expire after lease_timeout
                    _log.warning("projection %r could not leave consumer group %r: %s",
                                 self.name, self.group.name, exc)

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Wait until this projection has read every event up to ``position``.

        For read-your-writes: after ``result = store.append(...)``,
        ``runner.wait_for(result.position)`` returns ``True`` once the read model
        reflects the append, ``False`` if ``timeout`` seconds pass first. It only
        watches the checkpoint (every partition of the projection); some runner,
        here or in another process, must be running. See :func:`wait_for_projection`.
        """
        return wait_for_projection(
            self.target, self.name, position, timeout, partitions=self.partitions
        )

    def stop(self) -> None:
        """Make :meth:`run` return after the current batch; safe from any thread."""
        self._stopped.set()
        # Waking the store's waiters is cheap; a lost wake-up costs one poll_interval.
        self.store._wake_waiters()


