"""What changed in an aggregate's state between two versions or two moments.

:func:`state_diff` loads an aggregate at two points of its history, each a version
(``0`` is the blank state before the first event) or a timezone-aware ``datetime``
(the state after the last event *recorded* at or before it), and compares the two
states field by field. :func:`state_diff_async` does the same on an
:class:`~eskit.aio.AsyncRepository`; both run one plan (see :mod:`eskit.loading`),
so they decide alike.

A state is what :meth:`Aggregate.snapshot_state <eskit.Aggregate.snapshot_state>`
returns: by default every public instance attribute, so a class that overrides it
to keep something else is compared on that. :func:`diff_states` compares any two
such mappings and is what ``eskit diff`` uses on generic, class-less states too.

Guaranteed: each point is loaded exactly as ``repository.get(..., version=)`` /
``as_of=`` loads it (snapshots included), and a bound beyond the head raises
:class:`~eskit.VersionNotFound` before anything is loaded. Not guaranteed: that the
two loads see one snapshot of a stream that is being written to; pass versions,
not times, for a diff that cannot move.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from eskit import codec, loading
from eskit.aggregate import Aggregate
from eskit.errors import AggregateNotFound, EncodingError, InvalidInputError, VersionNotFound
from eskit.events import StreamId
from eskit.stores.arguments import check_as_of, check_version_arg

if TYPE_CHECKING:
    from eskit.aio.repository import AsyncRepository
    from eskit.repository import Repository

__all__ = ["FieldChange", "StateDiff", "diff_states", "state_diff", "state_diff_async"]

A = TypeVar("A", bound=Aggregate)

Point = int | datetime
"""A point in a stream's history: a version, or a moment."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""The ``before`` of an added field and the ``after`` of a removed one."""


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field whose value differs between two states."""

    name: str
    kind: Literal["added", "removed", "changed"]
    before: Any
    """The old value; :data:`MISSING` if the field was added."""
    after: Any
    """The new value; :data:`MISSING` if the field was removed."""


@dataclass(frozen=True, slots=True)
class StateDiff(Generic[A]):
    """Two states of one aggregate and the fields that differ between them."""

    before: A
    """The state at the first point (a blank instance at version 0)."""
    after: A
    """The state at the second point."""
    changes: tuple[FieldChange, ...]
    """The fields added, removed or changed, in the order the states list them."""

    @property
    def before_version(self) -> int:
        return self.before.version

    @property
    def after_version(self) -> int:
        return self.after.version

    def __bool__(self) -> bool:
        """True if any field changed."""
        return bool(self.changes)


def diff_states(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """The fields whose values differ between two states, in the order they appear.

    Values are compared by their canonical encoding where the codec can encode them
    (so ``Decimal('NaN')`` equals itself and ``1`` differs from ``True``), else by ``==``.
    """
    changes: list[FieldChange] = []
    for name in {**before, **after}:
        if name not in before:
            changes.append(FieldChange(name, "added", MISSING, after[name]))
        elif name not in after:
            changes.append(FieldChange(name, "removed", before[name], MISSING))
        elif not _same(before[name], after[name]):
            changes.append(FieldChange(name, "changed", before[name], after[name]))
    return tuple(changes)


def _same(a: Any, b: Any) -> bool:
    try:
        return codec.encode(a) == codec.encode(b)
    except EncodingError:  # not a codec value (an aggregate may hold anything)
        return bool(a == b)


def state_diff(
    repository: Repository,
    aggregate_id: StreamId,
    aggregate_class: type[A],
    before: Point,
    after: Point,
) -> StateDiff[A]:
    """The aggregate's state at ``before`` and at ``after``, and what changed between.

    Each point is a version (``0``: the blank state before the first event) or a
    timezone-aware ``datetime`` (a moment before the first event is version 0).
    Either order works. Raises :class:`~eskit.AggregateNotFound` for a stream with no
    events, :class:`~eskit.VersionNotFound` for a version beyond the head.
    """
    points = _check_points(before, after)
    return repository._run(_plan(aggregate_id, aggregate_class, points,
                                 repository._policy(aggregate_class)))


async def state_diff_async(
    repository: AsyncRepository,
    aggregate_id: StreamId,
    aggregate_class: type[A],
    before: Point,
    after: Point,
) -> StateDiff[A]:
    """:func:`state_diff` on an :class:`~eskit.aio.AsyncRepository`."""
    points = _check_points(before, after)
    return await repository._run(_plan(aggregate_id, aggregate_class, points,
                                       repository._policy(aggregate_class)))


def _check_points(*points: object) -> tuple[Point, ...]:
    checked: list[Point] = []
    for name, point in zip(("before", "after"), points, strict=True):
        if isinstance(point, datetime):
            checked.append(check_as_of(point))
        elif isinstance(point, int) and not isinstance(point, bool):
            check_version_arg(name, point)
            checked.append(point)
        else:
            raise InvalidInputError(
                f"{name} must be a version (an int) or a datetime, not {type(point).__name__}"
            )
    return tuple(checked)


def _plan(
    aggregate_id: StreamId, aggregate_class: type[A], points: Iterable[Point],
    policy: Any,
) -> loading.Plan[StateDiff[A]]:
    head: int = yield loading.HeadVersion(aggregate_id)
    if head == 0:
        raise AggregateNotFound(aggregate_id, aggregate_class)
    versions = []
    for point in points:
        if isinstance(point, datetime):
            version: int = yield loading.FindVersion(aggregate_id, point)
        else:
            version = point
        if version > head:  # checked for both before either is loaded
            raise VersionNotFound(aggregate_id, version, head)
        versions.append(version)
    states = []
    for version in versions:
        if version == 0:
            states.append(aggregate_class.create_blank(aggregate_id))
        else:
            states.append((yield from loading.get(
                aggregate_id, aggregate_class, version=version, as_of=None, cached=None,
                policy=policy,
            )))
    first, second = states
    return StateDiff(first, second, diff_states(first.snapshot_state(), second.snapshot_state()))
