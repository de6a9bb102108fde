"""Batches outside a transaction, for idempotent handlers (process managers).

A mixin of :class:`~eskit.projections.ProjectionRunner`: a projection with
``transactional = False`` is handled with ``tx=None`` and its checkpoint moved with
a compare-and-set afterwards, so a crash, or another runner moving the checkpoint
first, means events are handled again, which idempotent handlers absorb.
"""

from __future__ import annotations

import logging

from eskit.projections.failures import FailurePolicy, HandlerError, last_whole
from eskit.projections.pages import BatchResult, Page, Read
from eskit.projections.sql import Tx

__all__ = ["OutsideBatches"]

_log = logging.getLogger("eskit.projections.runner")


class OutsideBatches(FailurePolicy):
    """``_batch_outside`` and its compare-and-set; the runner provides the rest."""

    _rate: float | None

    def _read(self, after: int, limit: int) -> Page:
        raise NotImplementedError

    def wants(self, event: Read) -> bool:
        raise NotImplementedError

    def _apply(self, event: Read, tx: Tx | None) -> None:
        raise NotImplementedError

    def _fence(self, conn: object) -> None:
        raise NotImplementedError

    def _batch_outside(self, limit: int) -> BatchResult:
        """A batch for idempotent handlers (process managers): no transaction around them.

        The handlers run with ``tx=None``; the checkpoint then moves with a
        compare-and-set. After a crash, or when another runner moved the checkpoint
        first, events are handled again, which idempotent handlers absorb.
        """
        progress = self._progress
        with self.target.transaction() as conn:
            state = self.target.load_state(conn, self.name, self.partition)
        page = self._read(state.position, limit)
        events = page.events
        if not events:
            if page.upto > state.position:
                self._move_if_unchanged(state.position, None, 0, [], page.upto)
            return BatchResult(page.rows, 0, page.upto)
        handled = 0
        to_park: list[tuple[Read, tuple[str, int]]] = []
        for index, event in enumerate(events):
            if not self.wants(event):
                continue
            park = progress.to_park.pop(event.event_id, None)
            if park is not None:
                to_park.append((event, park))
                continue
            try:
                self._apply(event, None)
            except Exception as exc:
                if self.target.lost_connection(exc):
                    raise  # the store or target is away: not the event's fault
                done = last_whole(events, index)
                if done is not None:
                    self._move_if_unchanged(state.position, done, handled, [])
                raise HandlerError(event, exc) from exc
            handled += 1
        if not self._move_if_unchanged(state.position, events[-1], handled, to_park,
                                       page.upto):
            return BatchResult(len(events), 0, state.position)
        if self._recovered(state.last_error, events[-1]):
            with self.target.transaction() as conn:
                self.target.clear_error(conn, self.name, self.partition)
        if to_park:
            _log.warning("projection %r parked %d event%s (see eskit_dead_letters)",
                         self.name, len(to_park), "s" * (len(to_park) != 1))
        return BatchResult(len(events), handled, page.upto, len(to_park))

    def _move_if_unchanged(
        self, expected: int, last: Read | None, handled: int,
        to_park: list[tuple[Read, tuple[str, int]]], position: int | None = None,
    ) -> bool:
        with self.target.transaction() as conn:
            state = self.target.load_state(conn, self.name, self.partition)
            if state.position != expected:
                return False  # another runner got there first; our effects were idempotent
            for event, (error, attempts) in to_park:
                self.target.park(conn, self.name, self.partition, event, error, attempts)
            if position is None:
                position = 0 if last is None else last.position or 0
            self._fence(conn)
            self.target.save_position(
                conn, self.name, self.partition, position, handled, last, self._rate,
            )
        return True
