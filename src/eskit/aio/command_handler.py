"""The command handler for asyncio: :class:`eskit.CommandHandler`, awaited.

Same steps and guarantees: read the stream, fold, decide, append expecting the
version read, run the whole command again on :class:`~eskit.ConcurrencyError`
as the :class:`~eskit.Retry` policy allows. The folding, the decision checks and
the retry decision are the sync handler's own pure functions; only the reads,
the append and the wait (``asyncio.sleep``) are awaited here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from eskit.aio.store import AsyncEventStore
from eskit.command_handler import CommandResult, Folding, check_stream_id_of, decided_events
from eskit.decider import Decider
from eskit.errors import ConcurrencyError, InvalidInputError
from eskit.events import StreamId, as_metadata
from eskit.retry import DEFAULT_RETRY, Retry, check_retry

__all__ = ["AsyncCommandHandler"]

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


class AsyncCommandHandler(Generic[C, S, E]):
    """Handles commands of one decider against an :class:`~eskit.aio.AsyncEventStore`.

    Same contract as :class:`eskit.CommandHandler`.
    """

    def __init__(
        self,
        store: AsyncEventStore,
        decider: Decider[C, S, E],
        *,
        stream_id_of: Callable[[C], StreamId],
        retry: Retry = DEFAULT_RETRY,
    ) -> None:
        if not isinstance(store, AsyncEventStore):
            raise InvalidInputError(
                f"store must be an AsyncEventStore, got {type(store).__name__}"
            )
        check_stream_id_of(stream_id_of)
        self.store = store
        self.decider = decider
        self.stream_id_of = stream_id_of
        self.retry = check_retry(retry)

    async def state(self, stream_id: StreamId) -> S:
        """The decider's current state of ``stream_id`` (initial for an empty stream)."""
        return (await self._load(stream_id)).state

    async def handle(
        self, command: C, *, metadata: Mapping[str, Any] | None = None
    ) -> CommandResult[S]:
        """Load, decide and append ``command``'s events, retrying on conflict.

        Same contract as :meth:`eskit.CommandHandler.handle`.
        """
        extra = as_metadata(metadata)
        stream_id = self.stream_id_of(command)
        attempt = 1
        while True:
            try:
                return await self._attempt(command, stream_id, extra, attempt)
            except ConcurrencyError as conflict:
                wait = self.retry.after_conflict(attempt, conflict)
            await asyncio.sleep(wait)  # also at 0: let the writer that won run
            attempt += 1

    async def _attempt(
        self, command: C, stream_id: StreamId, metadata: dict[str, Any], attempt: int
    ) -> CommandResult[S]:
        loaded = await self._load(stream_id)
        events = decided_events(self.decider, command, loaded.state, metadata, self.store.registry)
        if not events:
            return CommandResult(loaded.state, loaded.version, None, attempt)
        appended = await self.store.append(stream_id, events, loaded.version)
        loaded.add_all(appended.events)
        return CommandResult(loaded.state, appended.version, appended, attempt)

    async def _load(self, stream_id: StreamId) -> Folding[S, E]:
        folding: Folding[S, E] = Folding(self.decider, self.store.registry)
        async for event in self.store.iter_stream(stream_id):
            folding.add(event)
        return folding
