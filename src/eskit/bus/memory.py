"""A process-local broker for tests and examples: ``memory://NAME``.

:class:`MemoryBroker` behaves like the real brokers where a test can tell:
consumer groups (each gets every message), competing members of one group
(each message to one of them), redelivery of unsettled messages when a member
closes, ``retry(delay)`` with a higher delivery count, a dead-letter path with
replay. Nothing survives the process. It also fails on request
(:meth:`MemoryBroker.fail_publish`), to test a relay's recovery.

Every sink and source with the same ``memory://NAME`` URL shares one broker, in
any thread or event loop of the process. A group declared (a source opened)
after messages were published still receives them: the broker keeps its whole
log, like a stream.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Self
from urllib.parse import urlsplit

from eskit.bus.sink import OutgoingMessage, Sink
from eskit.bus.source import DeadMessage, Delivery, IncomingMessage, Source
from eskit.errors import BrokerUnavailableError, InvalidInputError, PublishRejectedError

__all__ = ["MemoryBroker", "MemoryDelivery", "MemorySink", "MemorySource", "check_group"]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}\Z")
_IDLE = 0.002
"""Seconds an idle member sleeps before looking again (no cross-loop wake-up is needed)."""


def check_group(group: object) -> str:
    """A consumer group name: 1-200 of ``A-Z a-z 0-9 . _ -`` (what every broker takes)."""
    if type(group) is not str or not _NAME.match(group):
        raise InvalidInputError(
            f"a consumer group is 1-200 characters of letters, digits, '.', '_' or '-', "
            f"got {group!r}"
        )
    return group


def _broker_name(url: str) -> str:
    if type(url) is not str:
        raise InvalidInputError(f"a bus URL is a str, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise InvalidInputError(f"not a memory:// URL: {url!r}")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise InvalidInputError(f"a memory URL is memory://NAME and nothing else, got {url!r}")
    if not _NAME.match(parts.netloc):
        raise InvalidInputError(
            f"the broker name of a memory URL is 1-200 characters of letters, digits, '.', "
            f"'_' or '-', got {parts.netloc!r}"
        )
    return parts.netloc


@dataclass
class _Entry:
    seq: int
    body: bytes
    deliveries: int = 0
    not_before: float = 0.0


@dataclass
class _Group:
    ready: deque[_Entry] = field(default_factory=deque)
    in_flight: dict[int, tuple[int, _Entry]] = field(default_factory=dict)
    """Delivery token → (member id, entry)."""
    dead: dict[str, tuple[_Entry, DeadMessage]] = field(default_factory=dict)


@dataclass
class _Failure:
    times: int
    after: int
    error: Exception


class MemoryBroker:
    """One named in-process broker; get it with :meth:`named` (or through a URL)."""

    _all: ClassVar[dict[str, MemoryBroker]] = {}
    _all_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._log: list[bytes] = []
        self._groups: dict[str, _Group] = {}
        self._failures: deque[_Failure] = deque()
        self._tokens = 0
        self._dead_ids = 0

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The broker ``memory://name`` reaches, created on first use."""
        with cls._all_lock:
            broker = cls._all.get(name)
            if broker is None:
                broker = cls._all[name] = cls(name)
            return broker

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the broker ``name`` and everything in it (tests call it to clean up)."""
        with cls._all_lock:
            cls._all.pop(name, None)

    # -- test hooks --------------------------------------------------------------------

    @property
    def published(self) -> list[bytes]:
        """Every body published so far, in order, repeats included (the wire log)."""
        with self._lock:
            return list(self._log)

    def fail_publish(
        self, times: int = 1, *, after: int = 0, error: Exception | None = None
    ) -> None:
        """Make the next ``times`` publish calls fail after publishing ``after`` messages each.

        ``error`` defaults to a :class:`~eskit.BrokerUnavailableError` (a dropped
        connection); pass a :class:`~eskit.PublishRejectedError` for a negative confirm.
        """
        if type(times) is not int or times < 1 or type(after) is not int or after < 0:
            raise InvalidInputError("times must be an int >= 1 and after an int >= 0")
        failure = error or BrokerUnavailableError(f"memory://{self.name}: connection lost (test)")
        with self._lock:
            self._failures.append(_Failure(times, after, failure))

    def groups(self) -> list[str]:
        """The declared consumer groups."""
        with self._lock:
            return sorted(self._groups)

    # -- used by sinks and sources -----------------------------------------------------

    def _publish(self, bodies: Sequence[bytes]) -> None:
        with self._lock:
            failure = self._failures[0] if self._failures else None
            if failure is not None:
                failure.times -= 1
                if failure.times == 0:
                    self._failures.popleft()
                bodies = bodies[: failure.after]
            for body in bodies:
                seq = len(self._log)
                self._log.append(body)
                for group in self._groups.values():
                    group.ready.append(_Entry(seq, body))
        if failure is not None:
            raise failure.error

    def _declare(self, group: str) -> None:
        with self._lock:
            if group not in self._groups:
                self._groups[group] = _Group(
                    deque(_Entry(seq, body) for seq, body in enumerate(self._log))
                )

    def _take(self, group: str, member: int) -> tuple[int, _Entry] | None:
        with self._lock:
            state = self._groups[group]
            now = time.monotonic()
            for index, entry in enumerate(state.ready):
                if entry.not_before <= now:
                    del state.ready[index]
                    entry.deliveries += 1
                    self._tokens += 1
                    state.in_flight[self._tokens] = (member, entry)
                    return self._tokens, entry
            return None

    def _settle(self, group: str, token: int, verdict: str, arg: float | str) -> None:
        with self._lock:
            state = self._groups[group]
            held = state.in_flight.pop(token, None)
            if held is None:
                raise BrokerUnavailableError(
                    f"memory://{self.name}: the delivery is no longer held (its member "
                    "closed): the broker redelivers it"
                )
            _, entry = held
            if verdict == "retry":
                assert isinstance(arg, float)
                entry.not_before = time.monotonic() + arg
                state.ready.append(entry)
            elif verdict == "dead":
                self._dead_ids += 1
                dead_id = str(self._dead_ids)
                state.dead[dead_id] = (
                    entry, DeadMessage(dead_id, entry.body, str(arg), datetime.now(UTC))
                )

    def _release(self, group: str, member: int) -> None:
        """A member closed: what it held goes back to the front, in publish order."""
        with self._lock:
            state = self._groups.get(group)
            if state is None:
                return
            held = sorted(
                (entry for owner, entry in state.in_flight.values() if owner == member),
                key=lambda e: e.seq, reverse=True,
            )
            for token in [t for t, (owner, _) in state.in_flight.items() if owner == member]:
                del state.in_flight[token]
            for entry in held:
                state.ready.appendleft(entry)

    def _dead_letters(self, group: str, limit: int) -> list[DeadMessage]:
        with self._lock:
            state = self._groups.get(group)
            return [] if state is None else [d for _, d in list(state.dead.values())[:limit]]

    def _replay(self, group: str, ids: Sequence[str] | None) -> int:
        with self._lock:
            state = self._groups.get(group)
            if state is None:
                return 0
            chosen = list(state.dead) if ids is None else [i for i in ids if i in state.dead]
            for dead_id in chosen:
                entry, _ = state.dead.pop(dead_id)
                entry.deliveries = 0
                entry.not_before = 0.0
                state.ready.append(entry)
            return len(chosen)


class MemorySink(Sink):
    """Publishes to a :class:`MemoryBroker`; "confirmed" once it is in the broker's log."""

    scheme: ClassVar[str] = "memory"

    def __init__(self, name: str) -> None:
        self.broker = MemoryBroker.named(name)
        self._open = False

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(_broker_name(url))

    @property
    def destination(self) -> str:
        return f"memory://{self.broker.name}"

    async def open(self) -> None:
        self._open = True

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not self._open:
            raise BrokerUnavailableError(f"{self.destination}: the sink is not open")
        bodies = []
        for message in messages:
            if not isinstance(message, OutgoingMessage) or type(message.body) is not bytes:
                raise PublishRejectedError(f"{self.destination}: not an OutgoingMessage")
            bodies.append(message.body)
        try:
            self.broker._publish(bodies)
        except BrokerUnavailableError:
            self._open = False  # like a dropped connection: reopen before publishing again
            raise

    async def close(self) -> None:
        self._open = False


class MemoryDelivery(Delivery):
    """A message held by one member of a group until it is settled."""

    def __init__(self, source: MemorySource, token: int, message: IncomingMessage) -> None:
        self._source = source
        self._token = token
        self.message = message
        self._settled = False

    def _settle(self, verdict: str, arg: float | str) -> None:
        if self._settled:
            raise InvalidInputError("a delivery is settled exactly once")
        self._settled = True
        self._source.broker._settle(self._source.group, self._token, verdict, arg)

    async def ack(self) -> None:
        self._settle("ack", "")

    async def retry(self, delay: float) -> None:
        if not isinstance(delay, (int, float)) or not delay >= 0:
            raise InvalidInputError(f"delay must be a number of seconds >= 0, got {delay!r}")
        self._settle("retry", float(delay))

    async def dead_letter(self, reason: str) -> None:
        self._settle("dead", str(reason))


class MemorySource(Source):
    """One member of a consumer group on a :class:`MemoryBroker`."""

    scheme: ClassVar[str] = "memory"
    _members: ClassVar[int] = 0
    _members_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str, *, group: str) -> None:
        self.broker = MemoryBroker.named(name)
        self.group = check_group(group)
        with MemorySource._members_lock:
            MemorySource._members += 1
            self._member = MemorySource._members
        self._open = False

    @classmethod
    def from_url(cls, url: str, *, group: str) -> Self:
        return cls(_broker_name(url), group=group)

    @property
    def destination(self) -> str:
        return f"memory://{self.broker.name} (group {self.group})"

    async def open(self) -> None:
        self.broker._declare(self.group)
        self._open = True

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if not self._open:
            raise BrokerUnavailableError(f"{self.destination}: the source is not open")
        while self._open:
            taken = self.broker._take(self.group, self._member)
            if taken is None:
                await asyncio.sleep(_IDLE)
                continue
            token, entry = taken
            yield MemoryDelivery(
                self, token, IncomingMessage(entry.body, entry.deliveries, str(entry.seq))
            )

    async def dead_letters(self, limit: int = 100) -> list[DeadMessage]:
        if type(limit) is not int or limit < 0:
            raise InvalidInputError(f"limit must be an int >= 0, got {limit!r}")
        return self.broker._dead_letters(self.group, limit)

    async def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and (isinstance(ids, str) or not all(type(i) is str for i in ids)):
            raise InvalidInputError("ids must be a list of dead-letter ids (strings)")
        return self.broker._replay(self.group, ids)

    async def close(self) -> None:
        self._open = False
        self.broker._release(self.group, self._member)
