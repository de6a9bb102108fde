"""The writes of one projection batch, streamed to PostgreSQL in pipeline mode (internal).

:meth:`eskit.projections.Tx.write` in a runner's batch on PostgreSQL lands here.
Without it every statement of a handler costs a round trip: the client sends it,
waits for the server to run it, then goes on to the next event, so neither side
works while the other does. Here the statements go out in psycopg's pipeline
mode (https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html): every
:data:`CHUNK` writes are sent without waiting for their results, so the server
runs the upserts of one part of the batch while the handlers compute the next,
and :meth:`WriteQueue.flush` sends the rest with one ``Sync`` and waits for it.

Runs of one statement go as one ``executemany`` (psycopg converts the query once
and only dumps each row's parameters); the order of the writes is kept exactly:
statements are never regrouped, since a later one may depend on an earlier one.

Errors: PostgreSQL aborts the transaction at the first failing statement of a
pipeline and skips the rest; psycopg raises that error from whichever call
next reads results, which can be a later send. So a failure is known only to be
one of the writes sent so far: :attr:`WriteQueue.failure` names the last writer
sent (an upper bound of the one at fault), and the runner isolates from there.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, suppress
from typing import Any, NamedTuple

__all__ = ["CHUNK", "WriteFailure", "WriteQueue"]

CHUNK = 64
"""Writes queued before they are sent (not waited for): large enough that psycopg's
``executemany`` amortises its per-call work, small enough that the server starts
early in the batch."""

_Write = tuple[int, str, Any]
"""A queued write: (index of the writing event in its batch, query, driver params)."""


class WriteFailure(NamedTuple):
    """Sending queued writes failed."""

    writer: int
    """Index in the batch of the last event whose writes had been sent: the statement
    at fault was written by it or by an event before it."""
    error: Exception


class WriteQueue:
    """The deferred writes of one batch on one psycopg connection (inside its transaction)."""

    def __init__(self, connection: Any) -> None:
        self._conn = connection
        self._queued: list[_Write] = []
        self._pipeline: AbstractContextManager[Any] | None = None
        self._cursor: Any = None
        self._sent = -1
        self.failure: WriteFailure | None = None

    @property
    def open(self) -> bool:
        """Whether writes are queued or sent and not yet confirmed by :meth:`flush`."""
        return bool(self._queued) or self._pipeline is not None

    def add(self, writer: int, query: str, values: Any) -> None:
        self._queued.append((writer, query, values))
        if len(self._queued) >= CHUNK:
            self._send()

    def flush(self) -> None:
        """Send what is queued, wait for every result and leave pipeline mode.

        Raises the first error of the writes sent (and records :attr:`failure`).
        """
        if self._queued:
            self._send()
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        try:
            pipeline.__exit__(None, None, None)  # the Sync: waits for every result
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            self._cursor = None

    def abandon(self) -> None:
        """Leave pipeline mode, dropping queued writes; never raises (the batch rolls back)."""
        self._queued = []
        pipeline, self._pipeline, self._cursor = self._pipeline, None, None
        if pipeline is not None:
            # The error that made the batch give up is already on its way; one from
            # the writes still in flight would only hide it.
            with suppress(Exception):
                pipeline.__exit__(None, None, None)

    def _send(self) -> None:
        queued, self._queued = self._queued, []
        try:
            if self._pipeline is None:
                pipeline = self._conn.pipeline()
                pipeline.__enter__()
                self._pipeline = pipeline
                self._cursor = self._conn.cursor()
            self._sent = queued[-1][0]
            _send_runs(self._cursor, queued)
        except Exception as exc:
            self._failed(exc)
            raise

    def _failed(self, error: Exception) -> None:
        if self.failure is None:  # the first error is the cause; later ones follow from it
            self.failure = WriteFailure(self._sent, error)
        self.abandon()


def _send_runs(cursor: Any, writes: list[_Write]) -> None:
    """``writes`` in order, each run of one statement with parameters as one executemany."""
    start, count = 0, len(writes)
    while start < count:
        _, query, values = writes[start]
        end = start + 1
        if values is not None:
            while end < count and writes[end][1] == query and writes[end][2] is not None:
                end += 1
        if end - start == 1:
            cursor.execute(query, values)
        else:
            cursor.executemany(query, [w[2] for w in writes[start:end]])
        start = end
