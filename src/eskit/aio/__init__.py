"""eskit for asyncio: the same stores, repository and guarantees, awaited.

::

    from eskit.aio import AsyncRepository, AsyncSQLiteEventStore

    store = await AsyncSQLiteEventStore.open("events.db")
    repository = AsyncRepository(store)

Only I/O differs from the sync API: validation, encoding, conflict resolution,
aggregates and events are eskit's own, shared with :mod:`eskit`. Importing this
package needs no database driver; ``AsyncPostgresEventStore`` imports psycopg
when first used (``pip install 'eskit[postgres]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eskit._extras import POSTGRES_MODULES, installed
from eskit.aio.command_handler import AsyncCommandHandler
from eskit.aio.config import open_store
from eskit.aio.memory import AsyncInMemoryEventStore
from eskit.aio.process_manager import AsyncProcessManager
from eskit.aio.projections import AsyncProjectionRunner, rebuild
from eskit.aio.repository import AsyncRepository
from eskit.aio.retry import retry
from eskit.aio.snapshots import (
    AsyncInMemorySnapshotStore,
    AsyncSnapshotStore,
    AsyncSQLiteSnapshotStore,
)
from eskit.aio.sqlite import AsyncSQLiteEventStore
from eskit.aio.store import AsyncEventStore
from eskit.aio.subscription import AsyncSubscription

if TYPE_CHECKING:
    from eskit.aio.postgres import AsyncPostgresEventStore
    from eskit.aio.postgres_snapshots import AsyncPostgresSnapshotStore

__all__ = [
    "AsyncCommandHandler",
    "AsyncEventStore",
    "AsyncInMemoryEventStore",
    "AsyncInMemorySnapshotStore",
    "AsyncPostgresEventStore",
    "AsyncPostgresSnapshotStore",
    "AsyncProcessManager",
    "AsyncProjectionRunner",
    "AsyncRepository",
    "AsyncSQLiteEventStore",
    "AsyncSQLiteSnapshotStore",
    "AsyncSnapshotStore",
    "AsyncSubscription",
    "open_store",
    "rebuild",
    "retry",
]

if not installed(*POSTGRES_MODULES):
    # `from eskit.aio import *` must work without the postgres extra (see eskit/__init__).
    __all__ = [name for name in __all__ if not name.startswith("AsyncPostgres")]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import eskit.aio` works without psycopg installed.
    if name == "AsyncPostgresEventStore":
        from eskit.aio.postgres import AsyncPostgresEventStore

        return AsyncPostgresEventStore
    if name == "AsyncPostgresSnapshotStore":
        from eskit.aio.postgres_snapshots import AsyncPostgresSnapshotStore

        return AsyncPostgresSnapshotStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
