"""Appending to several streams at once: the checks and decisions every store shares.

No I/O here, as in :mod:`eskit.stores.arguments`: :func:`prepare_appends` checks
and encodes a whole :meth:`~eskit.EventStore.append_many` call before a store
touches its database, and :func:`resolve_many` decides, from the heads of the
streams and the events of the call already stored, whether the store may write
the call, whether the call is a retry of one that was stored, or which error to
raise. The sync and async front ends of every store call these two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from eskit.errors import (
    AppendConditionFailed,
    ConcurrencyError,
    DuplicateEventError,
    EncodingError,
    InvalidInputError,
    MultiStreamConcurrencyError,
)
from eskit.events import Event, EventRegistry, StreamId
from eskit.stores.arguments import (
    check_expected,
    expected_matches,
    prepare_batch,
    resolve_conflict,
    stream_key,
)
from eskit.stores.model import AppendResult, Expected, PendingEvent, StreamAppend

__all__: list[str] = []


class PreparedAppend:
    """One stream of a checked ``append_many`` call (internal)."""

    __slots__ = ("batch", "expected", "stream", "stream_id")

    def __init__(
        self, stream_id: StreamId, stream: str, expected: Expected, batch: list[PendingEvent]
    ) -> None:
        self.stream_id = stream_id
        self.stream = stream
        self.expected = expected
        self.batch = batch


def prepare_appends(
    appends: object, *, registry: EventRegistry, max_event_bytes: int, encode_data: bool = True
) -> list[PreparedAppend]:
    """Check and encode every stream's batch of a call. Raises before anything is written.

    Refused (:class:`~eskit.InvalidInputError`): anything but a non-empty
    sequence of :class:`~eskit.StreamAppend`, a stream named twice (its two
    batches would need an order the call does not state), an event id used twice
    anywhere in the call, and whatever a single append refuses.
    """
    if isinstance(appends, str | bytes | Mapping) or not isinstance(appends, Sequence):
        raise InvalidInputError(
            f"appends must be a list of StreamAppend, got {type(appends).__name__}"
        )
    if not appends:
        raise InvalidInputError("append_many needs at least one StreamAppend")
    prepared: list[PreparedAppend] = []
    streams: set[str] = set()
    ids: dict[int, str] = {}
    for index, item in enumerate(appends):
        if not isinstance(item, StreamAppend):
            raise InvalidInputError(
                f"appends[{index}] must be a StreamAppend, got {type(item).__name__}"
            )
        try:
            stream = stream_key(item.stream_id)
            expected = check_expected(item.expected_version)
            batch = prepare_batch(
                stream, item.events, registry=registry, max_event_bytes=max_event_bytes,
                encode_data=encode_data,
            )
        except EncodingError as exc:
            raise EncodingError(f"appends[{index}]: {exc.bare_message}", path=exc.path) from None
        except InvalidInputError as exc:
            raise InvalidInputError(f"appends[{index}]: {exc}") from None
        if stream in streams:
            raise InvalidInputError(
                f"stream {stream!r} is named twice in one append_many: put all of its "
                "events in one StreamAppend"
            )
        streams.add(stream)
        for p in batch:
            if (other := ids.get(p.event_id.int)) is not None:
                raise InvalidInputError(
                    f"event id {p.event_id} appears twice in one append_many "
                    f"(streams {other!r} and {stream!r})"
                )
            ids[p.event_id.int] = stream
        prepared.append(PreparedAppend(item.stream_id, stream, expected, batch))
    return prepared


def all_event_ids(prepared: Sequence[PreparedAppend]) -> list[UUID]:
    return [p.event_id for a in prepared for p in a.batch]


def observed(prepared: Sequence[PreparedAppend]) -> tuple[str, list[PendingEvent]]:
    """What an observer's append scope takes for a whole call: the streams' names
    (comma-separated) and every event of the call."""
    return ",".join(a.stream for a in prepared), [p for a in prepared for p in a.batch]


def resolve_many(
    prepared: Sequence[PreparedAppend],
    heads: Mapping[str, int],
    found: Mapping[UUID, Event],
) -> list[AppendResult] | None:
    """Decide a call from the streams' ``heads`` and the call's events already stored.

    ``heads`` maps stream keys to versions (a stream left out is at 0); ``found``
    maps the call's event ids that are stored to their stored events. Returns
    ``None`` when every stream may be written as asked. Returns the results, all
    with ``duplicate=True``, when the whole call is stored already (a retry).
    Raises :class:`~eskit.MultiStreamConcurrencyError` naming every stream that is
    not at its expected version, :class:`~eskit.DuplicateEventError` for an id
    reused elsewhere, or for a call of which some streams are stored and others
    are not (a retry repeats the whole call).
    """
    conflicts: list[ConcurrencyError] = []
    retried: list[AppendResult] = []
    new: list[PreparedAppend] = []
    for a in prepared:
        head = heads.get(a.stream, 0)
        mine = {p.event_id: e for p in a.batch if (e := found.get(p.event_id)) is not None}
        if not mine and expected_matches(a.expected, head):
            new.append(a)
            continue
        try:
            # A stream's own decision is a single append's: a retry, a duplicate
            # error or a conflict.
            retried.append(resolve_conflict(a.stream_id, a.stream, a.expected, head, a.batch,
                                            mine))
        except ConcurrencyError as exc:
            conflicts.append(exc)
    if conflicts:
        raise MultiStreamConcurrencyError(conflicts)
    if not retried:
        return None
    if new:
        raise DuplicateEventError(
            f"the events for stream {retried[0].events[0].aggregate_id!s} are stored "
            f"already but those for {new[0].stream!r} are not: a retried append_many "
            "must repeat the whole call, whose streams are stored together or not at all",
            event_id=retried[0].events[0].event_id,
        )
    return retried


def recorded(a: PreparedAppend, versions_positions: Sequence[tuple[int, int]]) -> AppendResult:
    """The result for one stream, from the ``(version, position)`` of each stored event."""
    events = tuple(
        p.recorded(a.stream_id, version, position)
        for p, (version, position) in zip(a.batch, versions_positions, strict=True)
    )
    return AppendResult(a.stream_id, events[-1].version, events[-1].position or 0, events)


def condition_failed(prepared: Sequence[PreparedAppend], condition: Any) -> AppendConditionFailed:
    """The refusal of an ``append_many`` whose condition did not hold: names every stream."""
    return AppendConditionFailed(tuple(a.stream_id for a in prepared), condition)
