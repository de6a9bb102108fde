"""Stream deletion decisions shared by every store, with no I/O (internal).

A store keeps, per deleted stream, whether the delete was hard (a tombstone:
events removed, the id never reused) or soft (events hidden, restorable). The
store asks here what a delete or an append means given that state.
"""

from __future__ import annotations

from eskit.errors import ConcurrencyError, StreamDeletedError
from eskit.events import StreamId
from eskit.stores.arguments import expected_matches
from eskit.stores.model import Expected

__all__ = ["deleted_error", "must_write_delete"]


def deleted_error(stream_id: StreamId, hard: bool) -> StreamDeletedError:
    """The error for an append to (or a restore of) a deleted stream."""
    if hard:
        message = (f"stream {str(stream_id)!r} was hard-deleted: its id can never be used "
                   "again, and its events are gone")
    else:
        message = (f"stream {str(stream_id)!r} is soft-deleted: restore_stream() it before "
                   "appending")
    return StreamDeletedError(message, stream_id=stream_id, hard=hard)


def must_write_delete(
    stream_id: StreamId, expected: Expected, head: int, current: bool | None, hard: bool
) -> bool:
    """Whether a delete changes anything; raises ConcurrencyError if ``expected``
    does not match ``head`` (the stored head). ``current``: ``None`` if the stream
    is not deleted, else whether its delete was hard."""
    if current is True or (current is False and not hard):
        return False  # deleted already, as much or more: a retry changes nothing
    if not expected_matches(expected, head):
        raise ConcurrencyError(stream_id, expected, head)
    return True
