"""The redis-py edge shared by the Redis Streams sink and source (connections, timeouts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from eskit.errors import BrokerUnavailableError, BusError, MissingExtraError

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, RedisError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - the redis extra is part of dev
    raise MissingExtraError("redis", "eskit's Redis Streams bus", name=exc.name) from exc

__all__ = [
    "RedisConnectionError", "RedisError", "ResponseError", "aioredis", "bounded", "ignore_lost",
    "new_client", "quietly_close",
]

log = logging.getLogger("eskit.bus.redis")
T = TypeVar("T")
_LOST = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


def new_client(url: str, name: str, timeout: float) -> aioredis.Redis:
    """A client (a pool of connections, each named ``name``) that does not retry by itself."""
    # No retry inside redis-py: a lost connection surfaces at once, and the relay
    # (or the source's loop) decides what to publish or read again.
    return aioredis.Redis.from_url(
        url, client_name=name, socket_connect_timeout=timeout, socket_timeout=None,
        retry=Retry(NoBackoff(), 0), retry_on_error=[], decode_responses=False,
    )


async def bounded(call: Awaitable[T], timeout: float, what: str) -> T:
    """``call`` within ``timeout`` s, a lost connection or a timeout as BrokerUnavailableError."""
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the caller's own
        # cancellation when the call completes at the same moment.
        async with asyncio.timeout(timeout):
            return await call
    except AuthenticationError as exc:  # a ConnectionError to redis-py, but reconnecting won't help
        raise BusError(f"Redis {what} failed: {exc}") from exc
    except _LOST as exc:
        problem = f"no reply within {timeout} s" if isinstance(exc, asyncio.TimeoutError) else exc
        raise BrokerUnavailableError(f"Redis {what} failed: {problem}") from exc


async def quietly_close(client: aioredis.Redis) -> None:
    """Close ``client``; closing a broken connection may fail, and there is nothing to keep."""
    try:
        await client.aclose()
    except Exception:
        log.debug("closing a Redis client failed", exc_info=True)


async def ignore_lost(call: Awaitable[Any]) -> None:
    """Await a best-effort call; a lost connection or a refusal is only logged."""
    try:
        await call
    except (BusError, RedisError):
        log.debug("a best-effort Redis call failed", exc_info=True)
