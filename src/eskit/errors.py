"""The one exception hierarchy of eskit.

Every error eskit raises on purpose is an :class:`EskitError`. Driver errors
(``sqlite3``, ``psycopg``) are translated at the edge of each store and
never reach the caller untranslated::

    EskitError
    ├── InvalidInputError (ValueError)      bad argument or event; nothing was written
    │   ├── EncodingError                   a payload value the codec cannot store
    │   └── VersionNotFound                 a version beyond the stream's head was asked for
    ├── ConcurrencyError (ValueError)       expected version did not match the stream
    │   ├── AppendConditionFailed           a DCB append condition did not hold
    │   └── MultiStreamConcurrencyError     ... for one or more streams of an append_many
    ├── CommandRetriesExhausted             a command kept conflicting; its retries ran out
    ├── DuplicateEventError                 an event id is already stored elsewhere
    ├── StreamTruncatedError                a load needs events truncate_stream removed
    ├── TruncationRefusedError              no snapshot covers what a truncation removes
    ├── AggregateNotFound (LookupError)     no events for the requested aggregate
    ├── BlobNotFoundError (LookupError)     the blob store does not hold a referenced blob
    ├── BlobCollectionRefusedError          blob collection cannot see every reference
    ├── UnknownEventTypeError               no class or handler knows this event type
    ├── DecodingError                       a stored event cannot be decoded
    ├── EventOrderError                     an event applied out of version order
    ├── MissingExtraError (ImportError)     an optional extra is not installed
    ├── BusError                            publishing to / consuming from a broker failed
    │   ├── BrokerUnavailableError          unreachable, connection lost, no confirm in time
    │   ├── PublishRejectedError            the broker refused a message
    │   └── InvalidMessageError             a message body is not an eskit CloudEvent
    └── StoreError                          the storage itself failed
        ├── NotAnEskitStoreError            the file or database is not an eskit store
        ├── DamagedStoreError               the store's file is corrupt
        ├── StoreBusyError                  the store stayed locked past the timeout
        ├── StoreUnavailableError           the server is unreachable or the connection broke
        └── AppendNotFirstWriteError        an append came after other writes in its transaction

``ConcurrencyError`` subclasses ``ValueError`` so that code written for the
seed tutorial, which catches ``ValueError``, keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AggregateNotFound",
    "AppendConditionFailed",
    "AppendNotFirstWriteError",
    "BlobCollectionRefusedError",
    "BlobNotFoundError",
    "CommandRetriesExhausted",
    "ConcurrencyError",
    "DamagedStoreError",
    "DecodingError",
    "DuplicateEventError",
    "EncodingError",
    "EskitError",
    "EventOrderError",
    "InvalidInputError",
    "InvalidMessageError",
    "MissingExtraError",
    "MultiStreamConcurrencyError",
    "NotAnEskitStoreError",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "StreamArchivedError",
    "StreamDeletedError",
    "StreamTruncatedError",
    "TruncationRefusedError",
    "UnknownEventTypeError",
    "VersionNotFound",
]


class EskitError(Exception):
    """Base class of every error eskit raises on purpose."""


class InvalidInputError(EskitError, ValueError):
    """An argument or event is malformed. Nothing was written."""


class EncodingError(InvalidInputError):
    """A payload or metadata value cannot be encoded. Nothing was written.

    ``path`` points at the offending value, e.g. ``event_data.lines[2].price``.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        self.bare_message = message
        super().__init__(f"{message} (at {path})" if path else message)


class VersionNotFound(InvalidInputError):
    """A version beyond the head of the stream was asked for (time travel).

    ``version`` is what was asked for, ``head`` the stream's version at the time.
    """

    def __init__(self, stream_id: Any, version: int, head: int) -> None:
        self.stream_id = stream_id
        self.version = version
        self.head = head
        events = f"{head} event{'s' * (head != 1)}"
        super().__init__(
            f"stream {str(stream_id)!r} has {events}: version {version} does not exist"
        )


class ConcurrencyError(EskitError, ValueError):
    """The stream's version did not match the expected version. Nothing was written."""

    def __init__(self, stream_id: Any, expected: Any, actual: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected
        self.actual_version = actual
        stream = str(stream_id)
        expected_name = getattr(expected, "name", None)
        if (expected == 0 or expected_name == "NO_STREAM") and actual > 0:
            # The usual cause: creating an aggregate under an id that is taken.
            message = (
                f"stream {stream!r} already exists (at version {actual}) but was expected to "
                "be new: its id is taken, or a concurrent writer created it first"
            )
        elif expected_name == "STREAM_EXISTS" and actual == 0:
            message = f"stream {stream!r} does not exist; it was expected to have events"
        else:
            message = (
                f"concurrent modification of stream {stream!r}: "
                f"expected version {expected}, actual version {actual}"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields, not from ``args`` (the message): it crosses process
        # boundaries (pools, workers) intact.
        return type(self), (self.stream_id, self.expected_version, self.actual_version)


class MultiStreamConcurrencyError(ConcurrencyError):
    """Streams of an ``append_many`` were not at their expected versions. Nothing was written.

    ``conflicts`` holds one :class:`ConcurrencyError` per stream that failed, in
    the order of the call, each with its ``stream_id``, ``expected_version`` and
    ``actual_version``; the error's own three attributes are the first conflict's,
    so code that catches :class:`ConcurrencyError` keeps working.
    """

    def __init__(self, conflicts: Sequence[ConcurrencyError]) -> None:
        if not conflicts:
            raise ValueError("a MultiStreamConcurrencyError needs at least one conflict")
        self.conflicts: tuple[ConcurrencyError, ...] = tuple(conflicts)
        first = self.conflicts[0]
        super().__init__(first.stream_id, first.expected_version, first.actual_version)
        # Every failed stream in the message, not only the first one.
        self.args = (
            f"{len(self.conflicts)} of the streams were not at their expected versions, "
            "nothing was written: " + "; ".join(str(c) for c in self.conflicts),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.conflicts,)


class CommandRetriesExhausted(EskitError):
    """A command conflicted on every attempt its :class:`~eskit.Retry` policy allowed.

    ``attempts`` is how many times the command ran; ``last_conflict`` the
    :class:`ConcurrencyError` of the last attempt (also the ``__cause__``). No
    attempt wrote anything: each conflict rejected its whole batch. Not a
    ``ConcurrencyError`` on purpose: a retry helper around another one does not
    multiply the attempts.
    """

    def __init__(self, attempts: int, last_conflict: ConcurrencyError) -> None:
        self.attempts = attempts
        self.last_conflict = last_conflict
        self.stream_id = last_conflict.stream_id
        tries = "its only attempt" if attempts == 1 else f"each of its {attempts} attempts"
        super().__init__(f"the command conflicted on {tries}; the last conflict: {last_conflict}")
class AppendConditionFailed(ConcurrencyError):
    """An event matching the append's condition was stored after its ``after``
    position (see :mod:`eskit.dcb`). Nothing was written: read again, decide again.

    ``condition`` is the :class:`~eskit.AppendCondition` that failed; ``stream_id``
    the stream appended to (for :meth:`~eskit.EventStore.append_many`, a tuple of
    every stream of the call); the ``expected_version`` and ``actual_version`` of a
    :class:`ConcurrencyError` are ``None`` here (no stream version was wrong).
    """

    def __init__(self, stream_id: Any, condition: Any) -> None:
        self.stream_id = stream_id
        self.condition = condition
        self.expected_version = None
        self.actual_version: int | None = None  # type: ignore[assignment]
        after = getattr(condition, "after", None)
        if isinstance(stream_id, tuple):  # an append_many: every stream of the call
            target = "append_many to streams " + ", ".join(repr(str(s)) for s in stream_id)
        else:
            target = f"append to stream {str(stream_id)!r}"
        # ConcurrencyError's own message speaks of versions: skip to ValueError's.
        ValueError.__init__(
            self,
            f"{target} refused: an event matching its condition's query was stored after "
            f"position {after}",
        )


class DuplicateEventError(EskitError):
    """An event id in the batch is already stored at another place.

    Appending the very same events again at the same place (a retried request)
    is not an error, also when they are a consecutive part of an earlier batch.
    Reusing an id for a different event or at another place, or mixing stored and
    new events in one batch, is. Nothing was written.
    """

    def __init__(self, message: str, *, event_id: Any = None) -> None:
        self.event_id = event_id
        super().__init__(message)


class BlobNotFoundError(EskitError, LookupError):
    """The blob store does not hold the blob a :class:`~eskit.blobs.BlobRef` names
    (never put there, or deleted). ``digest`` names it."""

    def __init__(self, message: str, *, digest: str = "") -> None:
        self.digest = digest
        super().__init__(message)


class BlobCollectionRefusedError(EskitError):
    """:func:`eskit.blobs.collect_blobs` met references it cannot read (sealed values,
    or archived streams whose archive was not given), so it could not tell which blobs
    are still named; it deleted nothing. The message says what to pass or do."""


class StreamArchivedError(EskitError):
    """The stream's events were moved to an archive (see :mod:`eskit.archive`):
    reading or appending is refused until it is restored, so no read ever returns
    a silently partial history. ``archive`` names where the events are, ``segment``
    the file holding them. Nothing was written."""

    def __init__(self, message: str, *, stream_id: Any = None, archive: str = "",
                 segment: str = "") -> None:
        self.stream_id = stream_id
        self.archive = archive
        self.segment = segment
        super().__init__(message)


class StreamDeletedError(EskitError):
    """The stream was deleted: hard (a tombstone; its id can never be used again)
    or soft (hidden until :meth:`~eskit.EventStore.restore_stream`). Nothing was
    written. ``hard`` says which."""

    def __init__(self, message: str, *, stream_id: Any = None, hard: bool = True) -> None:
        self.stream_id = stream_id
        self.hard = hard
        super().__init__(message)


class StreamTruncatedError(EskitError):
    """A load or replay needs events that :meth:`~eskit.EventStore.truncate_stream`
    removed: the stream now starts at ``first_version`` and no usable snapshot
    covers what came before it. Raised instead of building an aggregate from part
    of its history."""

    def __init__(self, message: str, *, stream_id: Any = None, first_version: int = 0) -> None:
        self.stream_id = stream_id
        self.first_version = first_version
        super().__init__(message)


class TruncationRefusedError(EskitError):
    """:meth:`~eskit.EventStore.truncate_stream` found no snapshot of the stream at
    or above the first version it would keep, so aggregates could no longer be
    loaded; nothing was removed. Take a snapshot first, or pass ``force=True``."""

    def __init__(self, message: str, *, stream_id: Any = None) -> None:
        self.stream_id = stream_id
        super().__init__(message)


class AggregateNotFound(EskitError, LookupError):
    """The repository found no events for the requested aggregate id."""

    def __init__(
        self, aggregate_id: Any, aggregate_class: type | None = None, *,
        reason: str = "the stream has no events",
    ) -> None:
        self.aggregate_id = aggregate_id
        self.aggregate_class = aggregate_class
        kind = aggregate_class.__name__ if aggregate_class else "aggregate"
        super().__init__(f"{kind} {str(aggregate_id)!r} not found: {reason}")

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])


class UnknownEventTypeError(EskitError):
    """An event's type has no registered class and no handler."""

    def __init__(
        self, event_type: str, *, stream_id: Any = None, version: int | None = None,
        detail: str = "",
    ) -> None:
        self.event_type = event_type
        self.stream_id = stream_id
        self.version = version
        where = ""
        if stream_id is not None:
            where = f" in stream {str(stream_id)!r}"
            if version is not None:
                where += f" at version {version}"
        super().__init__(f"unknown event type {event_type!r}{where}{detail}")


class DecodingError(EskitError):
    """A stored event could not be decoded into Python values.

    ``position`` is the stored event's global position when it is known, so a
    reader can report the event and carry on after it.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        self.position = position
        super().__init__(message)


class EventOrderError(EskitError):
    """An aggregate was given an event whose version does not follow its own."""


class StoreError(EskitError):
    """The storage backend failed."""


class NotAnEskitStoreError(StoreError):
    """The given file or database is not an eskit event store."""


class DamagedStoreError(StoreError):
    """The store's file is corrupt (SQLite reports a malformed database).

    Not the same as :class:`NotAnEskitStoreError`: the file was a SQLite
    database, and is now damaged (truncated, or overwritten in places). The
    message names the file and quotes SQLite's own report.
    """


class StoreBusyError(StoreError):
    """The store stayed locked by other writers for longer than the timeout."""


class StoreUnavailableError(StoreError):
    """The database server could not be reached, or the connection broke mid-operation.

    eskit has already retried on fresh connections where that is safe (reads, and
    appends, which are idempotent on event ids). Retrying later is safe for the
    same reasons: repeat an append with the same event ids and a stored batch is
    recognised (``duplicate=True``), never stored twice.
    """


class AppendNotFirstWriteError(StoreError):
    """PostgreSQL refused an append inside a transaction that had written before.

    eskit's readers rely on every appending transaction taking its transaction id
    at its first insert into the events table (see docs/postgres.md); an insert
    by a transaction that already holds an id is refused, and nothing is written.
    eskit's own appends always run in a transaction of their own.

    Since schema version 4 such a *late* append is allowed under READ COMMITTED
    (its events get an order key no reader can have passed; see
    docs/transactions.md); this error is then raised only under REPEATABLE READ
    or SERIALIZABLE, or on a store not yet migrated to schema 4. Through
    ``store.in_transaction(conn)`` the refused append is rolled back to its
    savepoint: the caller's transaction stays usable.
    """


class BusError(EskitError):
    """Publishing to, or consuming from, a message broker failed (see :mod:`eskit.bus`)."""


class BrokerUnavailableError(BusError):
    """The broker could not be reached, the connection broke, or it did not confirm in time.

    A relay that gets this has not moved its checkpoint past any unconfirmed
    message: it reconnects and publishes them again (at least once on the wire).
    """


class PublishRejectedError(BusError):
    """The broker refused a message (a negative confirm, an unroutable message).

    Unlike :class:`BrokerUnavailableError` this is not retried by reconnecting: the
    relay stops and reports it, so nothing is silently dropped.
    """


class InvalidMessageError(BusError):
    """A message body is not an eskit CloudEvent (bad JSON, attributes, or payload).

    A consumer dead-letters such a message at once: redelivering it cannot help.
    """


class MissingExtraError(EskitError, ImportError):
    """An optional dependency is not installed; the message says which extra to install.

    ``extra`` is the extra's name (``postgres``, ``cli``, ``metrics``, ``web``, ``fastapi``) and
    ``name``, as on any :class:`ImportError`, the module that could not be imported.
    Being an ``ImportError``, it is caught by code that guards an optional import.
    """

    def __init__(self, extra: str, feature: str, *, name: str | None = None) -> None:
        self.extra = extra
        missing = f" (no module named {name!r})" if name else ""
        super().__init__(
            f"{feature} needs the {extra} extra: pip install 'eskit[{extra}]'{missing}",
            name=name,
        )
