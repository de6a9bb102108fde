"""Which streams ``eskit archive --policy FILE`` archives: the retention policy file
(:func:`eskit.maintenance.retention_policy.load_policies`), with retention's own
expiry decision (:func:`eskit.maintenance.retention.plan_retention`).

A stream is archived when the policy of its longest matching prefix has a
``max_age`` and the stream's newest event is older than that. The other keys
(``hard``, ``max_events``, ``truncate_before_version``) are retention's: archiving
ignores them, and a policy without ``max_age`` archives nothing (its prefix still
claims its streams from shorter prefixes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eskit.errors import InvalidInputError
from eskit.maintenance.retention import RetentionPolicy, plan_retention

__all__ = ["archive_policies", "expired_streams"]


def archive_policies(policies: Sequence[RetentionPolicy]) -> list[RetentionPolicy]:
    """``policies``, checked to hold an age rule: InvalidInputError if none has
    ``max_age`` (such a file would archive nothing)."""
    if not any(p.max_age is not None for p in policies):
        raise InvalidInputError("archiving by policy needs a policy with max_age")
    return list(policies)


def expired_streams(store: Any, policies: Sequence[RetentionPolicy], *,
                    now: datetime | None = None) -> list[str]:
    """The streams ``policies`` expire now, as retention plans them (reads only)."""
    plan = plan_retention(store, policies, now=now, count_bytes=False)
    return [str(stream_id) for stream_id, _, _ in plan.targets]
