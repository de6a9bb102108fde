"""Reads filtered by event type and stream prefix (category): the decisions, no I/O.

Shared by every store, sync and async. A filtered read asks the store for the
events after a position that match, *in the database* (an index per event type,
a range of stream ids per prefix), so reading one type in a million events reads
only that type's rows. Two things make it exact:

* **Bounded by the head.** A page is read as "matching events with
  ``after < position <= head``", where ``head`` is the store's
  :meth:`~eskit.EventStore.head_position` taken first. Every event at or below
  the head is final (visible, or never to be: the stores' ordering guarantee), so
  a page that is not full proves that no matching event lies in ``(after, head]``
  and the reader's checkpoint may move to ``head`` although it saw no event
  there. A subscription to a rare type therefore does not re-read the log after
  a restart. On PostgreSQL this replaces the per-page horizon cut: the head
  itself is computed below the horizon.
* **The stored type, then the read type.** Stores filter by the *stored* event
  type, but readers see types after upcasting (a rename by
  :meth:`~eskit.EventRegistry.alias`, a split into parts). The store is asked for
  the wanted types and every old name aliased to one of them; if the registry
  splits any type, the store is not asked to filter by type at all (a part's
  type is known only once the splitter ran). The read events are then filtered
  again, in Python, by the wanted types: the database pre-filter never admits
  less than the result, the Python test decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eskit.errors import DecodingError, InvalidInputError
from eskit.events import MAX_NAME_BYTES, Event, EventRegistry, check_name
from eskit.stores.partitions import check_partitions, partition_of, stored_partition
from eskit.stores.prefix_range import prefix_upper_bound
from eskit.stores.rows import OnUndecodable, UndecodableEvent, undecodable_page, upcast_tolerant

__all__ = ["LAST_NAME", "ReadFilter", "read_filter"]

LAST_NAME = chr(0x10FFFF) * (MAX_NAME_BYTES // 4)
"""The greatest valid stream id: the inclusive upper end of a range that has no
exclusive one (a prefix of U+10FFFF only), so that a database still bounds its scan."""


@dataclass(frozen=True, slots=True)
class ReadFilter:
    """Which events a filtered read returns (checked; build it with :func:`read_filter`).

    ``types`` and ``prefixes`` are ``None`` for "no restriction"; an empty
    collection matches nothing. An event matches when its type is one of
    ``types`` *and* its stream id (as text: a UUID stream by its canonical form)
    starts with one of ``prefixes`` *and*, when ``partitions`` is set, its stream
    is in one of them of ``partition_count`` (:func:`~eskit.stores.partitions.partition_of`;
    build it with :meth:`in_partitions`).
    """

    types: frozenset[str] | None
    prefixes: tuple[str, ...] | None
    partitions: frozenset[int] | None = None
    partition_count: int = 1

    def in_partitions(self, count: int, held: Iterable[int]) -> ReadFilter:
        """This filter, also keeping only the streams in ``held`` of ``count`` partitions."""
        count, parts = check_partitions(count, list(held))
        return replace(self, partitions=parts, partition_count=count)

    def unpartitioned(self) -> ReadFilter:
        """This filter without its partitions: for a schema with no ``stream_hash``, whose
        reader then tests the partitions in Python (``matches``)."""
        return replace(self, partitions=None, partition_count=1)

    @property
    def ranges(self) -> tuple[tuple[str, str | None], ...]:
        """Each prefix as a half-open range of stream ids ``[lo, hi)`` (``hi`` None: open)."""
        return tuple((p, prefix_upper_bound(p)) for p in self.prefixes or ())

    @property
    def is_empty(self) -> bool:
        """Whether nothing can match (an empty list of types or prefixes)."""
        return self.types == frozenset() or self.prefixes == () or self.partitions == frozenset()

    def matches(self, event: Any) -> bool:
        """The Python test, on an event as read (an Event or an UndecodableEvent)."""
        if self.types is not None and event.event_type not in self.types:
            return False
        if self.partitions is not None and (
            partition_of(event.aggregate_id, self.partition_count) not in self.partitions
        ):
            return False
        if self.prefixes is not None:
            stream = str(event.aggregate_id)
            return any(stream.startswith(p) for p in self.prefixes)
        return True

    def stream_matches(self, stream: str) -> bool:
        """The test on a stored stream id (prefixes and partitions)."""
        if self.partitions is not None and (
            stored_partition(stream, self.partition_count) not in self.partitions
        ):
            return False
        return self.prefixes is None or any(stream.startswith(p) for p in self.prefixes)

    def stored(self, registry: EventRegistry) -> ReadFilter:
        """What to ask the store for: the stored types that may read as a wanted type."""
        if self.types is None:
            return self
        rules = registry.rules
        if not rules.active:
            return self
        if rules.splits:  # a part's type is known only after the splitter ran
            return replace(self, types=None)
        old = {name for name in rules.aliases if rules.current_name(name) in self.types}
        return replace(self, types=self.types | old)


def _names(what: str, kind: str, values: Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str | bytes):
        raise InvalidInputError(f"{what} must be a list of strings, not one string")
    try:
        items = list(values)
    except TypeError:
        raise InvalidInputError(
            f"{what} must be an iterable of strings, got {type(values).__name__}"
        ) from None
    # The rules of names (non-empty, no NUL, valid UTF-8, at most MAX_NAME_BYTES):
    # an empty prefix would match every stream, which a computed prefix that came
    # out empty should not do silently; pass None to read every stream.
    return [check_name(kind, v) for v in items]


def read_filter(
    event_types: Iterable[str] | None, stream_prefixes: Iterable[str] | None
) -> ReadFilter | None:
    """The checked filter, or ``None`` when neither argument restricts anything.

    Raises :class:`~eskit.InvalidInputError` for a bare string, a non-string
    item, an empty string, NUL, a lone surrogate or a name over the size limit.
    """
    types = _names("event_types", "event type", event_types)
    prefixes = _names("stream_prefixes", "stream prefix", stream_prefixes)
    if types is None and prefixes is None:
        return None
    # Prefixes covered by a shorter one add nothing but another index range.
    kept: tuple[str, ...] | None = None
    if prefixes is not None:
        unique = sorted(set(prefixes))
        kept = tuple(p for p in unique if not any(p != q and p.startswith(q) for q in unique))
    return ReadFilter(None if types is None else frozenset(types), kept)


def page_end(page: Sequence[Event], limit: int, head: int) -> tuple[int, bool]:
    """After a filtered page read below ``head``: the checkpoint, and whether more may follow.

    A full page ends at its last event (more may follow); a shorter one has
    proved that nothing else matches up to ``head``.
    """
    if len(page) >= limit:
        return page[-1].position or head, True
    return head, False


def filtered_items(
    registry: EventRegistry, wanted: ReadFilter, page: list[Any], tolerant: bool
) -> list[Any]:
    """A page of stored events as a reader gets them: upcast (undecodable ones as
    placeholders when ``tolerant``), then tested against the wanted types and prefixes."""
    items = upcast_tolerant(registry, page) if tolerant else registry.upcast(page)
    return [item for item in items if wanted.matches(item)]


def report_undecodable(items: list[Any], on_undecodable: OnUndecodable) -> list[Any]:
    """``items`` for ``read_all``: a callback is given each placeholder, which is dropped."""
    if not callable(on_undecodable):
        return items
    out = []
    for item in items:
        if isinstance(item, UndecodableEvent):
            on_undecodable(item)
        else:
            out.append(item)
    return out


FilteredPage = tuple[list[Any], int, bool, int]
"""``(events as read, checkpoint, more may follow, stored rows read)``."""


def finished_page(
    registry: EventRegistry, wanted: ReadFilter, page: list[Any], limit: int, head: int,
    tolerant: bool,
) -> FilteredPage:
    """A filtered page read below ``head``, as a reader gets it (sync and async)."""
    upto, more = page_end(page, limit, head)
    return filtered_items(registry, wanted, page, tolerant), upto, more, len(page)


def cut_page(
    registry: EventRegistry, wanted: ReadFilter, error: DecodingError, after: int,
    tolerant: bool,
) -> FilteredPage:
    """A page that failed at an undecodable row: the rows before it and its placeholder
    (the checkpoint at the placeholder), or ``error`` again when not ``tolerant``."""
    cut = undecodable_page(error) if tolerant else None
    if cut is None:
        raise error
    return filtered_items(registry, wanted, cut, tolerant), cut[-1].position or after, True, \
        len(cut)


def take_matching(
    found: list[Event], page: Sequence[Event], upto: int, wanted: ReadFilter, limit: int
) -> bool:
    """The fallback scan's step: add ``page``'s matches up to ``upto``; ``True`` when done."""
    for event in page:
        if (event.position or 0) > upto:
            return True
        if wanted.matches(event):
            found.append(event)
            if len(found) == limit:
                return True
    return False
