"""The guarantees of command handlers and ``Repository.execute``, as reusable pytest suites.

A backend's test module subclasses :class:`CommandHandlerContract` (sync) or
:class:`AsyncCommandHandlerContract` and says how to make a fresh, empty store,
as for :class:`~eskit.testing.EventStoreContract`::

    class TestMyStoreCommands(CommandHandlerContract):
        def create_store(self, tmp_path):
            return MyStore(tmp_path / "events.db")

Each case states the guarantee it checks: a command decides on the stream as
read, its events are appended at that version or not at all, a conflict reruns
it on fresh state a bounded number of times, and no racing command is lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    Aggregate,
    CommandHandler,
    CommandRetriesExhausted,
    EventStore,
    NewEvent,
    Repository,
    Retry,
    decider,
    domain_event,
)
from eskit.aio.command_handler import AsyncCommandHandler
from eskit.aio.repository import AsyncRepository
from eskit.aio.store import AsyncEventStore
from eskit.command_handler import Folding
from eskit.decider import FunctionDecider

__all__ = ["AsyncCommandHandlerContract", "CommandHandlerContract"]

FAST = Retry(max_attempts=50, first_delay=0.0005, max_delay=0.01)
LIMIT = 100


@domain_event("eskit.testing.command.Deposited")
@dataclass(frozen=True)
class _Deposited:
    amount: int


@dataclass(frozen=True)
class _Deposit:
    account: str
    amount: int


class _OverLimit(Exception):
    pass


def _decide(command: _Deposit, balance: int) -> list[object]:
    if balance + command.amount > LIMIT:
        raise _OverLimit(f"{balance} + {command.amount} is over {LIMIT}")
    return [_Deposited(command.amount)] if command.amount else []


def _evolve(balance: int, event: object) -> int:
    return balance + event.amount if isinstance(event, _Deposited) else balance


_ACCOUNT = decider(_decide, _evolve, 0)


def _stream(command: _Deposit) -> str:
    return command.account


def _foreign() -> NewEvent:
    return NewEvent("eskit.testing.command.Meddled")


class _Counter(Aggregate):
    def __init__(self, counter_id: Any) -> None:
        super().__init__(counter_id)
        self.value = 0

    def increment(self, by: int = 1) -> None:
        self.raise_event("eskit_testing_Incremented", {"by": by})

    def handle_eskit_testing_Incremented(self, data: dict[str, Any]) -> None:
        self.value += data["by"]


class CommandHandlerContract:
    """The guarantees of :class:`eskit.CommandHandler` and :meth:`eskit.Repository.execute`.

    Subclass and implement ``create_store``.
    """

    def create_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError("a contract test class must implement create_store")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EventStore]:
        store = self.create_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def _meddling(self, store: EventStore, times: int | None) -> tuple[Any, list[int]]:
        """The account decider, but another writer appends to the stream in each decide."""
        calls: list[int] = []

        def decide(command: _Deposit, balance: int) -> list[object]:
            calls.append(balance)
            if times is None or len(calls) <= times:
                store.append(command.account, [_foreign()])
            return _decide(command, balance)

        return decider(decide, _evolve, 0), calls

    def test_a_command_appends_its_decision_at_the_version_it_read(
        self, store: EventStore
    ) -> None:
        handler = CommandHandler(store, _ACCOUNT, stream_id_of=_stream)
        first = handler.handle(_Deposit("acc-1", 10))
        second = handler.handle(_Deposit("acc-1", 5), metadata={"user": "ann"})
        assert (first.state, first.version, first.attempts) == (10, 1, 1)
        assert (second.state, second.version) == (15, 2)
        stored = store.read_stream("acc-1")
        assert [e.to_domain() for e in stored] == [_Deposited(10), _Deposited(5)]
        assert stored[1].metadata == {"user": "ann"}
        assert [e.event_id for e in second.events] == [stored[1].event_id]
        assert handler.state("acc-1") == 15
        assert handler.state("acc-unknown") == 0

    def test_an_empty_decision_appends_nothing(self, store: EventStore) -> None:
        handler = CommandHandler(store, _ACCOUNT, stream_id_of=_stream)
        handler.handle(_Deposit("acc-1", 10))
        head = store.head_position()
        nothing = handler.handle(_Deposit("acc-1", 0))
        assert nothing.appended is None
        assert (nothing.state, nothing.version, nothing.events) == (10, 1, ())
        assert store.head_position() == head

    def test_a_refused_command_is_not_retried_and_writes_nothing(self, store: EventStore) -> None:
        calls: list[int] = []

        def decide(command: _Deposit, balance: int) -> list[object]:
            calls.append(balance)
            return _decide(command, balance)

        handler = CommandHandler(store, decider(decide, _evolve, 0), stream_id_of=_stream,
                                 retry=FAST)
        with pytest.raises(_OverLimit):
            handler.handle(_Deposit("acc-1", LIMIT + 1))
        assert calls == [0]
        assert store.read_stream("acc-1") == []

    def test_a_conflict_reruns_the_command_on_the_fresh_stream(self, store: EventStore) -> None:
        meddling, calls = self._meddling(store, times=2)
        handled = CommandHandler(store, meddling, stream_id_of=_stream, retry=FAST).handle(
            _Deposit("acc-1", 7)
        )
        assert handled.attempts == 3
        assert len(calls) == 3
        types = [e.event_type for e in store.read_stream("acc-1")]
        assert types == ["eskit.testing.command.Meddled"] * 2 + ["eskit.testing.command.Deposited"]
        assert (handled.state, handled.version) == (7, 3)

    def test_endless_conflicts_end_in_command_retries_exhausted_writing_none_of_its_events(
        self, store: EventStore
    ) -> None:
        meddling, calls = self._meddling(store, times=None)
        handler = CommandHandler(store, meddling, stream_id_of=_stream,
                                 retry=Retry(max_attempts=3, first_delay=0))
        with pytest.raises(CommandRetriesExhausted) as raised:
            handler.handle(_Deposit("acc-1", 7))
        assert raised.value.attempts == 3
        assert len(calls) == 3
        assert raised.value.last_conflict.stream_id == "acc-1"
        types = {e.event_type for e in store.read_stream("acc-1")}
        assert types == {"eskit.testing.command.Meddled"}

    def test_threads_racing_on_one_stream_each_apply_exactly_once(
        self, store: EventStore
    ) -> None:
        threads = 6
        # Every thread's first decision waits for all the others, so they all decide on
        # the same version: all but one must conflict and run again.
        barrier = threading.Barrier(threads, timeout=30)
        local = threading.local()

        def decide(command: _Deposit, balance: int) -> list[object]:
            if not getattr(local, "waited", False):
                local.waited = True
                barrier.wait()
            return _decide(command, balance)

        handler = CommandHandler(store, decider(decide, _evolve, 0), stream_id_of=_stream,
                                 retry=FAST)
        attempts: list[int] = []
        errors: list[BaseException] = []

        def run(amount: int) -> None:
            try:
                attempts.append(handler.handle(_Deposit("shared", amount)).attempts)
            except BaseException as exc:  # reported below, never lost in the thread
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(n,)) for n in range(1, threads + 1)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert errors == []
        events = store.read_stream("shared")
        assert sorted(e.to_domain().amount for e in events) == list(range(1, threads + 1))
        assert [e.version for e in events] == list(range(1, threads + 1))
        assert sum(attempts) >= 2 * threads - 1  # the race really happened

    def test_repository_execute_reruns_an_aggregate_command_after_a_conflict(
        self, store: EventStore
    ) -> None:
        repo, other = Repository(store), Repository(store)
        counter = _Counter("c")
        counter.increment()
        repo.save(counter)
        seen: list[int] = []

        def command(c: _Counter) -> None:
            seen.append(c.version)
            if len(seen) <= 2:  # another writer gets in between this load and its save
                other.execute("c", _Counter, lambda o: o.increment(100))
            c.increment()

        saved = repo.execute("c", _Counter, command, retry=FAST, metadata={"user": "ann"})
        assert seen == [1, 2, 3]
        assert (saved.value, saved.version) == (202, 4)
        assert store.read_stream("c")[-1].metadata == {"user": "ann"}

    def test_repository_execute_gives_up_after_the_policy_allows(self, store: EventStore) -> None:
        repo, other = Repository(store), Repository(store)
        counter = _Counter("c")
        counter.increment()
        repo.save(counter)

        def command(c: _Counter) -> None:
            other.execute("c", _Counter, lambda o: o.increment(100))
            c.increment(7)

        with pytest.raises(CommandRetriesExhausted) as raised:
            repo.execute("c", _Counter, command, retry=Retry(max_attempts=2, first_delay=0))
        assert raised.value.attempts == 2
        assert [e.event_data["by"] for e in store.read_stream("c")] == [1, 100, 100]


class _MeddlingAsyncHandler(AsyncCommandHandler[Any, Any, Any]):
    """Another writer appends to the stream between each load and its append."""

    def __init__(self, store: AsyncEventStore, decider: FunctionDecider[Any, Any, Any],
                 times: int | None, retry: Retry) -> None:
        super().__init__(store, decider, stream_id_of=_stream, retry=retry)
        self.times = times
        self.loads = 0

    async def _load(self, stream_id: Any) -> Folding[Any, Any]:
        folding = await super()._load(stream_id)
        self.loads += 1
        if self.times is None or self.loads <= self.times:
            await self.store.append(stream_id, [_foreign()])
        return folding


class AsyncCommandHandlerContract:
    """The guarantees of :class:`eskit.aio.AsyncCommandHandler` and ``AsyncRepository.execute``.

    Subclass and implement ``open_store``; each test runs its own event loop.
    """

    async def open_store(self, tmp_path: Path) -> AsyncEventStore:
        raise NotImplementedError("a contract test class must implement open_store")

    @pytest.fixture
    def run(self, tmp_path: Path) -> Callable[[Callable[[AsyncEventStore], Any]], None]:
        """Runs ``test(store)`` in a new loop with a fresh store, closed afterwards."""

        def run(test: Callable[[AsyncEventStore], Coroutine[Any, Any, None]]) -> None:
            async def main() -> None:
                store = await self.open_store(tmp_path)
                try:
                    await test(store)
                finally:
                    await store.close()

            asyncio.run(main())

        return run

    def test_a_command_appends_its_decision_and_an_empty_one_nothing(self, run: Any) -> None:
        async def test(store: AsyncEventStore) -> None:
            handler = AsyncCommandHandler(store, _ACCOUNT, stream_id_of=_stream)
            first = await handler.handle(_Deposit("acc-1", 10))
            nothing = await handler.handle(_Deposit("acc-1", 0))
            second = await handler.handle(_Deposit("acc-1", 5), metadata={"user": "ann"})
            assert (first.state, first.version) == (10, 1)
            assert nothing.appended is None
            assert nothing.version == 1
            assert (second.state, second.version) == (15, 2)
            stored = await store.read_stream("acc-1")
            assert [e.metadata for e in stored] == [{}, {"user": "ann"}]
            assert await handler.state("acc-1") == 15

        run(test)

    def test_a_refused_command_is_not_retried_and_writes_nothing(self, run: Any) -> None:
        async def test(store: AsyncEventStore) -> None:
            handler = AsyncCommandHandler(store, _ACCOUNT, stream_id_of=_stream, retry=FAST)
            with pytest.raises(_OverLimit):
                await handler.handle(_Deposit("acc-1", LIMIT + 1))
            assert await store.read_stream("acc-1") == []

        run(test)

    def test_a_conflict_reruns_the_command_then_the_retries_run_out(self, run: Any) -> None:
        async def test(store: AsyncEventStore) -> None:
            handler = _MeddlingAsyncHandler(store, _ACCOUNT, times=2, retry=FAST)
            handled = await handler.handle(_Deposit("acc-1", 7))
            assert handled.attempts == 3
            assert (handled.state, handled.version) == (7, 3)

            endless = _MeddlingAsyncHandler(store, _ACCOUNT, times=None,
                                            retry=Retry(max_attempts=2, first_delay=0))
            with pytest.raises(CommandRetriesExhausted) as raised:
                await endless.handle(_Deposit("acc-2", 7))
            assert raised.value.attempts == 2
            assert endless.loads == 2
            types = {e.event_type for e in await store.read_stream("acc-2")}
            assert types == {"eskit.testing.command.Meddled"}

        run(test)

    def test_tasks_racing_on_one_stream_each_apply_exactly_once(self, run: Any) -> None:
        tasks = 8

        async def test(store: AsyncEventStore) -> None:
            handler = AsyncCommandHandler(store, _ACCOUNT, stream_id_of=_stream, retry=FAST)
            results = await asyncio.gather(
                *(handler.handle(_Deposit("shared", n)) for n in range(1, tasks + 1))
            )
            events = await store.read_stream("shared")
            assert sorted(e.to_domain().amount for e in events) == list(range(1, tasks + 1))
            assert [e.version for e in events] == list(range(1, tasks + 1))
            assert sorted(r.version for r in results) == list(range(1, tasks + 1))

        run(test)

    def test_repository_execute_reruns_after_a_conflict_then_gives_up(self, run: Any) -> None:
        async def test(store: AsyncEventStore) -> None:
            repo, other = AsyncRepository(store), AsyncRepository(store)
            counter = _Counter("c")
            counter.increment()
            await repo.save(counter)
            seen: list[int] = []

            async def command(c: _Counter) -> None:  # a coroutine function is awaited
                seen.append(c.version)
                if len(seen) == 1:
                    await other.execute("c", _Counter, lambda o: o.increment(100))
                c.increment()

            saved = await repo.execute("c", _Counter, command, retry=FAST)
            assert seen == [1, 2]
            assert (saved.value, saved.version) == (102, 3)

            async def endless(c: _Counter) -> None:
                await other.execute("c", _Counter, lambda o: o.increment(100))
                c.increment(7)

            with pytest.raises(CommandRetriesExhausted):
                await repo.execute("c", _Counter, endless,
                                   retry=Retry(max_attempts=2, first_delay=0))
            assert [e.event_data["by"] for e in await store.read_stream("c")] == [
                1, 100, 1, 100, 100,
            ]

        run(test)
