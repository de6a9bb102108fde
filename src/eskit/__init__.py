"""eskit: event sourcing for Python.

Events are immutable facts kept in an append-only store with optimistic
locking; aggregates are rebuilt by replaying them. This module is the public
API: everything importable from here is supported, everything else is private.
"""

import logging
from typing import TYPE_CHECKING

from eskit._extras import POSTGRES_MODULES, installed
from eskit.aggregate import Aggregate, handles
from eskit.blobs.ref import BlobRef
from eskit.codec import register_type
from eskit.command_handler import CommandHandler, CommandResult
from eskit.config import open_store
from eskit.context import caused_by, event_context
from eskit.dcb import AppendCondition, Query, QueryItem, ReadResult
from eskit.decider import Decider, FunctionDecider, decider, fold
from eskit.errors import (
    AggregateNotFound,
    AppendConditionFailed,
    AppendNotFirstWriteError,
    BlobCollectionRefusedError,
    BlobNotFoundError,
    BrokerUnavailableError,
    BusError,
    CommandRetriesExhausted,
    ConcurrencyError,
    DamagedStoreError,
    DecodingError,
    DuplicateEventError,
    EncodingError,
    EskitError,
    EventOrderError,
    InvalidInputError,
    InvalidMessageError,
    MissingExtraError,
    MultiStreamConcurrencyError,
    NotAnEskitStoreError,
    PublishRejectedError,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
    StreamArchivedError,
    StreamDeletedError,
    StreamTruncatedError,
    TruncationRefusedError,
    UnknownEventTypeError,
    VersionNotFound,
)
from eskit.events import (
    Event,
    EventRegistry,
    NewEvent,
    StreamId,
    domain_event,
    upcaster,
    utc_now,
)
from eskit.health import HealthReport, check_health
from eskit.maintenance import StoreStats, prune_snapshots, stats
from eskit.projections import (
    InMemoryTarget,
    ParkedEventBlocked,
    PostgresTarget,
    Projection,
    ProjectionFailed,
    ProjectionRunner,
    RetryPolicy,
    SQLiteTarget,
    UnknownHandlerWarning,
    wait_for_projection,
)
from eskit.repository import Repository
from eskit.retry import Retry, retry
from eskit.snapshots import (
    EveryNEvents,
    NoSnapshots,
    OnDemand,
    Snapshot,
    SnapshotPolicy,
    SnapshotStore,
    snapshot_upcaster,
)
from eskit.stores.base import EventStore
from eskit.stores.compact import CompactResult, compact
from eskit.stores.memory import InMemoryEventStore
from eskit.stores.memory_snapshots import InMemorySnapshotStore
from eskit.stores.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    StreamAppend,
    StreamInfo,
)
from eskit.stores.rows import UndecodableEvent
from eskit.stores.sqlite import SQLiteEventStore
from eskit.stores.sqlite_snapshots import SQLiteSnapshotStore
from eskit.subscription import EventFilter, Subscription
from eskit.timetravel import FieldChange, StateDiff, state_diff
from eskit.upcasting import EskitDeprecationWarning

if TYPE_CHECKING:
    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_snapshots import PostgresSnapshotStore

__version__ = "0.1.0"  # the one place: pyproject.toml reads it from here (hatch)

# A library never configures logging: without this handler, Python's last-resort
# handler would print eskit's warnings on stderr of every application that did not
# configure logging itself. The application's own handlers still see every record.
logging.getLogger("eskit").addHandler(logging.NullHandler())

__all__ = [
    "ANY",
    "CompactResult",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateNotFound",
    "AppendCondition",
    "AppendConditionFailed",
    "AppendNotFirstWriteError",
    "BlobCollectionRefusedError",
    "BlobNotFoundError",
    "BlobRef",
    "BrokerUnavailableError",
    "BusError",
    "AppendResult",
    "CommandHandler",
    "CommandResult",
    "CommandRetriesExhausted",
    "ConcurrencyError",
    "Decider",
    "FunctionDecider",
    "DamagedStoreError",
    "DecodingError",
    "DuplicateEventError",
    "EncodingError",
    "EskitDeprecationWarning",
    "EskitError",
    "StreamArchivedError",
    "StreamDeletedError",
    "StreamTruncatedError",
    "TruncationRefusedError",
    "Event",
    "EventFilter",
    "EventOrderError",
    "EventRegistry",
    "EventStore",
    "EveryNEvents",
    "ExpectedVersion",
    "FieldChange",
    "HealthReport",
    "InMemoryEventStore",
    "InMemoryTarget",
    "InMemorySnapshotStore",
    "InvalidInputError",
    "InvalidMessageError",
    "MissingExtraError",
    "MultiStreamConcurrencyError",
    "NewEvent",
    "NoSnapshots",
    "NotAnEskitStoreError",
    "PublishRejectedError",
    "OnDemand",
    "ParkedEventBlocked",
    "PostgresEventStore",
    "PostgresTarget",
    "Projection",
    "ProjectionFailed",
    "ProjectionRunner",
    "PostgresSnapshotStore",
    "Query",
    "QueryItem",
    "ReadResult",
    "Repository",
    "Retry",
    "RetryPolicy",
    "SQLiteEventStore",
    "SQLiteTarget",
    "SQLiteSnapshotStore",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotStore",
    "StateDiff",
    "StoreBusyError",
    "StoreError",
    "StoreStats",
    "StoreUnavailableError",
    "StreamAppend",
    "StreamId",
    "StreamInfo",
    "Subscription",
    "UndecodableEvent",
    "UnknownEventTypeError",
    "UnknownHandlerWarning",
    "VersionNotFound",
    "__version__",
    "caused_by",
    "check_health",
    "decider",
    "domain_event",
    "event_context",
    "fold",
    "handles",
    "open_store",
    "prune_snapshots",
    "register_type",
    "retry",
    "snapshot_upcaster",
    "state_diff",
    "stats",
    "upcaster",
    "utc_now",
    "wait_for_projection",
    "compact",
]

_NEED_POSTGRES = ("PostgresEventStore", "PostgresSnapshotStore")

if not installed(*POSTGRES_MODULES):
    # `from eskit import *` asks for every name in __all__, and asking for these imports
    # psycopg: without the postgres extra, the star import leaves them out rather than
    # fail. Asking for one by name still raises MissingExtraError, saying what to install.
    __all__ = [name for name in __all__ if name not in _NEED_POSTGRES]


def __getattr__(name: str) -> object:
    # PostgreSQL support is an optional extra: import psycopg only when asked for.
    if name == "PostgresEventStore":
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore
    if name == "PostgresSnapshotStore":
        from eskit.stores.postgres_snapshots import PostgresSnapshotStore

        return PostgresSnapshotStore
    raise AttributeError(f"module 'eskit' has no attribute {name!r}")
