"""Retention policies per stream category: which expired streams to delete, and doing it.

A :class:`RetentionPolicy` names a category by stream-id prefix (``sensor-``) and a
``max_age``: a stream of that category whose newest event is older than that is
expired, and :func:`apply_retention` deletes it (hard by default: a tombstone) with
:meth:`~eskit.EventStore.delete_stream`, one stream per transaction, expecting the
version :func:`plan_retention` saw, so a stream that received an event since is
left alone. Interrupting loses nothing and a rerun goes on where it stopped:
deleted streams are no longer listed. See docs/storage.md.

Not yet: per-stream truncation (``max_events``, ``truncate_before_version``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eskit.codec import encode
from eskit.errors import ConcurrencyError, InvalidInputError
from eskit.events import MAX_NAME_BYTES

__all__ = [
    "CategoryPlan", "RetentionPlan", "RetentionPolicy", "RetentionResult", "apply_retention",
    "load_policies", "parse_age", "plan_retention",
]

_log = logging.getLogger("eskit.retention")

DEFAULT_BATCH = 100
MAX_BATCH = 10_000
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
    """Streams whose id starts with ``prefix`` expire ``max_age`` after their newest event.

    ``hard=True`` (default) deletes an expired stream for good (a tombstone);
    ``hard=False`` soft-deletes it (hidden, restorable). Checked on creation:
    bad values raise :class:`~eskit.InvalidInputError`.
    """

    prefix: str
    max_age: timedelta
    hard: bool = True

    def __post_init__(self) -> None:
        if type(self.prefix) is not str or not self.prefix:
            raise InvalidInputError("a retention policy needs a non-empty str prefix")
        try:
            size = len(self.prefix.encode())
        except UnicodeEncodeError:
            raise InvalidInputError("the prefix is not valid Unicode (a lone surrogate)") from None
        if size > MAX_NAME_BYTES or "\x00" in self.prefix:
            raise InvalidInputError(f"the prefix must be at most {MAX_NAME_BYTES} bytes, no NUL")
        if not isinstance(self.max_age, timedelta) or self.max_age < timedelta(0):
            raise InvalidInputError("max_age must be a timedelta >= 0")
        if type(self.hard) is not bool:
            raise InvalidInputError("hard must be True or False")


def load_policies(path: str | Path) -> list[RetentionPolicy]:
    """Policies from a JSON file: ``[{"prefix": "sensor-", "max_age": "30d", "hard": true}]``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read the policy file {str(path)!r}: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise InvalidInputError("the policy file must hold a non-empty JSON list of policies")
    policies = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"prefix", "max_age", "hard"}:
            raise InvalidInputError(
                f"a policy is an object with prefix, max_age and hard, not {item!r}"
            )
        policies.append(RetentionPolicy(
            item.get("prefix", ""), parse_age(item.get("max_age")), item.get("hard", True),
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
    events: int = 0
    bytes: int = 0
    """Encoded bytes of the expired events' data and metadata (JSON, before compression)."""


@dataclass(slots=True)
class RetentionPlan:
    """Expired streams, per category; nothing written. ``targets``: (stream, version, policy)."""

    categories: list[CategoryPlan]
    targets: list[tuple[Any, int, RetentionPolicy]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What :func:`apply_retention` did."""

    deleted_streams: int
    deleted_events: int
    skipped: int
    """Expired streams that received an event after the plan: left alone."""
    batches: int


def plan_retention(store: Any, policies: Iterable[RetentionPolicy], *,
                   now: datetime | None = None, count_bytes: bool = True) -> RetentionPlan:
    """Which streams ``policies`` expire now; reads only. ``count_bytes`` reads each
    expired stream to sum its bytes (else only counts are given)."""
    chosen = _checked(policies)
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise InvalidInputError("now must be an aware datetime (UTC)")
    plans = {p.prefix: CategoryPlan(p) for p in chosen}
    plan = RetentionPlan(list(plans.values()))
    for info in store.list_streams():
        policy = _policy_for(str(info.stream_id), chosen)
        if policy is None or info.last_timestamp > moment - policy.max_age:
            continue
        category = plans[policy.prefix]
        category.streams += 1
        category.events += info.version
        if count_bytes:
            category.bytes += sum(
                len(encode(e.event_data)) + len(encode(e.metadata))
                for e in store.iter_stream(info.stream_id, to_version=info.version)
            )
        plan.targets.append((info.stream_id, info.version, policy))
    return plan


def apply_retention(store: Any, policies: Iterable[RetentionPolicy], *,
                    batch_size: int = DEFAULT_BATCH, now: datetime | None = None,
                    progress: Progress | None = None) -> RetentionResult:
    """Delete the streams ``policies`` expire, ``batch_size`` streams between progress
    reports; each delete is its own transaction, so an interrupted run loses nothing
    and a rerun continues. Bad arguments raise before any I/O."""
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInputError(f"batch_size must be an int from 1 to {MAX_BATCH}")
    chosen = _checked(policies)
    plan = plan_retention(store, chosen, now=now, count_bytes=False)
    total = len(plan.targets)
    deleted = events = skipped = batches = 0
    for start in range(0, total, batch_size):
        for stream_id, version, policy in plan.targets[start : start + batch_size]:
            try:
                store.delete_stream(stream_id, version, hard=policy.hard)
            except ConcurrencyError:  # an event arrived since the plan: not expired now
                skipped += 1
                continue
            deleted += 1
            events += version
        batches += 1
        _log.info("retention batch %d: %d streams deleted so far, %d skipped", batches,
                  deleted, skipped)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return RetentionResult(deleted, events, skipped, batches)
