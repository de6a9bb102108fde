"""Redis Streams: a sink that XADDs each event and a source that reads a consumer group.

The reply to ``XADD`` is Redis's confirm: the entry is in the server's memory
(and in its AOF/RDB as its persistence settings say; eskit does not change them).
Redis has no message dedupe: a batch published again after a lost connection
adds the same events again, under new entry ids, with the same ``id`` field (the
event id). The consumer's inbox makes such repeats harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

from eskit.bus._redis_streams_client import (
    RedisError,
    ResponseError,
    aioredis,
    bounded,
    new_client,
    quietly_close,
)
from eskit.bus._redis_streams_options import SinkOptions, category_key, check_text, parse_sink_url
from eskit.bus._redis_streams_source import RedisStreamsSource
from eskit.bus.sink import CLOUDEVENTS_CONTENT_TYPE, OutgoingMessage, Sink, stream_category
from eskit.errors import (
    BrokerUnavailableError,
    BusError,
    InvalidInputError,
    PublishRejectedError,
)

__all__ = ["RedisStreamsSink", "RedisStreamsSource"]

MAX_CHUNK_MESSAGES = 1000

# One chunk of XADDs in one script call: Redis runs a script alone, in order, and a
# refused XADD (WRONGTYPE, out of memory, a read-only replica) raises and ends the
# script there, so no later message of the chunk (a later event of the same stream)
# is ever written after a refused one. One reply per chunk, not one per XADD plus
# MULTI/EXEC's QUEUED replies (measured 2-3x the XADD rate of MULTI/EXEC here).
# KEYS: the key of each message; ARGV[1]: MAXLEN ("" for none); then 5 fields each.
_XADD_CHUNK = """
local maxlen = ARGV[1]
local ids = {}
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 5
  if maxlen == '' then
    ids[i] = redis.call('XADD', KEYS[i], '*', 'id', ARGV[b + 1], 'stream', ARGV[b + 2],
      'type', ARGV[b + 3], 'content_type', ARGV[b + 4], 'body', ARGV[b + 5])
  else
    ids[i] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*', 'id', ARGV[b + 1],
      'stream', ARGV[b + 2], 'type', ARGV[b + 3], 'content_type', ARGV[b + 4],
      'body', ARGV[b + 5])
  end
end
return ids
"""


class RedisStreamsSink(Sink):
    """Publishes each event with ``XADD`` to a Redis stream (``redis://`` or ``rediss://``).

    ``redis://[user:password@]host[:port][/db]?options``; the options:

    - ``key`` (default ``eskit:events``): the stream key, or with ``key_per_category``
      the prefix of one key per stream category, ``<key>:<category>`` with the category
      percent-encoded (UTF-8; only ``A-Z a-z 0-9 _ . ~`` kept, so never a ``:``).
    - ``key_per_category`` (``0``/``1``, default ``0``).
    - ``maxlen`` (off by default): trim each key to about this many entries (``MAXLEN ~``).
      Trimming deletes entries whether or not every group has read them: a group
      that lags by more than ``maxlen`` loses messages, and trimmed pending entries
      are gone when claimed. Leave it off unless something else bounds the lag.
    - ``confirm_timeout`` (seconds, default 10): longest wait for one round trip.
    - ``client_name`` (default ``eskit-sink``): the connection's ``CLIENT SETNAME``.
    - ``batch_bytes`` (default 8 MiB): a batch is sent in chunks of at most this many
      body bytes (and 1,000 messages), one after the other, each one call of a Lua
      script that runs its ``XADD`` commands in order.

    Each entry's fields: ``id`` (event id), ``stream``, ``type``, ``content_type`` and
    ``body`` (the CloudEvent). A refused ``XADD`` (``WRONGTYPE``, out of memory, a
    read-only replica) ends its chunk there and raises
    :class:`~eskit.PublishRejectedError`: the messages before it are written, it and
    every later one are not, so a refused message is never followed by a later
    message of its stream. ``publish`` returns once Redis has replied to every
    ``XADD``; no dedupe (see the module docstring). ``open`` raises
    :class:`~eskit.BrokerUnavailableError` if Redis cannot be reached and
    :class:`~eskit.BusError` if it refuses (password, ACL, database number).
    """

    scheme: ClassVar[str] = "redis"

    def __init__(self, options: SinkOptions) -> None:
        self.options = options
        self._client: aioredis.Redis | None = None
        self._script: Any = None

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(parse_sink_url(url))

    @property
    def destination(self) -> str:
        return self.options.destination

    def key_for(self, stream_id: str) -> str:
        """The key a stream's events go to."""
        if self.options.key_per_category:
            return category_key(self.options.key, stream_category(stream_id))
        return self.options.key

    async def open(self) -> None:
        if self._client is not None:
            return
        client = new_client(self.options.client_url, self.options.client_name,
                         self.options.confirm_timeout)
        try:
            await bounded(client.ping(), self.options.confirm_timeout, "connect")
        except RedisError as exc:  # e.g. a wrong password or database number
            await quietly_close(client)
            # A configuration error (database number, ACL): reconnecting would not help.
            raise BusError(f"Redis refused the connection: {exc}") from exc
        except BaseException:
            await quietly_close(client)
            raise
        # redis-py's Script runs EVALSHA and loads the script again on NOSCRIPT
        # (a restarted server, SCRIPT FLUSH).
        self._script = client.register_script(_XADD_CHUNK)
        self._client = client

    def _entries(self, messages: Sequence[OutgoingMessage]) -> list[tuple[str, dict[Any, Any]]]:
        entries = []
        # A batch holds runs of one stream and few types: check and route each once.
        streams: dict[str, tuple[str, str]] = {}
        kinds: dict[str, str] = {}
        for message in messages:
            if not isinstance(message, OutgoingMessage) or not isinstance(message.body, bytes):
                raise InvalidInputError(
                    f"publish takes OutgoingMessage with bytes bodies, not {message!r}"
                )
            event = message.event
            stream_id = str(event.aggregate_id)
            routed = streams.get(stream_id)
            if routed is None:
                stream = check_text(stream_id, "a stream id", max_bytes=1 << 16)
                routed = streams[stream_id] = (stream, self.key_for(stream))
            kind = kinds.get(event.event_type)
            if kind is None:
                kind = kinds[event.event_type] = check_text(
                    event.event_type, "an event type", max_bytes=1 << 16)
            entries.append((routed[1], {
                "id": message.message_id, "stream": routed[0], "type": kind,
                "content_type": CLOUDEVENTS_CONTENT_TYPE, "body": message.body,
            }))
        return entries

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        entries = self._entries(messages)  # bad input fails before any I/O
        if not entries:
            return
        client = self._client
        if client is None:
            raise BrokerUnavailableError("the Redis sink is not open: call open() first")
        start = 0
        while start < len(entries):
            end, size = start, 0
            while end < len(entries) and end - start < MAX_CHUNK_MESSAGES:
                size += len(entries[end][1]["body"])
                if size > self.options.batch_bytes and end > start:
                    break
                end += 1
            # Chunks go one after the other, never two in flight: were one refused, no
            # later chunk (holding later events of the same streams) has been sent.
            await self._publish_chunk(client, messages, entries, start, end)
            start = end

    async def _publish_chunk(
        self, client: aioredis.Redis, messages: Sequence[OutgoingMessage],
        entries: list[tuple[str, dict[Any, Any]]], start: int, end: int,
    ) -> None:
        keys = [key for key, _ in entries[start:end]]
        maxlen = "" if self.options.maxlen is None else str(self.options.maxlen)
        args: list[Any] = [maxlen]
        for _, fields in entries[start:end]:
            args += (fields["id"], fields["stream"], fields["type"], fields["content_type"],
                     fields["body"])
        try:
            ids = await bounded(self._script(keys=keys, args=args, client=client),
                                self.options.confirm_timeout, "XADD")
        except BrokerUnavailableError:
            await self.close()  # the connection's state is unknown: the caller reopens
            raise
        except ResponseError as exc:  # a refused XADD: it and every later one not written
            raise PublishRejectedError(
                f"Redis refused a message of the batch of {end - start} from event "
                f"{messages[start].message_id} on (the ones before it were written): {exc}"
            ) from exc
        if not isinstance(ids, list) or len(ids) != end - start:
            raise PublishRejectedError(f"Redis answered the XADD script with {ids!r}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await quietly_close(client)
