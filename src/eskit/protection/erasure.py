"""What an erasure did, and the pieces of it that need no I/O (shared by sync and async)."""

from __future__ import annotations

from dataclasses import dataclass, field

from eskit.events import NewEvent
from eskit.protection.keystore import Purge
from eskit.protection.transcoder import subject_text

__all__ = ["ERASURES_STREAM", "SUBJECT_ERASED", "Erasure"]

ERASURES_STREAM = "$subject-erasures"
"""The stream each erasure appends a :data:`SUBJECT_ERASED` event to."""

SUBJECT_ERASED = "SubjectErased"
"""The event type recording an erasure: ``{"subject": id, "streams": [...], "keys_deleted": n}``.

Projections subscribed to the store receive it in order, in every process, and
purge what their read models hold about the subject. It carries the subject id
(the pseudonymous id the events carried in clear) and nothing sealed.
"""

SNAPSHOT_PAGE = 500


@dataclass(frozen=True, slots=True)
class Erasure:
    """The outcome of :meth:`~eskit.protection.ProtectedEventStore.erase_subject`."""

    subject: str
    keys_deleted: int
    """Keys deleted now (0 when the subject was erased before, or never had one)."""
    streams: tuple[str, ...]
    """The streams holding fields sealed for the subject (now redacted)."""
    snapshots_deleted: int
    purge: Purge
    position: int = 0
    """Where the :data:`SUBJECT_ERASED` event was stored (0 with ``record=False``)."""
    notes: tuple[str, ...] = field(default=())


def checked_subject(subject: object) -> str:
    """The subject id to erase or export; reserved ids (``$...``) are refused."""
    return subject_text(subject, "subject")


def erasure_record(subject: str, streams: list[str], keys_deleted: int) -> NewEvent:
    return NewEvent(SUBJECT_ERASED, {
        "subject": subject, "streams": streams, "keys_deleted": keys_deleted,
    })
