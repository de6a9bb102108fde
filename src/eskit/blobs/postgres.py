"""Blobs in a table of the PostgreSQL store's schema: :class:`PostgresBlobStore`
(sync) and :class:`AsyncPostgresBlobStore` (asyncio).

``data`` is ``bytea`` with ``STORAGE EXTERNAL``: out of line in TOAST but not
compressed again, since large binaries (images, archives, sensor dumps) are
usually compressed already. Puts are ``INSERT ... ON CONFLICT DO NOTHING``, so a
retry after a dropped connection, or two writers of the same blob, store it once;
a put of a blob already stored refreshes its ``stored_at`` (the last put) once that
is older than :data:`~eskit.blobs.base.TOUCH_AFTER`, on the server's clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from eskit.blobs.base import TOUCH_AFTER, BlobStore, StoredBlob
from eskit.blobs.ref import (
    BINARY_MEDIA_TYPE,
    DEFAULT_MAX_BLOB_BYTES,
    BlobRef,
    checked_ref,
    not_found,
    prepared,
    verified,
)

if TYPE_CHECKING:
    from eskit.aio.postgres import AsyncPostgresEventStore
    from eskit.stores.postgres import PostgresEventStore

__all__ = ["AsyncPostgresBlobStore", "PostgresBlobStore"]


class _Statements:
    def __init__(self, schema: str) -> None:
        from psycopg import sql

        table = sql.SQL("{}.eskit_blobs").format(sql.Identifier(schema))
        self.create = [
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (digest text PRIMARY KEY, "
                    "size bigint NOT NULL, data bytea NOT NULL, "
                    "stored_at timestamptz NOT NULL DEFAULT now())").format(table),
            sql.SQL("ALTER TABLE {} ALTER COLUMN data SET STORAGE EXTERNAL").format(table),
        ]
        # A put of stored bytes refreshes stored_at (the blob is in use again), but
        # only once it is TOUCH_AFTER old: repeated puts rarely write.
        self.insert = sql.SQL(
            "INSERT INTO {table} AS b (digest, size, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (digest) DO UPDATE SET stored_at = now() "
            "WHERE b.stored_at < now() - make_interval(secs => {touch})"
        ).format(table=table, touch=sql.Literal(TOUCH_AFTER))
        self.select = sql.SQL("SELECT data FROM {} WHERE digest = %s").format(table)
        self.exists = sql.SQL("SELECT 1 FROM {} WHERE digest = %s").format(table)
        self.delete = sql.SQL("DELETE FROM {} WHERE digest = %s").format(table)
        self.now = sql.SQL("SELECT extract(epoch FROM clock_timestamp())::float8")
        self.listing = sql.SQL(
            "SELECT digest, size, extract(epoch FROM stored_at)::float8 FROM {} "
            "WHERE digest > %s ORDER BY digest LIMIT %s").format(table)
        self.delete_idle = sql.SQL(
            "DELETE FROM {} WHERE digest = ANY(%s) AND stored_at < to_timestamp(%s) "
            "RETURNING digest").format(table)


_PAGE = 10_000


class PostgresBlobStore(BlobStore):
    """Blobs in ``eskit_blobs`` in ``store``'s schema, created when this object is made.

    Uses the store's connection pool, with its retry on a dropped connection.
    """

    def __init__(self, store: PostgresEventStore, *,
                 max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.store = store
        self.max_blob_bytes = max_blob_bytes
        self._sql = _Statements(store.schema)

        def create(conn: Any) -> None:
            with conn.transaction():
                for statement in self._sql.create:
                    conn.execute(statement)

        store._run(create)

    @property
    def location(self) -> str:
        return f"PostgreSQL schema {self.store.schema!r} (table eskit_blobs)"

    def _put(self, key: str, data: bytes) -> None:
        def insert(conn: Any) -> None:
            with conn.transaction():
                conn.execute(self._sql.insert, (key, len(data), data))

        self.store._run(insert)

    def _get(self, key: str) -> bytes | None:
        row = self.store._run(lambda conn: conn.execute(self._sql.select, (key,)).fetchone())
        return None if row is None else bytes(row[0])

    def _has(self, key: str) -> bool:
        return self.store._run(
            lambda conn: conn.execute(self._sql.exists, (key,)).fetchone()) is not None

    def _delete(self, key: str) -> bool:
        def delete(conn: Any) -> bool:
            with conn.transaction():
                return bool(conn.execute(self._sql.delete, (key,)).rowcount)

        return self.store._run(delete)

    def _now(self) -> float:
        row: Any = self.store._run(lambda conn: conn.execute(self._sql.now).fetchone())
        return float(row[0])

    def _listing(self) -> Iterator[StoredBlob]:
        after = ""
        while True:  # keyset pages: bounded memory, no long transaction
            def page(conn: Any, after: str = after) -> list[Any]:
                return list(conn.execute(self._sql.listing, (after, _PAGE)).fetchall())

            rows = self.store._run(page)
            for key, size, stored_at in rows:
                yield StoredBlob(str(key), int(size), float(stored_at))
            if len(rows) < _PAGE:
                return
            after = str(rows[-1][0])

    def _delete_idle(self, keys: Sequence[str], cutoff: float) -> list[str]:
        if not keys:
            return []

        def delete(conn: Any) -> list[str]:
            with conn.transaction():
                found = conn.execute(self._sql.delete_idle, (list(keys), cutoff)).fetchall()
            return [str(row[0]) for row in found]

        return self.store._run(delete)


class AsyncPostgresBlobStore:
    """The asyncio twin of :class:`PostgresBlobStore`, on an async store's pool.

    Make it with ``await AsyncPostgresBlobStore.open(store)``. The same checks and
    guarantees as the sync blob stores (see :class:`~eskit.blobs.BlobStore`).
    """

    def __init__(self, store: AsyncPostgresEventStore, *,
                 max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.store = store
        self.max_blob_bytes = max_blob_bytes
        self._sql = _Statements(store.schema)

    @classmethod
    async def open(cls, store: AsyncPostgresEventStore, *,
                   max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> AsyncPostgresBlobStore:
        """The blob store of ``store``, its table created if missing."""
        self = cls(store, max_blob_bytes=max_blob_bytes)

        async def create(conn: Any) -> None:
            async with conn.transaction():
                for statement in self._sql.create:
                    await conn.execute(statement)

        await store._run(create)
        return self

    @property
    def location(self) -> str:
        return f"PostgreSQL schema {self.store.schema!r} (table eskit_blobs)"

    async def put(self, data: bytes | bytearray | memoryview | str, *,
                  media_type: str = BINARY_MEDIA_TYPE) -> BlobRef:
        """See :meth:`eskit.blobs.BlobStore.put`."""
        ref, raw = prepared(data, media_type, self.max_blob_bytes)

        async def insert(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(self._sql.insert, (ref.hex, len(raw), raw))

        await self.store._run(insert)
        return ref

    async def get(self, ref: BlobRef) -> bytes:
        """See :meth:`eskit.blobs.BlobStore.get`."""
        ref = checked_ref(ref)

        async def select(conn: Any) -> Any:
            return await (await conn.execute(self._sql.select, (ref.hex,))).fetchone()

        row = await self.store._run(select)
        if row is None:
            raise not_found(ref, self.location)
        return verified(ref, bytes(row[0]), self.location)

    async def exists(self, ref: BlobRef) -> bool:
        """See :meth:`eskit.blobs.BlobStore.exists`."""
        key = checked_ref(ref).hex

        async def select(conn: Any) -> Any:
            return await (await conn.execute(self._sql.exists, (key,))).fetchone()

        return await self.store._run(select) is not None

    async def delete(self, ref: BlobRef) -> bool:
        """See :meth:`eskit.blobs.BlobStore.delete`."""
        key = checked_ref(ref).hex

        async def delete(conn: Any) -> bool:
            async with conn.transaction():
                return bool((await conn.execute(self._sql.delete, (key,))).rowcount)

        return bool(await self.store._run(delete))
