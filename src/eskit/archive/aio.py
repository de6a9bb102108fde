"""Archive and restore on an :mod:`eskit.aio` store: SQLite or PostgreSQL.

The same segments, manifests, decisions and guarantees as the sync functions
(:func:`eskit.archive.archive_streams` and the rest). An
:class:`~eskit.aio.AsyncSQLiteEventStore` runs the sync code on its own sync
store in a worker thread. On an :class:`~eskit.aio.AsyncPostgresEventStore` the
archiving and restoring transactions are the very steps the sync store runs
(:func:`eskit.archive.postgres.archive_steps`, ``restore_steps``), awaited one
statement at a time; writing and reading back the segment (file I/O) runs in a
worker thread.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eskit.archive import front
from eskit.archive.postgres import (
    Sql,
    Steps,
    archive_steps,
    name,
    raw_rows,
    restore_steps,
    row_tags,
    rows_statement,
    tags_of,
)
from eskit.archive.sqlite import Progress, checked_segment_tags, put_verified
from eskit.archive.storage import ArchiveStorage
from eskit.errors import InvalidInputError, StoreError

__all__ = ["archive_streams_async", "restore_streams_async", "streams_older_than_async"]


def _kind(store: object) -> str:
    from eskit.aio.sqlite import AsyncSQLiteEventStore

    if isinstance(store, AsyncSQLiteEventStore):
        return "sqlite"
    loaded = sys.modules.get("eskit.aio.postgres")
    if loaded is not None and isinstance(store, loaded.AsyncPostgresEventStore):
        from eskit.stores.postgres_archive import ARCHIVE_SCHEMA

        if store.sql.version < ARCHIVE_SCHEMA:
            raise StoreError(
                f"schema {store.schema} has eskit schema version {store.sql.version}; "
                f"archiving needs {ARCHIVE_SCHEMA}: run `eskit migrate` first")
        return "postgres"
    raise InvalidInputError(
        f"archiving needs an AsyncSQLiteEventStore or AsyncPostgresEventStore here, got "
        f"{type(store).__name__}")


async def _read_stream(store: Any, stream: str) -> tuple[list[Any], list[Any]]:
    """The stream's rows and their tags, in one snapshot (as the sync archive reads)."""
    statement, tagged = rows_statement(store), tags_of(store)

    async def read(conn: Any) -> tuple[list[Any], list[Any]]:
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = await (await conn.execute(statement, (stream,))).fetchall()
            tags = (await (await conn.execute(store.sql.archive.tags, (stream,))).fetchall()
                    if tagged else [])
        return rows, tags

    result: tuple[list[Any], list[Any]] = await store._run(read)
    return result


async def _transaction(store: Any, steps: Steps) -> int:
    """Run ``steps`` in one transaction on one pooled connection; their result."""
    from eskit.stores.postgres_archive import ARCHIVE_SCHEMA

    async with store._connection() as conn:
        store._deletes_here(conn, ARCHIVE_SCHEMA)
        async with conn.transaction():
            try:
                call: Sql = next(steps)
                while True:
                    if call.want == "many":
                        async with conn.cursor() as cursor:
                            await cursor.executemany(call.statement, call.params)
                        result: Any = None
                    else:
                        cursor = await conn.execute(call.statement, call.params)
                        result = (await cursor.fetchone() if call.want == "one"
                                  else cursor.rowcount if call.want == "count" else None)
                    call = steps.send(result)
            except StopIteration as done:
                return int(done.value)


async def streams_older_than_async(store: Any, older_than: timedelta, *,
                                   category: str | None = None,
                                   now: datetime | None = None) -> list[str]:
    """:func:`eskit.archive.streams_older_than` on an async store."""
    if _kind(store) == "sqlite":
        return await asyncio.to_thread(front.streams_older_than, store.sync_store, older_than,
                                       category=category, now=now)
    cutoff = (now or datetime.now(UTC)) - older_than
    params = {"prefix": None if category is None else category + "-", "cutoff": cutoff}
    return [str(r[0]) for r in await store._fetchall(store.sql.archive.older_than, params)]


async def archive_streams_async(store: Any, storage: ArchiveStorage, streams: Sequence[str],
                                *, progress: Progress | None = None,
                                skipped: list[str] | None = None) -> int:
    """:func:`eskit.archive.archive_streams` on an async store: the same guarantees.
    ``progress`` is called on the event loop (SQLite: in the worker thread)."""
    if _kind(store) == "sqlite":
        return await asyncio.to_thread(front.archive_streams, store.sync_store, storage,
                                       streams, progress=progress, skipped=skipped)
    done = 0
    for n, stream in enumerate(streams, 1):
        found, tag_found = await _read_stream(store, stream)
        rows = raw_rows(found)
        moved = 0
        if rows:
            segment = await asyncio.to_thread(
                put_verified, storage, rows, schema_version=store.sql.version,
                store=name(store), tags=row_tags(tag_found))
            moved = await _transaction(
                store, archive_steps(store, stream, rows, storage.location, segment))
        done += moved
        if not moved and skipped is not None:
            skipped.append(stream)
        if progress is not None:
            progress(n, len(streams))
    return done


async def restore_streams_async(store: Any, storage: ArchiveStorage,
                                streams: Sequence[str] | None = None, *,
                                progress: Progress | None = None) -> int:
    """:func:`eskit.archive.restore_streams` on an async store: the same guarantees."""
    if _kind(store) == "sqlite":
        return await asyncio.to_thread(front.restore_streams, store.sync_store, storage,
                                       streams, progress=progress)
    wanted = await store._fetchall(store.sql.archive.listed)
    if streams is not None:
        names = set(streams)
        wanted = [w for w in wanted if w[0] in names]
    done = 0
    for n, (stream, segment) in enumerate(wanted, 1):
        found, tags = await asyncio.to_thread(checked_segment_tags, storage, segment)
        rows = [r for r in found if r[2] == stream]
        done += await _transaction(store, restore_steps(store, stream, segment, rows, tags))
        if progress is not None:
            progress(n, len(wanted))
    return done
