"""Appends through the async PostgreSQL store wake LISTENing subscribers, off the append path."""

import asyncio
import threading
import time
from typing import Any

from eskit import NewEvent
from eskit.aio.postgres import AsyncPostgresEventStore
from eskit.stores.postgres import PostgresEventStore
from tests.conftest import new_schema_name


def test_an_async_append_wakes_a_sync_subscriber_by_notify(postgres_dsn: str) -> None:
    schema = new_schema_name()
    reader = PostgresEventStore(postgres_dsn, schema=schema)
    subscription = reader.subscribe(poll_interval=30.0)  # a wake-up must come from NOTIFY
    received: list[Any] = []

    def follow() -> None:
        for event in subscription:
            received.append(event.event_data["n"])
            if len(received) == 3:
                subscription.stop()

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)

    async def write() -> None:
        async with AsyncPostgresEventStore(postgres_dsn, schema=schema) as store:
            for n in range(3):
                await store.append("s", [NewEvent("E", {"n": n})], n)

    asyncio.run(write())  # closing the store sends any NOTIFY still pending
    follower.join(timeout=10)
    reader.close()
    assert not follower.is_alive(), "no NOTIFY reached the subscriber"
    assert received == [0, 1, 2]
