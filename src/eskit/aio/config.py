"""Open the async store a URL (or ``$ESKIT_DSN``) names: :func:`eskit.open_store`, awaited.

The URL is read by :func:`eskit.config.parse_store_url`, the very decision the
sync :func:`eskit.open_store` makes; only opening differs (SQLite opens in a
worker thread, PostgreSQL on an async pool).
"""

from __future__ import annotations

import os

from eskit.aio.store import AsyncEventStore
from eskit.config import no_store_error, parse_store_url
from eskit.events import EventRegistry

__all__ = ["open_store"]


async def open_store(
    url: str | os.PathLike[str] | None = None, *, schema: str | None = None,
    create: bool = True, registry: EventRegistry | None = None,
) -> AsyncEventStore:
    """Open the async store ``url`` names, or ``$ESKIT_DSN`` when ``url`` is ``None``.

    The same URLs and the same ``create`` rule as :func:`eskit.open_store`; the
    caller awaits ``store.close()``.
    """
    spec = parse_store_url(url, schema=schema)
    if spec.kind == "memory":
        from eskit.aio.memory import AsyncInMemoryEventStore

        return AsyncInMemoryEventStore(registry=registry)
    if spec.kind == "sqlite":
        from eskit.aio.sqlite import AsyncSQLiteEventStore

        return await AsyncSQLiteEventStore.open(
            spec.target, create=create, registry=registry, **spec.options
        )
    from eskit.aio.postgres import AsyncPostgresEventStore  # needs eskit[postgres]

    store = await AsyncPostgresEventStore.open(
        spec.target, schema=spec.schema, setup=create, registry=registry
    )
    if not create:
        error = no_store_error(spec, await store.schema_version())
        if error is not None:
            await store.close()
            raise error
    return store
