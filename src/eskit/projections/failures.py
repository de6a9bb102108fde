"""What a projection runner does when handling an event fails (shared with the asyncio runner).

The policy (:class:`RetryPolicy`, ``on_failure``, ``parked_streams``) and the
decisions after a failure: which event of a batch is to blame, when a failure is
over, and whether to retry, park or stop. The runner module has the loop; the
module docstring of :mod:`eskit.projections.runner` says what is guaranteed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Literal

from eskit.errors import EskitError, StoreUnavailableError
from eskit.events import Event
from eskit.projections.checkpoints import ProjectionTarget
from eskit.projections.pages import Read
from eskit.projections.sql import Tx
from eskit.stores.rows import UndecodableEvent
from eskit.upcasting import ends_stored_event

__all__ = [
    "WAITING", "FailurePolicy", "HandlerError", "OnFailure", "ParkedStreams",
    "ProjectionFailed", "RetryPolicy", "describe", "last_whole",
]

_log = logging.getLogger("eskit.projections.runner")

OnFailure = Literal["stop", "park"]
ParkedStreams = Literal["continue", "wait"]
WAITING = "waiting behind an earlier parked event of this stream"


class ProjectionFailed(EskitError):
    """A projection handler kept failing and the projection stopped (``on_failure="stop"``)."""

    def __init__(
        self, message: str, *, projection: str, event: Event | UndecodableEvent
    ) -> None:
        super().__init__(message)
        self.projection = projection
        self.event = event
        """The failing event; an :class:`~eskit.stores.rows.UndecodableEvent` when it
        could not be decoded (the cause is then its :class:`~eskit.errors.DecodingError`)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing event is tried, and how long to wait between tries."""

    max_attempts: int = 3
    backoff: float = 0.1
    """Seconds before the second attempt; doubled before each further one."""
    max_backoff: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


class HandlerError(Exception):
    """A handler (or its flushed writes) failed on ``event`` (internal)."""

    def __init__(self, event: Read, error: BaseException) -> None:
        super().__init__(str(error))
        self.event = event
        self.error = error


@dataclass(slots=True)
class Progress:
    attempts: dict[object, int] = field(default_factory=dict)
    isolate_until: int | None = None
    to_park: dict[object, tuple[str, int]] = field(default_factory=dict)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"




class FailurePolicy:
    """The runner's failure decisions (a mixin of :class:`~eskit.projections.ProjectionRunner`)."""

    name: str
    partition: int
    target: ProjectionTarget
    retry: RetryPolicy
    on_failure: OnFailure
    _progress: Progress
    _stopped: threading.Event

    def _blame(self, tx: Tx, index: int, error: Exception) -> tuple[int, Exception]:
        """Which event of the batch an error inside it is blamed on, and the error.

        A handler's own error is its event's. When sending queued writes failed
        (tx.failure), the statement at fault is one of that flush's, written by the
        last event it carried or an earlier one: blame that event, with the driver's
        error. The runner then goes one event at a time up to it, so that the event
        really at fault fails alone. A lost connection is nobody's fault: raised as
        StoreUnavailableError, so that the batch is retried whole.
        """
        if tx.failure is not None:
            index, error = tx.failure
        if self.target.lost_connection(error):
            # Not the event's fault: the batch rolled back; retry it whole.
            raise StoreUnavailableError(
                f"projection {self.name!r} lost its target's connection: {error}"
            ) from error
        return index, error

    def _recovered(self, last_error: str | None, last: Read) -> bool:
        """Whether a batch that got to ``last`` ends the failure ``last_error`` recorded.

        Yes once the checkpoint is past the event that failed (handled or parked), or
        at once in a runner that did not see the failure (a new process, after a fix):
        the stored error is then history. Not while the runner is still going one event
        at a time towards the failing event.
        """
        progress = self._progress
        if progress.isolate_until is not None and (last.position or 0) < progress.isolate_until:
            return False
        progress.attempts.clear()
        return last_error is not None

    def _after_failure(self, event: Read, error: BaseException, limit: int) -> None:
        progress = self._progress
        progress.isolate_until = event.position or 0
        if limit > 1:
            # Go one event at a time up to the failing one first: the batch's other
            # events were not at fault, and the failure counts from the lone attempt.
            return
        attempt = progress.attempts.get(event.event_id, 0) + 1
        progress.attempts[event.event_id] = attempt
        message = (
            f"projection {self.name!r} failed on event {event.event_type!r} at version "
            f"{event.version} of stream {str(event.aggregate_id)!r} (position "
            f"{event.position}), attempt {attempt} of {self.retry.max_attempts}: "
            f"{describe(error)}"
        )
        self.target.record_error(self.name, self.partition, message)
        if attempt < self.retry.max_attempts:
            _log.warning("%s; retrying in %.3gs", message, self.retry.delay(attempt))
            self._stopped.wait(self.retry.delay(attempt))
            return
        del progress.attempts[event.event_id]
        if self.on_failure == "stop":
            progress.isolate_until = None
            _log.error("%s; the projection stops", message)
            raise ProjectionFailed(message, projection=self.name, event=event) from error
        _log.warning("%s; parking the event", message)
        progress.to_park[event.event_id] = (describe(error), attempt)


def last_whole(events: list[Read], index: int) -> Read | None:
    """The last event before ``events[index]`` that a checkpoint may be taken after.

    The parts of an upcaster split share their stored event's position: a checkpoint
    after an early part would skip the later ones, so it steps back to the end of the
    last whole stored event (``None`` if there is none before ``index``).
    """
    for done in reversed(events[:index]):
        if ends_stored_event(done):
            return done
    return None
