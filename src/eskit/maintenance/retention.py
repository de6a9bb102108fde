"""Retention policies per stream category: which streams expire or lose old events.

A :class:`RetentionPolicy` names a category by stream-id prefix (``sensor-``) and
any of three rules:

* ``max_age``: a stream whose newest event is older than that is expired, and
  :func:`apply_retention` deletes it (hard by default: a tombstone) with
  :meth:`~eskit.EventStore.delete_stream`;
* ``max_events``: a stream lives on but keeps only its newest N events;
* ``truncate_before_version``: a stream lives on without its events below that
  version (its newest event always stays).

The two truncating rules go through :meth:`~eskit.EventStore.truncate_stream`,
which needs a snapshot at or above the cut (in the store's own snapshot table)
unless forced; given a :class:`~eskit.Repository` and the aggregate class of the
category, :func:`apply_retention` takes that snapshot first. Each change is its
own transaction expecting the version :func:`plan_retention` saw, so a stream
that received an event since is skipped, never over-truncated; a truncation
removes at most :data:`TRUNCATE_STEP` events per transaction. Interrupting loses
nothing and a rerun plans again from what is stored. See docs/storage.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eskit.aggregate import Aggregate
from eskit.codec import encode
from eskit.errors import (
    ConcurrencyError,
    EskitError,
    InvalidInputError,
    StreamDeletedError,
    StreamTruncatedError,
    TruncationRefusedError,
)
from eskit.events import MAX_NAME_BYTES
from eskit.stores.model import MAX_VERSION

__all__ = [
    "CategoryPlan", "RetentionPlan", "RetentionPolicy", "RetentionResult", "Truncation",
    "apply_retention", "load_policies", "parse_age", "plan_retention",
]

_log = logging.getLogger("eskit.retention")

DEFAULT_BATCH = 100
MAX_BATCH = 10_000
TRUNCATE_STEP = 10_000
"""Events one truncating transaction removes at most (a long cut takes several)."""
_KEYS = {"prefix", "max_age", "hard", "max_events", "truncate_before_version"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d{1,9})([smhdw])")

Progress = Callable[[int, int], object]
"""Called after each batch with (streams handled so far, streams to handle)."""


def parse_age(text: object) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``0s`` as a timedelta; InvalidInputError otherwise."""
    match = _AGE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(
            f"age {text!r}: give a number and a unit (s, m, h, d or w), e.g. 90d"
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What to remove from the streams whose id starts with ``prefix``.

    ``max_age``: a stream expires that long after its newest event, and is
    deleted, ``hard=True`` (default) for good (a tombstone), ``hard=False``
    soft (hidden, restorable). ``max_events``: a stream keeps its newest N
    events. ``truncate_before_version``: a stream loses its events below that
    version. An expired stream is deleted, not truncated; with both truncating
    rules, the higher cut wins; the newest event always stays. Give at least
    one rule. Checked on creation: bad values raise :class:`~eskit.InvalidInputError`.
    """

    prefix: str
    max_age: timedelta | None = None
    hard: bool = True
    max_events: int | None = None
    truncate_before_version: int | None = None

    def __post_init__(self) -> None:
        if type(self.prefix) is not str or not self.prefix:
            raise InvalidInputError("a retention policy needs a non-empty str prefix")
        try:
            size = len(self.prefix.encode())
        except UnicodeEncodeError:
            raise InvalidInputError("the prefix is not valid Unicode (a lone surrogate)") from None
        if size > MAX_NAME_BYTES or "\x00" in self.prefix:
            raise InvalidInputError(f"the prefix must be at most {MAX_NAME_BYTES} bytes, no NUL")
        if self.max_age is not None and (
            not isinstance(self.max_age, timedelta) or self.max_age < timedelta(0)
        ):
            raise InvalidInputError("max_age must be a timedelta >= 0")
        if type(self.hard) is not bool:
            raise InvalidInputError("hard must be True or False")
        for name in ("max_events", "truncate_before_version"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not 1 <= value <= MAX_VERSION):
                raise InvalidInputError(f"{name} must be an int from 1 to {MAX_VERSION}")
        if self.max_age is None and self.max_events is None and (
            self.truncate_before_version is None
        ):
            raise InvalidInputError(
                "a retention policy needs max_age, max_events or truncate_before_version"
            )

    def cut(self, head: int) -> int:
        """The version a stream at ``head`` would start at under the truncating rules
        (1: keep everything). Never above ``head``: the newest event stays."""
        cut = 1
        if self.max_events is not None:
            cut = max(cut, head - self.max_events + 1)
        if self.truncate_before_version is not None:
            cut = max(cut, self.truncate_before_version)
        return max(1, min(cut, head))


def load_policies(path: str | Path) -> list[RetentionPolicy]:
    """Policies from a JSON file: ``[{"prefix": "sensor-", "max_age": "30d", "hard": true},
    {"prefix": "order-", "max_events": 1000}]`` (keys as :class:`RetentionPolicy`'s)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read the policy file {str(path)!r}: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise InvalidInputError("the policy file must hold a non-empty JSON list of policies")
    policies = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - _KEYS:
            raise InvalidInputError(
                f"a policy is an object with keys among {sorted(_KEYS)}, not {item!r}"
            )
        age = item.get("max_age")
        policies.append(RetentionPolicy(
            item.get("prefix", ""), None if age is None else parse_age(age),
            item.get("hard", True), item.get("max_events"), item.get("truncate_before_version"),
        ))
    return _checked(policies)


def _checked(policies: Iterable[RetentionPolicy]) -> list[RetentionPolicy]:
    chosen = list(policies)
    if not chosen or not all(isinstance(p, RetentionPolicy) for p in chosen):
        raise InvalidInputError("give at least one RetentionPolicy")
    prefixes = [p.prefix for p in chosen]
    if len(set(prefixes)) != len(prefixes):
        raise InvalidInputError("two policies name the same prefix")
    return chosen


def _policy_for(stream: str, policies: Sequence[RetentionPolicy]) -> RetentionPolicy | None:
    """The policy of the longest matching prefix: ``sensor-hot-`` before ``sensor-``."""
    matching = [p for p in policies if stream.startswith(p.prefix)]
    return max(matching, key=lambda p: len(p.prefix)) if matching else None


@dataclass(slots=True)
class CategoryPlan:
    """What a policy would remove from its category."""

    policy: RetentionPolicy
    streams: int = 0
    """Expired streams, to delete."""
    events: int = 0
    bytes: int = 0
    """Encoded bytes of the expired events' data and metadata (JSON, before compression)."""
    truncated_streams: int = 0
    """Streams that live on but lose their oldest events."""
    truncated_events: int = 0
    truncated_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Truncation:
    """One planned truncation: ``stream_id`` at ``version`` to start at ``cut``
    (it starts at ``first`` now)."""

    stream_id: Any
    version: int
    first: int
    cut: int
    policy: RetentionPolicy


@dataclass(slots=True)
class RetentionPlan:
    """What the policies remove, per category; nothing written.

    ``targets``: the streams to delete, as (stream, version, policy);
    ``truncations``: the streams to truncate.
    """

    categories: list[CategoryPlan]
    targets: list[tuple[Any, int, RetentionPolicy]] = field(default_factory=list)
    truncations: list[Truncation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :func:`apply_retention` did."""

    deleted_streams: int
    deleted_events: int
    skipped: int
    """Streams that received an event (or were deleted) after the plan: left alone."""
    batches: int
    truncated_streams: int = 0
    truncated_events: int = 0
    refused: int = 0
    """Truncations left undone for want of a snapshot (no repository given for the
    category, and not ``force``): see :meth:`~eskit.EventStore.truncate_stream`."""


def _size(events: Iterable[Any]) -> int:
    return sum(len(encode(e.event_data)) + len(encode(e.metadata)) for e in events)


def plan_retention(store: Any, policies: Iterable[RetentionPolicy], *,
                   now: datetime | None = None, count_bytes: bool = True) -> RetentionPlan:
    """What ``policies`` remove now; reads only. ``count_bytes`` reads the events
    to remove to sum their bytes (else only counts are given)."""
    chosen = _checked(policies)
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise InvalidInputError("now must be an aware datetime (UTC)")
    plans = {p.prefix: CategoryPlan(p) for p in chosen}
    plan = RetentionPlan(list(plans.values()))
    for info in store.list_streams():
        policy = _policy_for(str(info.stream_id), chosen)
        if policy is None:
            continue
        category = plans[policy.prefix]
        if policy.max_age is not None and info.last_timestamp <= moment - policy.max_age:
            first_events = store.read_stream(info.stream_id, limit=1)
            first = first_events[0].version if first_events else info.version
            category.streams += 1
            category.events += info.version - first + 1
            if count_bytes:
                category.bytes += _size(store.iter_stream(info.stream_id,
                                                          to_version=info.version))
            plan.targets.append((info.stream_id, info.version, policy))
            continue
        cut = policy.cut(info.version)
        if cut == 1:
            continue
        first_events = store.read_stream(info.stream_id, limit=1)
        first = first_events[0].version if first_events else cut
        if cut <= first:
            continue  # truncated that far already
        category.truncated_streams += 1
        category.truncated_events += cut - first
        if count_bytes:
            category.truncated_bytes += _size(store.iter_stream(info.stream_id,
                                                                to_version=cut - 1))
        plan.truncations.append(Truncation(info.stream_id, info.version, first, cut, policy))
    return plan


def _check_snapshotting(repository: Any, aggregates: Mapping[str, type[Aggregate]] | None,
                        policies: Sequence[RetentionPolicy]) -> dict[str, type[Aggregate]]:
    if aggregates is None:
        if repository is not None:
            raise InvalidInputError("a repository needs aggregates: {prefix: class}")
        return {}
    from eskit.repository import Repository

    if not isinstance(repository, Repository) or repository.snapshots is None:
        raise InvalidInputError("aggregates need a Repository with a snapshot store")
    prefixes = {p.prefix for p in policies}
    chosen = dict(aggregates)
    for prefix, cls in chosen.items():
        if prefix not in prefixes:
            raise InvalidInputError(f"aggregates names {prefix!r}, which no policy has")
        if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
            raise InvalidInputError(f"aggregates[{prefix!r}] must be an Aggregate subclass")
    return chosen


def apply_retention(store: Any, policies: Iterable[RetentionPolicy], *,
                    batch_size: int = DEFAULT_BATCH, now: datetime | None = None,
                    progress: Progress | None = None, repository: Any = None,
                    aggregates: Mapping[str, type[Aggregate]] | None = None,
                    force: bool = False) -> RetentionResult:
    """Delete the streams ``policies`` expire and truncate the ones they shorten,
    ``batch_size`` streams between progress reports.

    Each change is its own transaction (a truncation of more than
    :data:`TRUNCATE_STEP` events several), so an interrupted run loses nothing
    and a rerun continues. A truncation the store refuses for want of a snapshot
    is, given ``repository`` (whose snapshot store must be the store's own) and
    ``aggregates`` (policy prefix -> aggregate class), retried after taking one;
    otherwise it is counted in ``refused``. ``force=True`` truncates without a
    snapshot: such aggregates can no longer be loaded. Bad arguments raise
    before any I/O.
    """
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInputError(f"batch_size must be an int from 1 to {MAX_BATCH}")
    if type(force) is not bool:
        raise InvalidInputError("force must be True or False")
    chosen = _checked(policies)
    classes = _check_snapshotting(repository, aggregates, chosen)
    plan = plan_retention(store, chosen, now=now, count_bytes=False)
    work: list[tuple[Any, int, RetentionPolicy] | Truncation] = [
        *plan.targets, *plan.truncations]
    total = len(work)
    deleted = events = skipped = batches = truncated = removed = refused = 0
    for start in range(0, total, batch_size):
        for item in work[start : start + batch_size]:
            if isinstance(item, Truncation):
                outcome = _truncate(store, item, repository, classes, force)
                if outcome is None:
                    skipped += 1
                elif outcome < 0:
                    refused += 1
                else:
                    truncated += 1
                    removed += outcome
                continue
            stream_id, version, policy = item
            try:
                store.delete_stream(stream_id, version, hard=policy.hard)
            except ConcurrencyError:  # an event arrived since the plan: not expired now
                skipped += 1
                continue
            deleted += 1
            events += version
        batches += 1
        _log.info("retention batch %d: %d streams deleted, %d truncated (%d events) so far, "
                  "%d skipped, %d refused", batches, deleted, truncated, removed, skipped,
                  refused)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return RetentionResult(deleted, events, skipped, batches, truncated, removed, refused)


def _truncate(store: Any, target: Truncation, repository: Any,
              classes: Mapping[str, type[Aggregate]], force: bool) -> int | None:
    """Events removed; ``None``: the stream moved (skipped); -1: refused (no snapshot)."""
    removed = 0
    first = target.first
    snapshotted = False
    while first < target.cut:
        step = min(target.cut, first + TRUNCATE_STEP)
        try:
            removed += store.truncate_stream(target.stream_id, step,
                                             expected_version=target.version, force=force)
        except (ConcurrencyError, StreamDeletedError):
            # Moved since the plan: what went stays gone (consistent), a rerun plans anew.
            return removed or None
        except TruncationRefusedError:
            cls = classes.get(target.policy.prefix)
            if cls is None or snapshotted:
                _log.warning("retention: not truncating %r: no snapshot at version %d or "
                             "above (give a repository, or force)", str(target.stream_id),
                             target.cut)
                return -1  # only the first step can be refused: the cut is the same
            try:
                aggregate = repository.get(target.stream_id, cls)
                if aggregate.version != target.version:
                    return None
                repository.take_snapshot(aggregate)
            except StreamTruncatedError:  # forced once before, no snapshot: cannot load
                return -1
            except EskitError as exc:  # e.g. a state the codec cannot store
                _log.warning("retention: not truncating %r: taking its snapshot failed: %s",
                             str(target.stream_id), exc)
                return -1
            snapshotted = True
            continue
        first = step
    return removed
