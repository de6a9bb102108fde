"""Retrying a coroutine command on conflict: :func:`eskit.retry` awaited.

The same :class:`~eskit.Retry` policy and decision (:meth:`~eskit.Retry.after_conflict`);
only the wait differs: ``asyncio.sleep``, so the event loop keeps running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from eskit.errors import ConcurrencyError, InvalidInputError
from eskit.retry import DEFAULT_RETRY, Retry, check_retry

__all__ = ["retry"]

T = TypeVar("T")


async def retry(fn: Callable[[], Awaitable[T]], policy: Retry = DEFAULT_RETRY) -> T:
    """Await ``fn()`` until it returns, retrying it on :class:`~eskit.ConcurrencyError`.

    Same contract as :func:`eskit.retry`: ``fn`` redoes the whole command, other
    errors propagate at once, :class:`~eskit.CommandRetriesExhausted` after
    ``policy.max_attempts`` conflicts. Cancellation during a wait propagates.
    """
    policy = check_retry(policy)
    if not callable(fn):
        raise InvalidInputError(f"retry needs a callable, got {type(fn).__name__}")
    attempt = 1
    while True:
        try:
            return await fn()
        except ConcurrencyError as conflict:
            wait = policy.after_conflict(attempt, conflict)
        # Always yield to the loop, even with no wait: the writer that won must run.
        await asyncio.sleep(wait)
        attempt += 1
