"""Event store backends. Each is a plug-in behind :class:`eskit.EventStore`."""

from eskit.stores.base import EventStore
from eskit.stores.memory import InMemoryEventStore
from eskit.stores.model import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, StreamAppend
from eskit.stores.sqlite import SQLiteEventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "EventStore",
    "InMemoryEventStore",
    "SQLiteEventStore",
    "StreamAppend",
]
