"""The projection row of ``make bench``'s table: eskit's runner against psycopg by hand.

Both sides project the same events (written once by eskit into the scenario's
schema, untimed) into a per-account balance table, batches of 500 with the
checkpoint in the same transaction: eskit with ``ProjectionRunner`` and the
``tx.write`` projection of :mod:`benchmarks.projections`, raw with
:class:`benchmarks.projections_raw.RawProjector` (one ``executemany`` of the
batch's upserts, a checkpoint upsert, commit). Every run projects into a fresh
table from a fresh checkpoint; both sides must agree on the deposits counted.
PostgreSQL only: there the round trips are what batching saves (the full
comparison, SQLite included, is ``python -m benchmarks.projections``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.projections import WrittenBalances
from eskit import NewEvent, StreamAppend

__all__ = ["ProjectSide", "Shared"]

STREAMS = 200
BATCH = 500


class Shared:
    """The events both sides project: written once, on the first ``before_run``."""

    def __init__(self, dsn: str, schema: Callable[[], str], total: int) -> None:
        self.dsn, self.schema, self.total = dsn, schema, total
        self.filled = False

    def fill(self) -> None:
        if self.filled:
            return
        import psycopg

        from eskit.stores.postgres import PostgresEventStore

        store = PostgresEventStore(self.dsn, schema=self.schema())
        try:
            for start in range(0, self.total, 1_000):  # 5 streams of 200 events a call
                chunks = range(start, min(start + 1_000, self.total), 200)
                store.append_many([
                    StreamAppend(f"account-{(first // 200) % STREAMS}", [
                        NewEvent("BenchDeposited", {"cents": 100 + n})
                        for n in range(first, min(first + 200, self.total))])
                    for first in chunks])
        finally:
            store.close()
        # Hint bits set before timing (see benchmarks.projections: the first reader of
        # fresh rows pays for them otherwise).
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'VACUUM "{self.schema()}".eskit_events')
        self.filled = True


class ProjectSide:
    """One side (``eskit`` or ``raw``) of the projection scenario. Connections, the
    runner and its set-up are made in ``before_run``: only the projecting is timed."""

    def __init__(self, shared: Shared, side: str) -> None:
        self.shared, self.side = shared, side
        self.result: Any = None
        self.table = ""
        self._run: Callable[[], int] | None = None
        self._open: list[Any] = []

    def before_run(self) -> None:
        self.shared.fill()
        self.close()
        self.table = f"bench_{self.side}_{uuid.uuid4().hex[:8]}"
        schema = self.shared.schema()
        if self.side == "raw":
            from benchmarks.projections_raw import RawProjector

            raw = RawProjector(self.shared.dsn, schema, self.table, BATCH)
            self._open, self._run = [raw], raw.run_until_caught_up
            return
        from eskit.projections import PostgresTarget, ProjectionRunner
        from eskit.stores.postgres import PostgresEventStore

        store = PostgresEventStore(self.shared.dsn, schema=schema)
        target = PostgresTarget(self.shared.dsn, schema=schema)
        self._open = [target, store]
        runner = ProjectionRunner(store, WrittenBalances(self.table), target,
                                  name=self.table, batch_size=BATCH)
        runner.setup()
        self._run = runner.run_until_caught_up

    def run(self) -> int:
        assert self._run is not None
        handled = self._run()
        self.result = self._deposits()
        return handled

    def _deposits(self) -> int:
        import psycopg

        with psycopg.connect(self.shared.dsn, autocommit=True) as conn:
            row = conn.execute(
                f'SELECT coalesce(sum(deposits), 0) FROM "{self.shared.schema()}".{self.table}'
            ).fetchone()
        return int(row[0]) if row else 0

    def check(self) -> Any:
        return self.result

    def stored(self) -> int:
        return self.shared.total

    def close(self) -> None:
        for item in self._open:
            item.close()
        self._open, self._run = [], None
