"""Snapshots: an aggregate's state at one version, so that loading need not replay it all.

A snapshot is a cache of what replaying the stream up to its version gives, never
a source of truth. The repository loads the newest snapshot at or below the
version it wants and replays only the events after it; anything that makes a
snapshot doubtful sends it back to a replay from the first event:

* the stored state cannot be decoded, or is not a JSON object;
* it was written for another :attr:`~eskit.Aggregate.state_version` of the class
  and no :func:`snapshot_upcaster` chain leads to today's;
* its version is above the stream's head, or the event stored at its version is
  not the one it was taken after (``event_id``): a snapshot describes one exact
  history, so snapshot plus tail always equals a full replay;
* restoring it fails (the default restore refuses a snapshot that lacks an
  attribute the class now has).

Each such case is logged as a warning on the ``eskit.snapshots`` logger and the
aggregate is rebuilt from its events; the next snapshot replaces the bad one.

Snapshots are taken after the events they follow are committed, by the
repository, according to a :class:`SnapshotPolicy`; taking one never raises
into the command that triggered it, and the next save or load tries again. A
failure shows in :data:`snapshot_failures` (counters per aggregate type, and
the last cause) and is logged once as a warning, not on every save: see
:class:`SnapshotFailures`. What is *not* guaranteed: that a snapshot exists for any
given version, or that one is taken at exactly every N-th version (concurrent
writers, failures and retries move the points); a snapshot store is not a
backup, and deleting every snapshot is always safe.

This module is pure: the records, the policies, the state upcasters, the
snapshot store contract and the functions that turn an aggregate into a
snapshot and back. The stores live beside the event stores
(:mod:`eskit.stores.memory_snapshots`, :mod:`eskit.stores.sqlite_snapshots`,
:mod:`eskit.stores.postgres_snapshots`, and their :mod:`eskit.aio` twins).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eskit import codec
from eskit.aggregate import Aggregate
from eskit.errors import DecodingError, InvalidInputError, StoreError
from eskit.events import Event, StreamId, check_name, utc_now
from eskit.stores.arguments import check_version_arg, stream_key
from eskit.stores.base import EventStore
from eskit.stores.model import MAX_VERSION

__all__ = [
    "DEFAULT_KEEP",
    "EveryNEvents",
    "NoSnapshots",
    "OnDemand",
    "PruneProgress",
    "Snapshot",
    "SnapshotFailures",
    "SnapshotPolicy",
    "SnapshotStore",
    "aggregate_type_name",
    "check_keep",
    "snapshot_failures",
    "snapshot_upcaster",
]

logger = logging.getLogger("eskit.snapshots")

A = TypeVar("A", bound=Aggregate)
State = dict[str, Any]
Upcaster = Callable[[State], State]
U = TypeVar("U", bound=Upcaster)

MAX_STATE_VERSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of one aggregate after the event at ``version``, as stored."""

    aggregate_id: StreamId
    aggregate_type: str
    """The aggregate class's stable name (:func:`aggregate_type_name`)."""
    version: int
    """The version of the last event folded into ``state``."""
    event_id: UUID
    """The id of that event: the snapshot belongs to exactly the history that has it."""
    state_version: int
    """The class's :attr:`~eskit.Aggregate.state_version` when the snapshot was taken."""
    state: bytes
    """The state, JSON written by :mod:`eskit.codec`."""
    taken_at: datetime
    """When the snapshot was taken (UTC, informative)."""


# --------------------------------------------------------------------------- policies


class SnapshotPolicy(ABC):
    """When the repository takes snapshots of an aggregate class, and whether it reads them."""

    loads: ClassVar[bool] = True
    """Whether loading starts from a snapshot when one is there."""
    on_demand: ClassVar[bool] = True
    """Whether :meth:`~eskit.Repository.take_snapshot` may take one."""

    @abstractmethod
    def due(self, version: int, since: int) -> bool:
        """Whether to snapshot an aggregate now at ``version``.

        ``since`` is the version of its newest snapshot the repository knows
        of, ``0`` for none. Asked after every save and after every load of the
        current state; a snapshot that failed to be written leaves ``since``
        where it was, so the next call asks again.
        """


@dataclass(frozen=True)
class EveryNEvents(SnapshotPolicy):
    """A snapshot whenever ``n`` or more events have been added since the last one.

    Loading such an aggregate replays fewer than about ``n`` events.
    """

    n: int

    def __post_init__(self) -> None:
        if type(self.n) is not int or self.n < 1:
            raise InvalidInputError(f"EveryNEvents needs an int n >= 1, got {self.n!r}")

    def due(self, version: int, since: int) -> bool:
        return version - since >= self.n


@dataclass(frozen=True)
class OnDemand(SnapshotPolicy):
    """Snapshots only when :meth:`~eskit.Repository.take_snapshot` asks; they are read."""

    def due(self, version: int, since: int) -> bool:
        return False


@dataclass(frozen=True)
class NoSnapshots(SnapshotPolicy):
    """No snapshots at all: none is taken, none is read; loading always replays."""

    loads: ClassVar[bool] = False
    on_demand: ClassVar[bool] = False

    def due(self, version: int, since: int) -> bool:
        return False


DEFAULT_POLICY = EveryNEvents(100)

PolicyChoice = SnapshotPolicy | Mapping[type[Aggregate], SnapshotPolicy]
"""One policy for every class, or a mapping from aggregate classes to policies."""


class Policies:
    """A policy choice, checked, resolving the policy of each class (internal).

    A mapping is searched along each class's MRO, so a policy given for a base
    class (``Aggregate`` itself, say) covers its subclasses; a class the mapping
    does not cover gets :class:`OnDemand`.
    """

    def __init__(self, choice: PolicyChoice) -> None:
        if isinstance(choice, SnapshotPolicy):
            self._single: SnapshotPolicy | None = choice
            self._mapping: dict[type, SnapshotPolicy] = {}
            return
        if not isinstance(choice, Mapping):
            raise InvalidInputError(
                f"snapshot_policy must be a SnapshotPolicy or a mapping of aggregate classes "
                f"to policies, got {type(choice).__name__}"
            )
        for cls, policy in choice.items():
            if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
                raise InvalidInputError(f"snapshot_policy keys must be Aggregate classes: {cls!r}")
            if not isinstance(policy, SnapshotPolicy):
                raise InvalidInputError(
                    f"the snapshot policy for {cls.__name__} must be a SnapshotPolicy, "
                    f"got {type(policy).__name__}"
                )
        self._single = None
        self._mapping = dict(choice)

    def for_class(self, cls: type) -> SnapshotPolicy:
        if self._single is not None:
            return self._single
        for klass in cls.__mro__:
            policy = self._mapping.get(klass)
            if policy is not None:
                return policy
        return _ON_DEMAND


_ON_DEMAND = OnDemand()


# --------------------------------------------------------------------------- names and upcasters


def aggregate_type_name(cls: type) -> str:
    """The name snapshots of ``cls`` are stored under.

    The class's own :attr:`~eskit.Aggregate.snapshot_name` (set in its body,
    not inherited), else ``"module:QualName"``.
    """
    name = vars(cls).get("snapshot_name")
    if name is None:
        return f"{cls.__module__}:{cls.__qualname__}"
    return check_type_name(name)


MAX_TYPE_NAME_BYTES = 512
"""The longest aggregate type name, in bytes of UTF-8.

A snapshot's key is (stream id, type name, version): with a stream id at its
maximum (:data:`~eskit.events.MAX_NAME_BYTES`, 2,048 bytes), 512 more bytes of
incompressible text still fit PostgreSQL's btree row limit (about 2,700 bytes)."""


def check_type_name(name: object) -> str:
    """An aggregate type name: the rules of names, at most :data:`MAX_TYPE_NAME_BYTES`."""
    name = check_name("an aggregate type name", name)
    if len(name) > MAX_TYPE_NAME_BYTES and len(name.encode()) > MAX_TYPE_NAME_BYTES:
        raise InvalidInputError(
            f"an aggregate type name must be at most {MAX_TYPE_NAME_BYTES} bytes of UTF-8"
        )
    return name


def state_version_of(cls: type) -> int:
    version = getattr(cls, "state_version", 1)
    if type(version) is not int or not 1 <= version <= MAX_STATE_VERSION:
        raise InvalidInputError(
            f"{cls.__name__}.state_version must be an int >= 1, got {version!r}"
        )
    return version


_upcasters_lock = threading.Lock()
_upcasters: dict[tuple[type, int], Upcaster] = {}


def snapshot_upcaster(aggregate_class: type[Aggregate], *, from_version: int) -> Callable[[U], U]:
    """Register a function taking ``aggregate_class``'s snapshot state one version up.

    The decorated function receives the state dict of a snapshot taken at
    ``state_version == from_version`` and returns the state for
    ``from_version + 1``. Loading chains them up to today's
    :attr:`~eskit.Aggregate.state_version`; a snapshot whose chain has a gap is
    ignored (the aggregate is rebuilt from its events). Upcasters registered
    for a class also serve its subclasses that have none of their own::

        @snapshot_upcaster(Account, from_version=1)
        def _add_currency(state):
            return {**state, "currency": "EUR"}
    """
    if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, Aggregate)):
        raise InvalidInputError(
            f"snapshot upcasters belong to Aggregate classes, not {aggregate_class!r}"
        )
    if type(from_version) is not int or not 1 <= from_version < MAX_STATE_VERSION:
        raise InvalidInputError(f"from_version must be an int >= 1, got {from_version!r}")

    def register(function: U) -> U:
        if not callable(function):
            raise InvalidInputError(f"a snapshot upcaster must be callable, not {function!r}")
        key = (aggregate_class, from_version)
        with _upcasters_lock:
            other = _upcasters.get(key)
            if other is not None and not _same_function(other, function):
                raise InvalidInputError(
                    f"{aggregate_class.__name__} already has a snapshot upcaster from state "
                    f"version {from_version}: {other.__qualname__}"
                )
            _upcasters[key] = function
        return function

    return register


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # A module imported twice defines the "same" function again; only that may replace it.
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _upcaster_for(cls: type, from_version: int) -> Upcaster | None:
    for klass in cls.__mro__:
        function = _upcasters.get((klass, from_version))
        if function is not None:
            return function
    return None


# --------------------------------------------------------------------------- failures


class SnapshotFailures:
    """The snapshots the repositories of this process could not take, per aggregate type.

    A snapshot that fails never fails the save that asked for it, so this is
    where the failure shows. The first failure of an aggregate class with a
    given cause (the exception's type) is logged as a WARNING on
    ``eskit.snapshots``, with the cause (and the traceback when a user hook
    raised); repeats are logged at DEBUG, until a snapshot of that class is
    taken again, after which a new failure warns again. The counters only grow
    (:meth:`reset` clears them, for tests). Thread-safe; one instance,
    :data:`snapshot_failures`, serves every sync and async repository.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last: dict[str, str] = {}
        self._warned: set[tuple[str, str]] = set()

    @property
    def total(self) -> int:
        """Failed snapshots since the process started (or the last :meth:`reset`)."""
        return sum(self._counts.values())

    def count(self, aggregate_class: type | str) -> int:
        """Failed snapshots of one aggregate class (or its :func:`aggregate_type_name`)."""
        return self._counts.get(_type_key(aggregate_class), 0)

    def last_error(self, aggregate_class: type | str) -> str | None:
        """The cause of the class's latest failure, as text; ``None`` if it never failed."""
        return self._last.get(_type_key(aggregate_class))

    def as_dict(self) -> dict[str, int]:
        """Failure counts by aggregate type name (a copy), e.g. to export as a metric."""
        return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._last.clear()
            self._warned.clear()

    def record(self, aggregate: Aggregate, exc: BaseException, *, traceback: bool) -> None:
        """Count a failure of taking ``aggregate``'s snapshot and log it if it is new."""
        cls = type(aggregate)
        key = _type_key(cls)
        cause = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._last[key] = cause
            kind = (key, type(exc).__qualname__)
            first = kind not in self._warned
            self._warned.add(kind)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "could not snapshot %s %r at version %d: %s; the next save or load tries again"
            "%s",
            cls.__name__, str(aggregate.aggregate_id), aggregate.version, exc,
            " (repeats of this failure are logged at DEBUG until a snapshot of this class "
            "succeeds; counts in eskit.snapshots.snapshot_failures)" if first else "",
            exc_info=exc if traceback else None,
        )

    def succeeded(self, aggregate_class: type) -> None:
        """A snapshot of the class was taken: its next failure warns again."""
        if self._warned:
            key = _type_key(aggregate_class)
            with self._lock:
                self._warned = {kind for kind in self._warned if kind[0] != key}


def _type_key(aggregate_class: type | str) -> str:
    return aggregate_class if isinstance(aggregate_class, str) else aggregate_type_name(
        aggregate_class
    )


snapshot_failures = SnapshotFailures()
"""The process's :class:`SnapshotFailures`."""


# --------------------------------------------------------------------------- taking and restoring


def capture(aggregate: Aggregate, event_id: UUID) -> Snapshot:
    """A snapshot of ``aggregate`` as it is, after the event ``event_id`` at its version.

    Raises if the state cannot be encoded (``EncodingError``) or a hook fails.
    """
    cls = type(aggregate)
    check_saved(aggregate)
    state = aggregate.snapshot_state()
    if not isinstance(state, Mapping):
        raise InvalidInputError(
            f"{cls.__name__}.snapshot_state() must return a dict, got {type(state).__name__}"
        )
    return Snapshot(
        aggregate_id=aggregate.aggregate_id,
        aggregate_type=aggregate_type_name(cls),
        version=aggregate.version,
        event_id=event_id,
        state_version=state_version_of(cls),
        # Naive datetimes are the aggregate's own business here: the state is a cache
        # of what replaying gives, and round-trips them as they are.
        state=codec.encode(dict(state), naive_datetimes=True),
        taken_at=utc_now(),
    )


def check_saved(aggregate: Aggregate) -> None:
    """Only stored state can be snapshotted: refuse an aggregate with unsaved events."""
    if aggregate.get_uncommitted_events():
        raise InvalidInputError(
            f"{type(aggregate).__name__} {str(aggregate.aggregate_id)!r} has unsaved events: "
            "only stored state can be snapshotted"
        )


def decode_state(cls: type, snapshot: Snapshot, max_version: int | None) -> State:
    """The snapshot's state, upcast to today's state version of ``cls``.

    Raises :class:`~eskit.DecodingError`, saying why, for a snapshot that must
    not be used.
    """
    if snapshot.aggregate_type != aggregate_type_name(cls):
        raise DecodingError(f"it belongs to aggregate type {snapshot.aggregate_type!r}")
    if type(snapshot.version) is not int or snapshot.version < 1 or (
        max_version is not None and snapshot.version > max_version
    ):
        raise DecodingError(f"its version {snapshot.version!r} is not the one asked for")
    current = state_version_of(cls)
    stored = snapshot.state_version
    if type(stored) is not int or stored < 1:
        raise DecodingError(f"its state version {stored!r} is not a positive int")
    if stored > current:
        raise DecodingError(
            f"its state version {stored} is newer than {cls.__name__}'s ({current})"
        )
    state = codec.decode(snapshot.state)
    if not isinstance(state, dict):
        raise DecodingError(f"its state is a JSON {type(state).__name__}, not an object")
    for version in range(stored, current):
        upcast = _upcaster_for(cls, version)
        if upcast is None:
            raise DecodingError(
                f"its state version is {stored}, {cls.__name__} is at {current}, and no "
                f"snapshot upcaster goes from {version} to {version + 1}"
            )
        try:
            state = upcast(state)
        except Exception as exc:
            raise DecodingError(
                f"the snapshot upcaster from state version {version} failed: {exc!r}"
            ) from exc
        if not isinstance(state, dict):
            raise DecodingError(
                f"the snapshot upcaster from state version {version} returned a "
                f"{type(state).__name__}, not a dict"
            )
    return state


def restore(cls: type[A], aggregate_id: StreamId, snapshot: Snapshot, state: State) -> A:
    """A fresh ``cls`` holding ``state``, at the snapshot's version."""
    aggregate = cls.create_blank(aggregate_id)
    aggregate.restore_snapshot(state)
    aggregate.version = snapshot.version
    return aggregate


# --------------------------------------------------------------------------- the store contract


def check_snapshot(snapshot: object) -> tuple[str, Snapshot]:
    """Validate a snapshot before it is stored; return its stream key and it, in UTC."""
    if not isinstance(snapshot, Snapshot):
        raise InvalidInputError(f"expected a Snapshot, got {type(snapshot).__name__}")
    stream = stream_key(snapshot.aggregate_id)
    check_type_name(snapshot.aggregate_type)
    check_version_arg("snapshot version", snapshot.version)
    if snapshot.version < 1:
        raise InvalidInputError("a snapshot's version must be >= 1: it follows an event")
    if not isinstance(snapshot.event_id, UUID):
        raise InvalidInputError(
            f"a snapshot's event_id must be a UUID, got {type(snapshot.event_id).__name__}"
        )
    if type(snapshot.state_version) is not int or not (
        1 <= snapshot.state_version <= MAX_STATE_VERSION
    ):
        raise InvalidInputError(
            f"a snapshot's state_version must be an int >= 1, got {snapshot.state_version!r}"
        )
    if type(snapshot.state) is not bytes:
        raise InvalidInputError(
            f"a snapshot's state must be bytes, got {type(snapshot.state).__name__}"
        )
    ts = snapshot.taken_at
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidInputError("a snapshot's taken_at must be a timezone-aware datetime")
    if ts.tzinfo is not UTC:
        try:
            snapshot = replace(snapshot, taken_at=ts.astimezone(UTC))
        except OverflowError:  # an aware time near year 1 or 9999 with no UTC equivalent
            raise InvalidInputError(
                f"a snapshot's taken_at {ts.isoformat()} is out of range once converted to UTC"
            ) from None
    return stream, snapshot


def check_latest_args(aggregate_id: object, aggregate_type: object, max_version: object) -> str:
    stream = stream_key(aggregate_id)
    check_type_name(aggregate_type)
    check_version_arg("max_version", max_version, allow_none=True)
    return stream


def snapshot_from_row(
    aggregate_id: StreamId, aggregate_type: str, version: object, event_id: object,
    state_version: object, state: object, taken_at: object,
) -> Snapshot:
    """A snapshot from stored columns; :class:`~eskit.DecodingError` for a malformed row."""
    if type(version) is not int or not 1 <= version <= MAX_VERSION:
        raise DecodingError(f"stored snapshot has a bad version {version!r}")
    if type(state_version) is not int:
        raise DecodingError(f"stored snapshot has a bad state version {state_version!r}")
    if isinstance(event_id, bytes | memoryview) and len(event_id) == 16:
        event_id = UUID(bytes=bytes(event_id))
    if not isinstance(event_id, UUID):
        raise DecodingError(f"stored snapshot has a bad event id {event_id!r}")
    if isinstance(state, str):
        state = state.encode()
    if type(state) is not bytes:
        raise DecodingError(f"stored snapshot state is a {type(state).__name__}, not text")
    if not isinstance(taken_at, datetime) or taken_at.tzinfo is None:
        raise DecodingError(f"stored snapshot has a bad time {taken_at!r}")
    return Snapshot(
        aggregate_id, aggregate_type, version, event_id, state_version, state,
        taken_at.astimezone(UTC),
    )


def no_event_there(snapshot: Snapshot) -> InvalidInputError:
    return InvalidInputError(
        f"no event {snapshot.event_id} at version {snapshot.version} of stream "
        f"{str(snapshot.aggregate_id)!r}: a snapshot must follow a stored event"
    )


DEFAULT_KEEP = 3
"""Snapshots per aggregate (and type) that :meth:`SnapshotStore.prune` keeps by default."""

DEFAULT_PRUNE_BATCH = 500
"""Aggregates one pruning transaction covers, by default."""

AggregateKey = tuple[str, str]
"""(stream key, aggregate type): the aggregate whose snapshots pruning counts."""


@dataclass(frozen=True, slots=True)
class PruneProgress:
    """How far a pruning pass has got: handed to its ``progress`` callback after each batch."""

    aggregates: int
    """Aggregates (stream and type) looked at so far."""
    deleted: int
    """Snapshots deleted so far."""
    total_aggregates: int | None = None
    """Aggregates with snapshots when the pass started (``None``: not counted)."""


def check_keep(keep: object, *, minimum: int = 0, what: str = "keep") -> int:
    """A number of snapshots to keep per aggregate: an int >= ``minimum``."""
    if type(keep) is not int or not minimum <= keep <= MAX_VERSION:
        raise InvalidInputError(f"{what} must be an int >= {minimum}, got {keep!r}")
    return keep


def check_batch_size(batch_size: object) -> int:
    if type(batch_size) is not int or not 1 <= batch_size <= 1_000_000:
        raise InvalidInputError(f"batch_size must be an int in [1, 1000000], got {batch_size!r}")
    return batch_size


def prune_batches(
    keys_after: Callable[[AggregateKey | None, int], list[AggregateKey]],
    prune_keys: Callable[[list[AggregateKey], int], int],
    keep: int, batch_size: int, progress: Callable[[PruneProgress], object] | None,
    total: int | None,
) -> int:
    """The pruning loop every store shares: aggregates in key order, one batch at a time.

    ``keys_after(after, limit)`` lists the next aggregates with snapshots after
    ``after``; ``prune_keys(keys, keep)`` prunes them in one transaction and
    returns how many it deleted. A key seen once is never revisited, so the pass
    ends even while snapshots are being saved; aggregates that get their first
    snapshot behind the cursor are left for the next pass (or their own save).
    """
    after: AggregateKey | None = None
    seen = deleted = 0
    while True:
        keys = keys_after(after, batch_size)
        if not keys:
            return deleted
        deleted += prune_keys(keys, keep)
        seen += len(keys)
        after = keys[-1]
        if progress is not None:
            progress(PruneProgress(seen, deleted, total))


class SnapshotStore(ABC):
    """Where snapshots are kept: beside an event store, in the same database.

    ``event_store`` is the store it sits beside (``None`` if it has none).

    Guarantees every snapshot store gives (checked by
    :class:`eskit.testing.SnapshotStoreContract`):

    * :meth:`save` stores a snapshot only if the event it follows is stored:
      the stream has an event with the snapshot's ``event_id`` at its
      ``version``. Otherwise it raises :class:`~eskit.InvalidInputError` and
      stores nothing, so no snapshot is ever above its stream's head.
    * Saving again at the same (aggregate, type, version) replaces the snapshot.
    * :meth:`latest` returns the snapshot with the highest version at or below
      ``max_version``, byte for byte as saved, or ``None``.

    * With ``keep=N`` given to the store, each :meth:`save` also deletes, in
      the same transaction, that aggregate's snapshots (of that type) below
      its N newest; :meth:`prune` does the same for every aggregate. Snapshots
      of other aggregates and other types are never touched. A snapshot saved
      below an aggregate's N newest is deleted at once.

    Not guaranteed: that a saved snapshot is kept (snapshots are a cache;
    deleting them is always safe) or that the stored state is valid (rows can be
    damaged); the repository checks every snapshot before using it. A malformed
    row makes :meth:`latest` raise :class:`~eskit.DecodingError`.
    """

    event_store: EventStore | None = None
    keep: int | None = None
    """Snapshots per aggregate each save keeps (``None``: saves never prune)."""

    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one at the same version."""
        stream, snapshot = check_snapshot(snapshot)
        self._save(stream, snapshot)

    def latest(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of the aggregate at or below ``max_version`` (``None``: any)."""
        stream = check_latest_args(aggregate_id, aggregate_type, max_version)
        return self._latest(aggregate_id, stream, aggregate_type, max_version)

    def latest_with_tail(
        self, aggregate_id: StreamId, aggregate_type: str, max_version: int | None = None, *,
        events: EventStore,
    ) -> tuple[Snapshot | None, list[Event]]:
        """The newest snapshot at or below ``max_version``, and the events to replay with it.

        With a snapshot: the stream's events from the snapshot's own version (its
        event first, so the caller can check it) up to ``max_version``. Without
        one: the stream's events from the first. ``events`` is the event store to
        read; when it is the store this snapshot store sits beside, a backend may
        answer both in one statement (PostgreSQL does, saving a round trip),
        otherwise it is two calls.
        """
        stream = check_latest_args(aggregate_id, aggregate_type, max_version)
        if events is self.event_store:
            found = self._latest_with_tail(aggregate_id, stream, aggregate_type, max_version)
            if found is not None:
                return found
        snapshot = self._latest(aggregate_id, stream, aggregate_type, max_version)
        start = 0 if snapshot is None else snapshot.version - 1
        return snapshot, events.read_stream(aggregate_id, start, max_version)

    def prune(
        self, keep: int = DEFAULT_KEEP, *, batch_size: int = DEFAULT_PRUNE_BATCH,
        progress: Callable[[PruneProgress], object] | None = None,
    ) -> int:
        """Delete every aggregate's snapshots below its ``keep`` newest; return how many.

        Per (aggregate, type), in key order, ``batch_size`` aggregates per
        transaction, so it can run beside live saves and loads and be
        interrupted at any point (what was committed stays pruned; rerun to
        finish). ``keep=0`` deletes every snapshot: loading then replays from
        the first event. ``progress`` is called after each batch (with it, the
        aggregates are counted first, for its total: one more read of the
        snapshot index). Bad arguments raise :class:`~eskit.InvalidInputError`
        before any I/O.
        """
        keep = check_keep(keep)
        batch_size = check_batch_size(batch_size)
        total = self._count_aggregates() if progress is not None else None
        return prune_batches(self._aggregates_after, self._prune_aggregates, keep, batch_size,
                             progress, total)

    def close(self) -> None:  # noqa: B027 - most snapshot stores borrow the event store's connections
        """Release what the snapshot store holds (not the event store's connections)."""

    def _aggregates_after(self, after: AggregateKey | None, limit: int) -> list[AggregateKey]:
        """Up to ``limit`` aggregates with snapshots, in key order, after ``after``."""
        raise StoreError(f"{type(self).__name__} does not support pruning")

    def _prune_aggregates(self, keys: list[AggregateKey], keep: int) -> int:
        """Prune ``keys`` to their ``keep`` newest snapshots, in one transaction."""
        raise StoreError(f"{type(self).__name__} does not support pruning")

    def _count_aggregates(self) -> int | None:
        return None

    def _latest_with_tail(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> tuple[Snapshot | None, list[Event]] | None:
        """``latest_with_tail`` in one round trip, or ``None`` to make it two calls."""
        return None

    @abstractmethod
    def _save(self, stream: str, snapshot: Snapshot) -> None: ...

    @abstractmethod
    def _latest(
        self, aggregate_id: StreamId, stream: str, aggregate_type: str, max_version: int | None
    ) -> Snapshot | None: ...
