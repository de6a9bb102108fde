"""Parked events (dead letters): retry them or give up on them, from a shell or a page.

The runner parks an event whose handler kept failing (``on_failure="park"``, see
:mod:`eskit.projections.runner`); these functions are what an operator does next.
"""

from __future__ import annotations

import logging

from eskit.errors import InvalidInputError
from eskit.events import Event
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.failures import describe
from eskit.projections.projection import Projection
from eskit.projections.sql import Tx
from eskit.stores.base import EventStore

__all__ = ["ParkedEventBlocked", "retry_parked", "skip_parked"]

# The runner's logger: operators follow one logger for a projection's failures and fixes.
_log = logging.getLogger("eskit.projections.runner")


class ParkedEventBlocked(InvalidInputError):
    """A parked event cannot be retried yet: earlier events of its stream are still parked.

    Retrying it first would apply a stream's events out of order. Retry the earlier
    ones first (``blocked_by``, oldest first), or retry all parked events, which goes
    in position order. Nothing was handled.
    """

    def __init__(self, message: str, *, event_id: str, blocked_by: list[str]) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.blocked_by = blocked_by


def retry_parked(
    store: EventStore,
    projection: Projection,
    target: ProjectionTarget,
    event_id: str | None = None,
) -> list[str]:
    """Handle parked events of ``projection`` again (one, or all), oldest first.

    Each event is handled in a transaction of its own, which first claims its
    dead-letter row (locked, and re-read: see
    :meth:`~eskit.projections.ProjectionTarget.claim_dead_letter`) and marks it
    ``"retried"`` on success. So two retries running at once — two shells, two
    processes — handle each parked event **exactly once** on SQLite and PostgreSQL
    targets, and on an in-memory one shared by threads; a letter the other retry
    took is passed over. Returns the ids of the events this call handled.

    **Order.** An event is handled only when no earlier event of its stream is still
    parked: ``event_id`` naming an event parked behind an earlier one (status
    "waiting") raises :class:`ParkedEventBlocked` and handles nothing. The first
    handler failure raises; its event stays parked, and so do later events of its
    stream that wait behind it (the retry goes on with no other event either).

    Not guaranteed: effects outside the target's database, as for any handler.
    """
    name = projection.name
    letters = target.dead_letters(name)
    if event_id is not None:
        letters = [d for d in letters if d.event_id == event_id]
        if not letters:
            raise InvalidInputError(f"no parked event {event_id} for projection {name!r}")
    done: list[str] = []
    for listed in letters:
        with target.transaction() as conn:
            # Lock order: the partition's checkpoint row, then the letter, as the runner
            # does, so a retry and a runner never deadlock.
            state = target.load_state(conn, name, listed.partition)
            letter = target.claim_dead_letter(conn, name, listed.event_id)
            if letter is None:
                _log.info("parked event %s of %r was retried or skipped by someone else",
                          listed.event_id, name)
                continue
            earlier = target.parked_before(conn, letter)
            if earlier:
                raise ParkedEventBlocked(
                    f"parked event {letter.event_id} ({letter.event_type!r} of stream "
                    f"{letter.stream_id!r}, position {letter.position}) waits behind "
                    f"{len(earlier)} earlier parked event{'s' * (len(earlier) != 1)} of its "
                    f"stream, first {earlier[0].event_id}: retry those first, or retry all",
                    event_id=letter.event_id, blocked_by=[d.event_id for d in earlier],
                )
            event = _find_event(store, letter.position, letter.event_id)
            tx = Tx(target.dialect, conn, generation=state.generation, tables=projection.tables)
            try:
                projection.handle(event, tx)
            except Exception as exc:
                _log.warning("retry of parked event %s of %r failed, it stays parked: %s",
                             letter.event_id, name, describe(exc))
                raise
            target.set_dead_letter_status(conn, name, letter.event_id, "retried")
        _log.info("retried parked event %s (%s) of %r", letter.event_id, letter.event_type, name)
        done.append(letter.event_id)
    return done


def skip_parked(target: ProjectionTarget, projection_name: str, event_id: str) -> None:
    """Give up on a parked event for good: it stays listed with status ``"skipped"``.

    Raises :class:`~eskit.errors.InvalidInputError` if the event is not parked (never
    was, or was retried or skipped meanwhile). A rebuild does not apply a skipped
    event either (see :func:`~eskit.projections.rebuild.rebuild`).
    """
    with target.transaction() as conn:
        if target.claim_dead_letter(conn, projection_name, event_id) is None:
            raise InvalidInputError(
                f"no parked event {event_id} for projection {projection_name!r}"
            )
        target.set_dead_letter_status(conn, projection_name, event_id, "skipped")
    _log.info("skipped parked event %s of %r", event_id, projection_name)


def _find_event(store: EventStore, position: int, event_id: str) -> Event:
    # Positions are unique: the first event after position - 1 is the parked one, if
    # it is still there. One that still cannot be decoded raises its DecodingError.
    for event in store.read_all(max(position - 1, 0), limit=1):
        if str(event.event_id) == event_id:
            return event
    raise InvalidInputError(f"parked event {event_id} is no longer at position {position}")
