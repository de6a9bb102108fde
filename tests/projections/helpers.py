"""A small SQL projection used across the projection tests, and store/target factories."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eskit import NewEvent, SQLiteEventStore
from eskit.projections import PostgresTarget, Projection, SQLiteTarget, Tx


class Counter(Projection):
    """Counts events per stream and sums their amounts; 'Poison' events raise."""

    name = "counter"
    tables = ("counts",)

    def setup(self, tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {tx.table('counts')} "
            "(stream TEXT PRIMARY KEY, n INTEGER NOT NULL, total INTEGER NOT NULL)"
        )

    def _count(self, event, tx: Tx) -> None:
        p = tx.placeholder  # runs on SQLite and PostgreSQL targets
        tx.execute(
            f"INSERT INTO {tx.table('counts')} AS c (stream, n, total) VALUES ({p}, 1, {p}) "
            "ON CONFLICT (stream) DO UPDATE SET n = c.n + 1, total = c.total + excluded.total",
            (str(event.aggregate_id), event.event_data.get("amount", 0)),
        )

    def handle_Added(self, event, tx: Tx) -> None:
        self._count(event, tx)

    def handle_Poison(self, event, tx: Tx) -> None:
        if event.event_data.get("fail", True):
            raise RuntimeError("poison")
        self._count(event, tx)


class WriteCounter(Counter):
    """:class:`Counter` writing through ``tx.write`` (queued and pipelined in a runner's
    PostgreSQL batch). A failing 'Poison' event writes a row that the database refuses
    (check constraint ``poison``): on PostgreSQL the error comes at a later flush, not
    in its handler. A 'Boom' event raises in Python after writing."""

    name = "counter"

    def setup(self, tx: Tx) -> None:
        super().setup(tx)
        tx.execute("CREATE TABLE IF NOT EXISTS poison_box "
                   "(stream TEXT, CONSTRAINT poison CHECK (stream IS NULL))")

    def _count(self, event, tx: Tx) -> None:
        p = tx.placeholder
        tx.write(
            f"INSERT INTO {tx.table('counts')} AS c (stream, n, total) VALUES ({p}, 1, {p}) "
            "ON CONFLICT (stream) DO UPDATE SET n = c.n + 1, total = c.total + excluded.total",
            (str(event.aggregate_id), event.event_data.get("amount", 0)),
        )

    def handle_Poison(self, event, tx: Tx) -> None:
        if event.event_data.get("fail", True):
            tx.write(f"INSERT INTO poison_box VALUES ({tx.placeholder})",
                     (str(event.aggregate_id),))
            return
        self._count(event, tx)

    def handle_Boom(self, event, tx: Tx) -> None:
        self._count(event, tx)
        raise RuntimeError("boom")


def counts(tx_or_conn, table: str = "counts") -> dict[str, tuple[int, int]]:
    rows = tx_or_conn.execute(f"SELECT stream, n, total FROM {table}").fetchall() \
        if not isinstance(tx_or_conn, Tx) else tx_or_conn.execute(
            f"SELECT stream, n, total FROM {table}")
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def added(amount: int = 1) -> NewEvent:
    return NewEvent("Added", {"amount": amount})


@dataclass
class Backend:
    """An event store and a projection target in one database."""

    kind: str
    store: object
    target: object
    dsn: str | None = None
    schema: str | None = None
    path: Path | None = None

    def read_counts(self, table: str = "counts") -> dict[str, tuple[int, int]]:
        target = self.new_target()
        try:
            with target.transaction() as conn:
                return counts(Tx(target.dialect, conn), table)
        finally:
            target.close()

    def new_target(self):
        if self.kind == "sqlite":
            return SQLiteTarget(self.path)
        return PostgresTarget(self.dsn, schema=self.schema)


@contextlib.contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as store:
        target = SQLiteTarget(path)
        try:
            yield Backend("sqlite", store, target, path=path)
        finally:
            target.close()


@contextlib.contextmanager
def postgres_backend(dsn: str, schema: str) -> Iterator[Backend]:
    from eskit.stores.postgres import PostgresEventStore

    with PostgresEventStore(dsn, schema=schema) as store:
        target = PostgresTarget(dsn, schema=schema)
        try:
            yield Backend("postgres", store, target, dsn=dsn, schema=schema)
        finally:
            target.close()


def wait_visible(store, count: int, timeout: float = 20.0) -> None:
    """Wait until read_all shows ``count`` events.

    PostgreSQL readers see an event only once every older transaction on the
    cluster has ended (the visibility horizon), and other test sessions share the
    server: right after an append, read_all may not show it yet.
    """
    import time

    deadline = time.monotonic() + timeout
    while sum(1 for _ in store.read_all(on_undecodable="yield")) < count:
        assert time.monotonic() < deadline, f"fewer than {count} events visible after {timeout}s"
        time.sleep(0.01)


def append_visible(store, stream: str, events: list, timeout: float = 20.0):
    """``store.append``, then wait until read_all shows the batch (see wait_visible)."""
    import time

    result = store.append(stream, events)
    deadline = time.monotonic() + timeout
    while not list(store.read_all(result.position - 1, limit=1, on_undecodable="yield")):
        assert time.monotonic() < deadline, f"append not visible after {timeout}s"
        time.sleep(0.01)
    return result
