"""The consuming side of the Redis Streams bus (see :class:`RedisStreamsSource`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from eskit.bus._redis_streams_client import (
    RedisError,
    ResponseError,
    aioredis,
    bounded,
    ignore_lost,
    log,
    new_client,
    quietly_close,
)
from eskit.bus._redis_streams_options import (
    SourceOptions,
    check_entry_id,
    dead_key,
    parse_source_url,
    replay_key,
)
from eskit.bus.source import DeadMessage, Delivery, IncomingMessage, Source
from eskit.errors import BrokerUnavailableError, BusError, InvalidInputError

__all__ = ["RedisStreamsSource"]

_BOOKKEEPING = (b"reason", b"dead_at", b"dead_from")
MAX_REASON_CHARS = 16_384

# Moves dead letters to the replay stream, one by one, atomically: a dead letter
# replayed twice at once is moved once (the second finds it gone).
_REPLAY = """
local moved = 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found > 0 then
    local fields, out = found[1][2], {}
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name ~= 'reason' and name ~= 'dead_at' and name ~= 'dead_from' then
        out[#out + 1] = name
        out[#out + 1] = fields[i + 1]
      end
    end
    redis.call('XADD', KEYS[2], '*', unpack(out))
    redis.call('XDEL', KEYS[1], id)
    moved = moved + 1
  end
end
return moved
"""
# Resets the idle time of entries still pending for this consumer (never steals one
# another member claimed meanwhile), so that a slow handler's messages are not claimed.
_KEEP = """
local kept = 0
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""
# Removes the consumer from the group only if nothing is pending for it: a deleted
# consumer's pending entries could never be claimed again.
_FORGET = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""




class RedisStreamsSource(Source):
    """A Redis consumer group reading what :class:`RedisStreamsSink` publishes.

    The URL is the sink's (``key``, ``key_per_category``; sink-only options are
    accepted and unused) plus:

    - ``categories`` (with ``key_per_category=1``, required): the comma-separated
      categories whose keys the group reads. A source reads only the keys it is
      told; a new category needs a new URL.
    - ``consumer`` (default ``<host>-<pid>-<random>``): this member's name in the
      group. Members of one group share the work; give each process its own name.
    - ``claim_idle`` (seconds, default 30): a message left pending that long by a
      member (crashed, or cut off) is claimed by another (``XAUTOCLAIM``). A live
      member refreshes what it holds every ``claim_idle/3``, so a slow handler
      keeps its message.
    - ``block`` (seconds, default 1): the longest ``XREADGROUP BLOCK``; it bounds how
      late a retried message comes back.
    - ``count`` (default 100): entries read or claimed per call.
    - ``start`` (``0`` default, or ``$``): where a new group starts on a key.
    - ``max_deliveries`` (default ``0``, off): a message claimed after this many
      deliveries goes to the dead-letter stream instead of being delivered again, so a
      message that crashes every member that takes it cannot circulate forever. It
      counts every delivery, retried ones too: set it above the consumer's attempts.
    - ``timeout`` (seconds, default 10): longest wait for a reply.
    - ``client_name`` (default ``eskit-source``): the connections' ``CLIENT SETNAME``.

    ``delivery_count`` is Redis's times-delivered of the pending entry (1 first).
    ``retry(delay)`` leaves the entry pending and sets its idle time to
    ``claim_idle - delay``, so any member claims it (count + 1) ``delay`` seconds
    later; a delay over ``claim_idle`` is cut to ``claim_idle``. ``dead_letter``
    adds the entry's fields plus ``reason``, ``dead_at`` (ms) and ``dead_from`` to
    the stream ``<key>:dead:<group>`` and acks the original, in one ``MULTI``.
    ``replay_dead_letters`` moves dead letters to ``<key>:replay:<group>``, a stream
    only this group reads (delivery count starts again at 1); a replayed entry is
    deleted once settled.
    """

    scheme: ClassVar[str] = "redis"

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.dead_key = dead_key(options.key, options.group)
        self.replay_key = replay_key(options.key, options.group)
        self._client: aioredis.Redis | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._held: dict[tuple[str, bytes], None] = {}  # read, not yet settled
        self._cursors: dict[str, bytes] = {}
        self._buffer: deque[_RedisDelivery] = deque()
        self._last_claim = 0.0
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, group: str) -> Self:
        return cls(parse_source_url(url, group))

    @property
    def destination(self) -> str:
        return self.options.destination

    @property
    def consumer(self) -> str:
        """This member's consumer name in the group."""
        return self.options.consumer

    @property
    def _keys(self) -> tuple[str, ...]:
        return (*self.options.keys, self.replay_key)

    def _open_client(self) -> aioredis.Redis:
        if self._client is None:
            raise BusError("the Redis source is not open: call open() first")
        return self._client

    async def open(self) -> None:
        if self._client is not None:
            return
        self._closed = False
        client = new_client(self.options.client_url, self.options.client_name, self.options.timeout)
        try:
            await self._declare(client)
        except RedisError as exc:
            await quietly_close(client)
            # WRONGTYPE, an ACL refusal...: reconnecting would not help.
            raise BusError(f"Redis refused the group: {exc}") from exc
        except BaseException:
            await quietly_close(client)
            raise
        self._client = client
        self._keeper = asyncio.create_task(self._keep_held())

    async def _declare(self, client: aioredis.Redis) -> None:
        for key in self._keys:
            start = "0" if key == self.replay_key else self.options.start
            try:
                await bounded(client.xgroup_create(key, self.options.group, start, mkstream=True),
                               self.options.timeout, "XGROUP CREATE")
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def deliveries(self) -> AsyncIterator[Delivery]:
        self._open_client()
        pause = 0.05
        while not self._closed:
            if self._buffer:  # read earlier and not handed out yet (by any iterator)
                yield self._buffer.popleft()
                continue
            client = self._client
            if client is None:
                return
            try:
                batch: list[_RedisDelivery] = []
                if time.monotonic() - self._last_claim >= self.options.block_ms / 1000:
                    batch = await self._claim(client)
                    if len(batch) < self.options.count:  # else more may be claimable now
                        self._last_claim = time.monotonic()
                if not batch:
                    batch = await self._read(client)
                pause = 0.05
            except BusError as exc:
                if self._closed:
                    return
                if "NOGROUP" in str(exc.__cause__ or ""):  # the key was deleted: declare again
                    await asyncio.sleep(pause)
                    await ignore_lost(self._declare(client))
                    continue
                log.warning("Redis source %s: %s; retrying in %.2f s", self.destination, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            self._buffer.extend(batch)

    async def _command(self, call: Awaitable[Any], what: str, extra: float = 0.0) -> Any:
        # Any: redis-py's reply types depend on the protocol and options; callers unpack.
        try:
            return await bounded(call, self.options.timeout + extra, what)
        except (ResponseError, BrokerUnavailableError) as exc:
            if isinstance(exc, BrokerUnavailableError):
                raise
            raise BusError(f"Redis {what} failed: {exc}") from exc

    async def _read(self, client: aioredis.Redis) -> list[_RedisDelivery]:
        streams: dict[Any, Any] = dict.fromkeys(self._keys, ">")
        reply = await self._command(
            client.xreadgroup(self.options.group, self.options.consumer, streams,
                              count=self.options.count, block=self.options.block_ms),
            "XREADGROUP", extra=self.options.block_ms / 1000,
        )
        batch = []
        for raw_key, entries in _stream_replies(reply):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            for entry_id, fields in entries:
                if fields:
                    batch.append(self._delivery(key, entry_id, fields, 1))
        return batch

    async def _claim(self, client: aioredis.Redis) -> list[_RedisDelivery]:
        claimed: list[tuple[str, bytes, dict[bytes, bytes]]] = []
        scan = client.pipeline(transaction=False)  # one round trip for every key
        for key in self._keys:
            scan.xautoclaim(key, self.options.group, self.options.consumer,
                            self.options.claim_idle_ms, self._cursors.get(key, b"0-0"),
                            count=self.options.count)
        replies = await self._command(scan.execute(), "XAUTOCLAIM")
        for key, reply in zip(self._keys, replies, strict=True):
            self._cursors[key] = reply[0]
            for entry_id, fields in reply[1]:
                # One this member still holds (its refresh came late) is not handed out twice.
                if entry_id is not None and fields and (key, entry_id) not in self._held:
                    claimed.append((key, entry_id, fields))
            if len(reply) > 2 and reply[2]:
                log.error("Redis source %s: entries %s of %s were trimmed or deleted before "
                          "they were acknowledged; they are lost", self.destination,
                          [i.decode() for i in reply[2]], key)
        if not claimed:
            return []
        pipe = client.pipeline(transaction=False)
        for key, entry_id, _ in claimed:
            pipe.xpending_range(key, self.options.group, entry_id, entry_id, 1)
        pending = await self._command(pipe.execute(), "XPENDING")
        batch = []
        most = self.options.max_deliveries
        for (key, entry_id, fields), rows in zip(claimed, pending, strict=True):
            if not rows or rows[0]["consumer"].decode() != self.options.consumer:
                continue  # another member claimed it in between
            count = int(rows[0]["times_delivered"])
            delivery = self._delivery(key, entry_id, fields, count)
            if most and count > most:  # a poison message that kills its consumers, say
                await delivery.dead_letter(
                    f"delivered {count - 1} times and never settled (max_deliveries={most})"
                )
                continue
            batch.append(delivery)
        return batch

    def _delivery(
        self, key: str, entry_id: bytes, fields: dict[bytes, bytes], count: int
    ) -> _RedisDelivery:
        self._held[(key, entry_id)] = None
        message = IncomingMessage(fields.get(b"body", b""), int(count),
                                  f"{key} {entry_id.decode()}")
        return _RedisDelivery(self, key, entry_id, fields, message)

    async def _keep_held(self) -> None:
        """Every ``claim_idle/3``, reset the idle time of what this member holds."""
        keep = None
        while True:
            await asyncio.sleep(self.options.claim_idle_ms / 3000)
            client = self._client
            if client is None:
                return
            keep = keep or client.register_script(_KEEP)
            by_key: dict[str, list[bytes]] = {}
            for key, entry_id in list(self._held):
                by_key.setdefault(key, []).append(entry_id)
            try:
                for key, ids in by_key.items():
                    for start in range(0, len(ids), 500):
                        args: list[Any] = [self.options.group, self.options.consumer]
                        args += ids[start:start + 500]
                        await ignore_lost(bounded(keep(keys=[key], args=args),
                                                  self.options.timeout, "XCLAIM"))
            except Exception:  # never let the refresh die: its messages would be claimed
                log.exception("Redis source %s: refreshing held messages failed",
                              self.destination)

    async def _settle(self, delivery: _RedisDelivery, action: str, arg: Any) -> None:
        self._held.pop((delivery.key, delivery.entry_id), None)  # settled or not, let it go
        client = self._open_client()
        group, key, entry_id = self.options.group, delivery.key, delivery.entry_id
        replayed = key == self.replay_key
        if action == "retry":
            idle = max(0, self.options.claim_idle_ms - round(arg * 1000))
            await self._command(client.xclaim(key, group, self.options.consumer, 0, [entry_id],
                                              idle=idle, justid=True), "XCLAIM")
            return
        pipe = client.pipeline(transaction=True)
        if action == "dead":
            fields: dict[bytes, Any] = {name: value for name, value in delivery.fields.items()
                      if name not in _BOOKKEEPING}
            fields |= {b"reason": arg, b"dead_at": str(int(time.time() * 1000)),
                       b"dead_from": f"{key} {entry_id.decode()}"}
            pipe.xadd(self.dead_key, fields)  # type: ignore[arg-type]  # bytes keys are fine
        pipe.xack(key, group, entry_id)
        if replayed:  # only this group reads it: a settled replay entry is done with
            pipe.xdel(key, entry_id)
        await self._command(pipe.execute(), "XACK")

    async def dead_letters(self, limit: int = 100) -> list[DeadMessage]:
        if type(limit) is not int or not 1 <= limit <= 100_000:
            raise InvalidInputError(f"limit must be an int from 1 to 100000, not {limit!r}")
        client = self._open_client()
        rows = await self._command(client.xrange(self.dead_key, count=limit), "XRANGE")
        return [_dead_message(entry_id, fields) for entry_id, fields in rows]

    async def replay_dead_letters(self, ids: Sequence[str] | None = None) -> int:
        if isinstance(ids, str) or (ids is not None and not isinstance(ids, Sequence)):
            raise InvalidInputError("ids is a list of dead-letter ids, or None for all")
        wanted = None if ids is None else [check_entry_id(i) for i in ids]
        client = self._open_client()
        move = client.register_script(_REPLAY)
        keys = [self.dead_key, self.replay_key]
        if wanted is not None:
            moved = 0
            for start in range(0, len(wanted), 100):
                moved += int(await self._command(move(keys=keys, args=wanted[start:start + 100]),
                                                 "replay"))
            return moved
        # All: those dead by now, in pages, not those dead-lettered while replaying.
        newest = await self._command(client.xrevrange(self.dead_key, count=1), "XREVRANGE")
        if not newest:
            return 0
        moved, last = 0, newest[0][0]
        while True:
            page = await self._command(client.xrange(self.dead_key, "-", last, count=100), "XRANGE")
            if not page:
                return moved
            moved += int(await self._command(move(keys=keys, args=[i for i, _ in page]), "replay"))

    async def close(self) -> None:
        self._closed = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        client, self._client = self._client, None
        if client is None:
            return
        self._held.clear()
        self._buffer.clear()  # still pending in Redis: claimed by the group after claim_idle
        forget = client.register_script(_FORGET)
        for key in self._keys:  # best effort: a crashed member's name is harmless
            await ignore_lost(bounded(
                forget(keys=[key], args=[self.options.group, self.options.consumer]),
                min(self.options.timeout, 2.0), "DELCONSUMER"))
        await quietly_close(client)


class _RedisDelivery(Delivery):
    def __init__(
        self, source: RedisStreamsSource, key: str, entry_id: bytes,
        fields: dict[bytes, bytes], message: IncomingMessage,
    ) -> None:
        self.source, self.key, self.entry_id, self.fields = source, key, entry_id, fields
        self.message = message
        self._settled = False

    def _once(self) -> None:
        if self._settled:
            raise BusError(f"delivery {self.message.broker_id} was already settled")
        self._settled = True

    async def ack(self) -> None:
        self._once()
        await self.source._settle(self, "ack", None)

    async def retry(self, delay: float) -> None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not (
            math.isfinite(delay) and delay >= 0
        ):
            raise InvalidInputError(f"retry delay is seconds >= 0, not {delay!r}")
        self._once()
        await self.source._settle(self, "retry", float(delay))

    async def dead_letter(self, reason: str) -> None:
        if not isinstance(reason, str):
            raise InvalidInputError(f"a dead-letter reason is a str, not {type(reason).__name__}")
        self._once()
        if len(reason) > MAX_REASON_CHARS:  # a whole traceback, say: keep its head, say so
            reason = reason[:MAX_REASON_CHARS] + " ... (reason truncated)"
        # A reason quoting odd input may hold lone surrogates: keep them visible, escaped.
        await self.source._settle(self, "dead", reason.encode("utf-8", "backslashreplace"))


def _stream_replies(reply: Any) -> list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]:
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        return [(key, value[0] if value and isinstance(value[0], list) else value)
                for key, value in reply.items()]
    return [(key, entries) for key, entries in reply]


def _dead_message(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadMessage:
    raw_time = fields.get(b"dead_at", b"")
    dead_at = (datetime.fromtimestamp(int(raw_time) / 1000, UTC)
               if raw_time.isdigit() else None)
    reason = fields.get(b"reason", b"").decode("utf-8", "replace")
    return DeadMessage(entry_id.decode(), fields.get(b"body", b""), reason, dead_at)
