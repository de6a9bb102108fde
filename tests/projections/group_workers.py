"""Consumer-group workers for the multi-process tests (spawned, so importable)."""

import os
import random
import time

from eskit.projections import ConsumerGroup, Projection, ProjectionRunner, Tx
from tests.projections.workers import open_backend

GROUP = "seen-workers"
PARTITIONS = 8


class Seen(Projection):
    """One row per event handled, with the pid that handled it; refuses a stream's gaps.

    No unique key on the event id: an event handled twice would show as two rows.
    """

    name = "seen"

    def __init__(self, jitter: bool = False) -> None:
        super().__init__()
        self.jitter = jitter

    def setup(self, tx: Tx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT NOT NULL, "
                   "stream TEXT NOT NULL, version INTEGER NOT NULL, pid INTEGER NOT NULL)")
        tx.execute("CREATE INDEX IF NOT EXISTS seen_stream ON seen (stream, version)")

    def handle_Added(self, event, tx: Tx) -> None:
        if self.jitter and random.random() < 0.3:
            time.sleep(random.random() * 0.003)  # so a SIGKILL lands anywhere in a batch
        p = tx.placeholder
        rows = tx.execute(f"SELECT MAX(version) FROM seen WHERE stream = {p}",
                          (str(event.aggregate_id),))
        last = rows[0][0] or 0
        if last != event.version - 1:
            raise AssertionError(f"{event.aggregate_id}: version {event.version} after {last}")
        tx.execute(f"INSERT INTO seen VALUES ({p}, {p}, {p}, {p})",
                   (str(event.event_id), str(event.aggregate_id), event.version, os.getpid()))


def group_worker(kind: str, where: str, schema: str | None, lease_timeout: float) -> None:
    """Join the group and project until killed."""
    store, target = open_backend(kind, where, schema)
    group = ConsumerGroup(target, GROUP, partitions=PARTITIONS, lease_timeout=lease_timeout,
                          member=f"pid-{os.getpid()}")
    ProjectionRunner(store, Seen(jitter=True), target, group=group, batch_size=25,
                     poll_interval=0.05).run()


def async_group_worker(kind: str, where: str, schema: str | None, lease_timeout: float) -> None:
    """group_worker with the asyncio runner, reading from an async store."""
    import asyncio

    from eskit.aio import AsyncProjectionRunner, AsyncSQLiteEventStore

    async def run() -> None:
        _, target = open_backend(kind, where, schema)
        if kind == "sqlite":
            store = await AsyncSQLiteEventStore.open(where)
        else:
            from eskit.aio import AsyncPostgresEventStore

            store = await AsyncPostgresEventStore.open(where, schema=schema)
        group = ConsumerGroup(target, GROUP, partitions=PARTITIONS,
                              lease_timeout=lease_timeout, member=f"pid-{os.getpid()}")
        await AsyncProjectionRunner(store, Seen(jitter=True), target, group=group,
                                    batch_size=25, poll_interval=0.05).run()

    asyncio.run(run())
