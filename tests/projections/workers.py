"""Process entry points for the multi-process projection tests (spawned, so importable)."""

import random
import time

from eskit.projections import ProjectionRunner
from tests.projections.helpers import Counter, WriteCounter


class JitteryCounter(Counter):
    """The test counter, slowed at random so a SIGKILL lands anywhere in a batch."""

    def handle_Added(self, event, tx) -> None:
        if random.random() < 0.5:
            time.sleep(random.random() * 0.004)
        super().handle_Added(event, tx)


class JitteryWriteCounter(WriteCounter):
    """:class:`JitteryCounter` through ``tx.write``: on PostgreSQL a SIGKILL lands while
    a batch's writes are queued, in flight in the pipeline, or being confirmed."""

    def handle_Added(self, event, tx) -> None:
        if random.random() < 0.5:
            time.sleep(random.random() * 0.004)
        super().handle_Added(event, tx)


def open_backend(kind: str, where: str, schema: str | None):
    from eskit import SQLiteEventStore
    from eskit.projections import PostgresTarget, SQLiteTarget

    if kind == "sqlite":
        return SQLiteEventStore(where), SQLiteTarget(where)
    from eskit.stores.postgres import PostgresEventStore

    return PostgresEventStore(where, schema=schema), PostgresTarget(where, schema=schema)


def project_forever(kind: str, where: str, schema: str | None, batch_size: int,
                    projection: type[Counter] = JitteryCounter) -> None:
    store, target = open_backend(kind, where, schema)
    ProjectionRunner(store, projection(), target, batch_size=batch_size,
                     poll_interval=0.05).run()


def project_writes_forever(kind: str, where: str, schema: str | None, batch_size: int) -> None:
    project_forever(kind, where, schema, batch_size, JitteryWriteCounter)


def async_project_writes_forever(
    kind: str, where: str, schema: str | None, batch_size: int
) -> None:
    async_project_forever(kind, where, schema, batch_size, JitteryWriteCounter)


def async_project_forever(kind: str, where: str, schema: str | None, batch_size: int,
                          projection: type[Counter] = JitteryCounter) -> None:
    """project_forever with the asyncio runner, reading from an async store."""
    import asyncio

    from eskit.aio import AsyncProjectionRunner, AsyncSQLiteEventStore

    async def run() -> None:
        _, target = open_backend(kind, where, schema)
        if kind == "sqlite":
            store = await AsyncSQLiteEventStore.open(where)
        else:
            from eskit.aio import AsyncPostgresEventStore

            store = await AsyncPostgresEventStore.open(where, schema=schema)
        await AsyncProjectionRunner(store, projection(), target, batch_size=batch_size,
                                    poll_interval=0.05).run()

    asyncio.run(run())


def project_partition(kind: str, where: str, schema: str | None, partition: int,
                      partitions: int) -> int:
    from tests.projections.test_partitions import InOrder

    store, target = open_backend(kind, where, schema)
    runner = ProjectionRunner(store, InOrder(), target, partition=partition,
                              partitions=partitions, batch_size=100)
    handled = runner.run_until_caught_up()
    store.close()
    target.close()
    return handled


class SlowCured(Counter):
    """The counter after the poison bug is fixed, slowed so that two retries overlap."""

    def handle_Poison(self, event, tx) -> None:
        time.sleep(0.01)
        self._count(event, tx)


def retry_all(kind: str, where: str, schema: str | None, start, results) -> None:
    """Wait for ``start``, retry every parked event of the counter, report the ids."""
    from eskit.projections import retry_parked

    store, target = open_backend(kind, where, schema)
    start.wait(30)
    results.put(retry_parked(store, SlowCured(), target))
    store.close()
    target.close()
