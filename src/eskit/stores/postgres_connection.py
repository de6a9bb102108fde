"""When a PostgreSQL operation may be retried on a fresh connection: one decision, two front ends.

The sync and the asyncio PostgreSQL stores, their LISTEN waiters and
:class:`~eskit.projections.PostgresTarget` all ask the same questions of a
psycopg error, answered here without I/O:

* :func:`connection_lost` — did the connection break (the server terminated the
  backend, restarted, or the network dropped) rather than the statement fail?
  Only then is a retry on another connection meaningful.
* :func:`translate` — the :class:`~eskit.StoreError` the caller sees:
  :class:`~eskit.StoreUnavailableError` when the server could not be reached or
  the connection broke, a plain ``StoreError`` otherwise.

What is safe to retry (see ``docs/postgres.md``, "Dropped connections"): every
read, and an append, because appends are idempotent on event ids — if the lost
attempt committed, the retry meets its own event ids and
:func:`~eskit.stores.arguments.resolve_conflict` returns the stored result with
``duplicate=True``; if it did not, the retry stores the batch. A multi-statement
transaction whose connection broke at or after ``COMMIT`` is never replayed by
eskit: its outcome is unknown, so the error goes to the caller.

Not guaranteed: an outage longer than the pool's wait (``timeout``, 30 s by
default) still ends in ``StoreUnavailableError``; subscriptions keep retrying,
single calls do not.
"""

from __future__ import annotations

import psycopg

from eskit.errors import AppendNotFirstWriteError, StoreError, StoreUnavailableError
from eskit.stores.postgres_schema import APPEND_NOT_FIRST_WRITE

__all__ = ["RECONNECT_ATTEMPTS", "connection_lost", "translate"]

RECONNECT_ATTEMPTS = 3
"""Tries of one operation when its connection breaks (the first and two retries).

After the first loss the pool is checked (``ConnectionPool.check()``): every idle
connection is tested and the broken ones replaced, so after a server restart the
second try already gets a new connection; the third covers a connection that
broke between the check and its use.
"""

# SQLSTATEs that mean "this session is gone": admin_shutdown (pg_terminate_backend,
# fast shutdown), crash_shutdown, cannot_connect_now (the server is starting).
_SESSION_GONE = frozenset({"57P01", "57P02", "57P03"})


def connection_lost(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the connection broke, so nothing more can run on it.

    psycopg reports a dropped socket as an ``OperationalError`` without SQLSTATE
    ("server closed the connection unexpectedly", "the connection is closed"); the
    server says goodbye with SQLSTATE class 08 or 57P0x first when it can.
    A ``PoolTimeout`` (no connection within the pool's wait) is not a loss to retry:
    the pool has already waited.
    """
    from psycopg_pool import PoolTimeout

    if not isinstance(exc, psycopg.OperationalError) or isinstance(exc, PoolTimeout):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _SESSION_GONE


def translate(exc: psycopg.Error, doing: str = "PostgreSQL error") -> StoreError:
    """The eskit error for a psycopg error (driver errors never reach the caller raw)."""
    from psycopg_pool import PoolTimeout

    if connection_lost(exc) or isinstance(exc, PoolTimeout):
        return StoreUnavailableError(f"{doing}: {exc}")
    if exc.sqlstate == APPEND_NOT_FIRST_WRITE:
        diag = exc.diag
        return AppendNotFirstWriteError(
            f"{diag.message_primary}: {diag.message_detail} {diag.message_hint}"
        )
    return StoreError(f"{doing}: {exc}")
