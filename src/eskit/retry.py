"""Retrying a command that lost an optimistic-concurrency race, a bounded number of times.

A command (load, decide, append) that raises :class:`~eskit.ConcurrencyError`
wrote nothing, so running it again on fresh state is safe. :class:`Retry` says
how often and how long to wait in between; :func:`retry` runs a function under
it. Only ``ConcurrencyError`` is retried: any other error is a real failure and
propagates at once. When the attempts run out,
:class:`~eskit.CommandRetriesExhausted` names them and the last conflict.

The decision (wait how long, or give up) is :meth:`Retry.after_conflict`, pure;
this module sleeps with ``time.sleep``, :func:`eskit.aio.retry` with
``asyncio.sleep``, and both command handlers and repositories use the same
decision.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from eskit.errors import CommandRetriesExhausted, ConcurrencyError, InvalidInputError

__all__ = ["Retry", "retry"]

T = TypeVar("T")

MAX_ATTEMPTS_LIMIT = 1000
"""The largest ``max_attempts`` accepted: a retry policy is bounded on purpose."""


def _check_number(name: str, value: object, *, minimum: float, maximum: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    number = float(value)  # type: ignore[arg-type]
    if not minimum <= number <= maximum:
        raise InvalidInputError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Retry:
    """How often a conflicting command runs, and how long to wait between runs.

    ``max_attempts`` counts every run, the first included (``1``: never
    retry). Before attempt ``n + 1`` the wait is
    ``min(max_delay, first_delay * multiplier ** (n - 1))``, of which the
    fraction ``jitter`` is random: with ``jitter=0.5`` a 40 ms wait is between
    20 and 40 ms. Jitter keeps writers that collided from colliding again in
    step. ``first_delay=0`` retries at once, which suits in-process contention.

    Guaranteed: at most ``max_attempts`` runs and no single wait over
    ``max_delay``. Not guaranteed: that a command ever wins under unbounded
    contention; it then ends in :class:`~eskit.CommandRetriesExhausted`.

    Not to be confused with :class:`~eskit.RetryPolicy`, which says how often a
    projection retries an event whose handler failed.
    """

    max_attempts: int = 5
    first_delay: float = 0.005
    max_delay: float = 0.5
    multiplier: float = 2.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if type(attempts) is not int or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
            raise InvalidInputError(
                f"max_attempts must be an int from 1 to {MAX_ATTEMPTS_LIMIT}, got {attempts!r}"
            )
        _check_number("first_delay", self.first_delay, minimum=0.0, maximum=60.0)
        _check_number("max_delay", self.max_delay, minimum=0.0, maximum=300.0)
        _check_number("multiplier", self.multiplier, minimum=1.0, maximum=100.0)
        _check_number("jitter", self.jitter, minimum=0.0, maximum=1.0)

    def delay(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``rand`` gives a number in ``[0, 1)``; tests pass their own.
        """
        if attempt < 1:
            raise InvalidInputError(f"attempt must be >= 1, got {attempt!r}")
        # Capped exponent: a large attempt number must not overflow the float.
        exponent = min(attempt - 1, 64)
        base = min(self.max_delay, self.first_delay * self.multiplier ** exponent)
        return base * (1.0 - self.jitter * rand())

    def after_conflict(
        self, attempt: int, conflict: ConcurrencyError, *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait before the next attempt, once attempt ``attempt`` conflicted.

        Raises :class:`~eskit.CommandRetriesExhausted` (caused by ``conflict``)
        if that was the last attempt allowed. The one decision every retrying
        front end (sync, async, handlers, repositories) takes.
        """
        if attempt >= self.max_attempts:
            raise CommandRetriesExhausted(attempt, conflict) from conflict
        return self.delay(attempt, rand=rand)


DEFAULT_RETRY = Retry()


def check_retry(policy: object) -> Retry:
    """``policy`` if it is a :class:`Retry`, else :class:`~eskit.InvalidInputError` (internal)."""
    if not isinstance(policy, Retry):
        raise InvalidInputError(f"retry must be a Retry policy, got {type(policy).__name__}")
    return policy


def retry(fn: Callable[[], T], policy: Retry = DEFAULT_RETRY) -> T:
    """Call ``fn()`` until it returns, retrying it on :class:`~eskit.ConcurrencyError`.

    ``fn`` must redo the whole command each time (load, decide, append): a
    conflict means the state it decided on is stale. Any other exception
    propagates at once, unretried. Raises :class:`~eskit.CommandRetriesExhausted`
    after ``policy.max_attempts`` conflicts. Sleeps with ``time.sleep`` between
    attempts; use :func:`eskit.aio.retry` in a coroutine.
    """
    policy = check_retry(policy)
    if not callable(fn):
        raise InvalidInputError(f"retry needs a callable, got {type(fn).__name__}")
    attempt = 1
    while True:
        try:
            return fn()
        except ConcurrencyError as conflict:
            wait = policy.after_conflict(attempt, conflict)
        if wait > 0:
            time.sleep(wait)
        attempt += 1
