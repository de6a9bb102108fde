"""Per-stream truncation decisions shared by every store, with no I/O (internal).

``truncate_stream(stream_id, before_version)`` removes a stream's events below
``before_version``. The stream's newest event always stays: its version is the
stream's head, and every store already derives the head from its newest stored
event, so appends, ``head_version`` and ``head_position`` need no second source
of truth. A store keeps, per truncated stream, the version its events now start
at (only ever raised); the store asks here what a truncation means given that,
the stream's head and its newest snapshot.
"""

from __future__ import annotations

from eskit.errors import ConcurrencyError, InvalidInputError, TruncationRefusedError
from eskit.events import StreamId
from eskit.stores.arguments import expected_matches
from eskit.stores.deletion import deleted_error
from eskit.stores.model import MAX_VERSION, Expected

__all__ = ["check_truncate_args", "truncation_cut"]


def check_truncate_args(before_version: object, force: object) -> int:
    """``before_version`` as an int from 1 to MAX_VERSION; InvalidInputError otherwise."""
    if type(before_version) is not int or not 1 <= before_version <= MAX_VERSION:
        raise InvalidInputError(f"before_version must be an int from 1 to {MAX_VERSION}")
    if type(force) is not bool:
        raise InvalidInputError("force must be True or False")
    return before_version


def truncation_cut(
    stream_id: StreamId, expected: Expected, head: int, deleted: bool | None,
    first: int, before_version: int, snapshot: int | None, force: bool,
) -> int | None:
    """The version the stream will start at, or ``None`` when nothing is to be removed.

    ``head``: the stream's stored head; ``deleted``: ``None`` unless the stream is
    deleted (then whether hard); ``first``: the version its events start at now (1
    if never truncated); ``snapshot``: the version of its newest snapshot, if any.
    Raises StreamDeletedError, ConcurrencyError (``expected`` does not match) or
    TruncationRefusedError (no snapshot at or above the cut, and not ``force``).
    """
    if deleted is not None:
        raise deleted_error(stream_id, deleted)
    if not expected_matches(expected, head):
        raise ConcurrencyError(stream_id, expected, head)
    cut = min(before_version, head)  # the newest event stays: it holds the head
    if cut <= first:
        return None  # truncated that far already (or empty): a retry changes nothing
    # The snapshot's own event must stay: loading checks that it is still the event
    # the snapshot was taken after before it trusts the snapshot.
    if not force and (snapshot is None or snapshot < cut):
        raise TruncationRefusedError(
            f"stream {str(stream_id)!r} has no snapshot at version {cut} or above, so "
            f"removing its events below {cut} would make it unloadable; take a snapshot "
            "first (Repository.take_snapshot) or pass force=True",
            stream_id=stream_id,
        )
    return cut
