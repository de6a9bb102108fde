"""Archive old streams to compressed segment files, and restore them.

See docs/archive.md. Archived streams raise :class:`~eskit.StreamArchivedError`
on read and append until restored. SQLite and PostgreSQL stores (sync).
"""

from eskit.archive.front import archive_streams, restore_streams, streams_older_than
from eskit.archive.segments import ArchiveCorruptError, StreamRange
from eskit.archive.sqlite import verify
from eskit.archive.storage import ArchiveStorage, LocalDirectoryStorage

__all__ = [
    "ArchiveCorruptError", "ArchiveStorage", "LocalDirectoryStorage", "StreamRange",
    "archive_streams", "restore_streams", "streams_older_than", "verify",
]
