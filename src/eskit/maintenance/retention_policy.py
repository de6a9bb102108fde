"""Retention policies: what :mod:`eskit.maintenance.retention` removes, per stream
category, and the JSON policy file ``eskit retention`` and ``eskit archive`` read.

Only values and parsing here, no I/O beyond reading the policy file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from eskit.errors import InvalidInputError
from eskit.events import MAX_NAME_BYTES
from eskit.stores.model import MAX_VERSION

__all__ = ["RetentionPolicy", "load_policies", "parse_age"]

_KEYS = {"prefix", "max_age", "hard", "max_events", "truncate_before_version"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d{1,9})([smhdw])")


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
    return checked_policies(policies)


def checked_policies(policies: Iterable[RetentionPolicy]) -> list[RetentionPolicy]:
    """``policies`` as a list: at least one, all RetentionPolicy, no prefix twice."""
    chosen = list(policies)
    if not chosen or not all(isinstance(p, RetentionPolicy) for p in chosen):
        raise InvalidInputError("give at least one RetentionPolicy")
    prefixes = [p.prefix for p in chosen]
    if len(set(prefixes)) != len(prefixes):
        raise InvalidInputError("two policies name the same prefix")
    return chosen


def policy_for(stream: str, policies: Sequence[RetentionPolicy]) -> RetentionPolicy | None:
    """The policy of the longest matching prefix: ``sensor-hot-`` before ``sensor-``."""
    matching = [p for p in policies if stream.startswith(p.prefix)]
    return max(matching, key=lambda p: len(p.prefix)) if matching else None
