"""Process entry points for the multi-process projection tests (spawned, so importable)."""

import random
import time

from eskit.projections import ProjectionRunner
from tests.projections.helpers import Counter


class JitteryCounter(Counter):
    """The test counter, slowed at random so a SIGKILL lands anywhere in a batch."""

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


def project_forever(kind: str, where: str, schema: str | None, batch_size: int) -> None:
    store, target = open_backend(kind, where, schema)
    ProjectionRunner(store, JitteryCounter(), target, batch_size=batch_size,
                     poll_interval=0.05).run()


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
