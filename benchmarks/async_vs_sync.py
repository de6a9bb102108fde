"""``python -m benchmarks.async_vs_sync``: the async front end against the sync one, same run.

For each store (a SQLite file; PostgreSQL, a fresh schema dropped afterwards), the
sync store and its async twin over the same database do the same work, one after
the other, repetition by repetition (the side that goes first alternates):

* ``command`` — what a command handler does: ``Repository.get`` of an account, raise
  one deposit, ``Repository.save`` (load + append of one event, exact expected
  version), N times over fresh streams (each seeded with one event, untimed),
  sequentially (``x1``) and spread over K threads / K tasks (``xK``, disjoint streams);
* ``read_all`` — iterate ``store.read_all()`` over E events;
* ``projection`` — catch a fresh projection up on those E events (one upsert per
  event into the store's own kind of database: a SQLite file / the same PostgreSQL
  schema), ``ProjectionRunner`` against ``AsyncProjectionRunner``, batches of 500.

The figure is the median rate of ``--repeat`` runs; async/sync is the ratio of the
medians (1.00: as fast as sync; the issue's target is 0.80 or better), ``best`` the
ratio of the best runs (on a shared machine noise only ever slows a run down). Wall clock
around the work only; opening, filling, seeding and ``setup()`` are outside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.model import Account, Deposited, amounts
from eskit import Repository, SQLiteEventStore
from eskit.aio import AsyncProjectionRunner, AsyncRepository, AsyncSQLiteEventStore
from eskit.aio.store import AsyncEventStore
from eskit.projections import PostgresTarget, Projection, ProjectionRunner, SQLiteTarget, Tx
from eskit.projections.checkpoints import ProjectionTarget
from eskit.stores.base import EventStore

DSN = os.environ.get("ESKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


SCENARIOS = ("command", "read_all", "projection")


@dataclass(frozen=True)
class Sizes:
    commands: int = 1_000
    concurrency: int = 8
    streams: int = 100
    events: int = 100_000


DEFAULT = Sizes()
QUICK = Sizes(commands=20, concurrency=2, streams=4, events=1_200)


@dataclass
class Result:
    backend: str
    scenario: str
    unit: str
    sync: list[float] = field(default_factory=list)
    """Rates (per second) of each run."""
    async_: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.async_) / statistics.median(self.sync)

    @property
    def best_ratio(self) -> float:
        """Best async run over best sync run: on a shared machine noise only slows a run."""
        return max(self.async_) / max(self.sync)


class Balances(Projection):
    """One upsert per deposit into a per-account table (the read model)."""

    name = "bench.balances"  # each run passes its runner a name (and a table) of its own

    def __init__(self, table: str) -> None:
        super().__init__()
        self.table = table

    def setup(self, tx: Tx) -> None:
        tx.execute(f"CREATE TABLE IF NOT EXISTS {self.table} "
                   "(account TEXT PRIMARY KEY, deposits INTEGER NOT NULL, total TEXT NOT NULL)")

    def handle_BenchDeposited(self, event: Any, tx: Tx) -> None:
        p = tx.placeholder  # the same projection runs on SQLite and PostgreSQL
        tx.execute(
            f"INSERT INTO {self.table} AS b VALUES ({p}, 1, {p}) ON CONFLICT (account) DO UPDATE "
            "SET deposits = b.deposits + 1, total = excluded.total",
            (str(event.aggregate_id), str(event.event_data["amount"])),
        )


class Backend:
    """Where the stores live: a sync store and its async twin on one database for the
    reads, another pair on a second database for the commands (whose events must not
    change what the reads count)."""

    name: str
    sync: EventStore
    async_: AsyncEventStore
    cmd_sync: EventStore
    cmd_async: AsyncEventStore
    sync_target: ProjectionTarget
    async_target: ProjectionTarget

    async def open(self) -> None: ...
    async def close(self) -> None:
        await self.async_.close()
        await self.cmd_async.close()
        self.sync.close()
        self.cmd_sync.close()
        self.sync_target.close()
        self.async_target.close()


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def open(self) -> None:
        path = self.folder / "events.db"
        self.sync = SQLiteEventStore(path)
        self.async_ = await AsyncSQLiteEventStore.open(path)
        self.cmd_sync = SQLiteEventStore(self.folder / "commands.db")
        self.cmd_async = await AsyncSQLiteEventStore.open(self.folder / "commands.db")
        # Each runner its own target file, so the two never wait on each other's lock.
        self.sync_target = SQLiteTarget(self.folder / "sync-target.db")
        self.async_target = SQLiteTarget(self.folder / "async-target.db")


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"eskit_bench_avs_{uuid.uuid4().hex[:10]}"
        self.commands = f"{self.schema}_cmd"

    async def open(self) -> None:
        from eskit.aio import AsyncPostgresEventStore
        from eskit.stores.postgres import PostgresEventStore

        self.sync = PostgresEventStore(self.dsn, schema=self.schema)
        self.async_ = await AsyncPostgresEventStore.open(self.dsn, schema=self.schema)
        self.cmd_sync = PostgresEventStore(self.dsn, schema=self.commands)
        self.cmd_async = await AsyncPostgresEventStore.open(self.dsn, schema=self.commands)
        self.sync_target = PostgresTarget(self.dsn, schema=self.schema)
        self.async_target = PostgresTarget(self.dsn, schema=self.schema)

    async def close(self) -> None:
        import psycopg

        try:
            await super().close()
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for schema in (self.schema, self.commands):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the work, sync and async, written the same way ------------------------------------


def _command(repository: Repository, stream: str, amount: Decimal) -> None:
    account = repository.get(stream, Account)
    account.raise_event(Deposited(amount))
    repository.save(account)


async def _async_command(repository: AsyncRepository, stream: str, amount: Decimal) -> None:
    account = await repository.get(stream, Account)
    account.raise_event(Deposited(amount))
    await repository.save(account)


def _plan(prefix: str, sizes: Sizes) -> list[tuple[str, Decimal]]:
    money = amounts(sizes.commands)
    return [(f"{prefix}-{i % sizes.streams}", money[i]) for i in range(sizes.commands)]


def _seed(store: EventStore, prefix: str, sizes: Sizes) -> None:
    for s in range(sizes.streams):
        store.append(f"{prefix}-{s}", [Deposited(Decimal(1))], expected_version=0)


def _sync_commands(store: EventStore, plan: list[tuple[str, Decimal]], workers: int) -> float:
    repository = Repository(store)
    # Stream s goes to worker s % workers: no two workers touch one stream.
    shares = [[c for c in plan if int(c[0].rsplit("-", 1)[1]) % workers == w]
              for w in range(workers)]

    def work(share: list[tuple[str, Decimal]]) -> None:
        for stream, amount in share:
            _command(repository, stream, amount)

    if workers == 1:
        return _timed(lambda: work(plan))
    with ThreadPoolExecutor(workers) as pool:
        def run() -> None:
            for f in [pool.submit(work, share) for share in shares]:
                f.result()
        return _timed(run)


async def _async_commands(
    store: AsyncEventStore, plan: list[tuple[str, Decimal]], workers: int
) -> float:
    repository = AsyncRepository(store)
    shares = [[c for c in plan if int(c[0].rsplit("-", 1)[1]) % workers == w]
              for w in range(workers)]

    async def work(share: list[tuple[str, Decimal]]) -> None:
        for stream, amount in share:
            await _async_command(repository, stream, amount)

    async def run() -> None:
        await asyncio.gather(*(work(share) for share in shares))

    return await _async_timed(run)


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def _async_timed(fn: Callable[[], Awaitable[object]]) -> float:
    gc.collect()
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


def _fill(store: EventStore, sizes: Sizes) -> None:
    money = amounts(1_000)
    streams = max(1, min(100, sizes.events // 10))
    per_append = max(1, sizes.events // streams // 10)
    written = 0
    while written < sizes.events:
        for s in range(streams):
            n = min(per_append, sizes.events - written)
            if n <= 0:
                break
            store.append(f"account-{s}", [Deposited(money[(written + j) % 1_000])
                                          for j in range(n)])
            written += n


def _check(count: int, expected: int, what: str) -> None:
    if count != expected:
        raise RuntimeError(f"{what}: {count} events, expected {expected}")


async def run_backend(
    backend: Backend, sizes: Sizes, repeat: int, progress: Callable[[str], None] = print,
    only: Sequence[str] = SCENARIOS,
) -> list[Result]:
    """The scenarios on one backend, sync and async alternating; the backend is closed after."""
    await backend.open()
    try:
        return await _scenarios(backend, sizes, repeat, progress, only)
    finally:
        await backend.close()


async def _scenarios(
    backend: Backend, sizes: Sizes, repeat: int, progress: Callable[[str], None],
    only: Sequence[str],
) -> list[Result]:
    sync, astore = backend.sync, backend.async_
    cmd_sync, cmd_async = backend.cmd_sync, backend.cmd_async
    k = sizes.concurrency
    results = {
        "command x1": Result(backend.name, "command x1", "ops/s"),
        f"command x{k}": Result(backend.name, f"command x{k}", "ops/s"),
        "read_all": Result(backend.name, f"read_all ({sizes.events:,})", "events/s"),
        "projection": Result(backend.name, f"projection ({sizes.events:,})", "events/s"),
    }
    progress(f"{backend.name}: filling {sizes.events:,} events")
    await asyncio.to_thread(_fill, sync, sizes)
    if backend.name == "postgres":  # every row below the read horizon before reading
        deadline = time.monotonic() + 120
        while sum(1 for _ in sync.read_all()) < sizes.events and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async def sync_read() -> float:
        count = 0

        def read() -> None:
            nonlocal count
            count = sum(1 for _ in sync.read_all())

        seconds = await asyncio.to_thread(_timed, read)
        _check(count, sizes.events, "sync read_all")
        return seconds

    async def async_read() -> float:
        count = 0

        async def read() -> None:
            nonlocal count
            async for _ in astore.read_all():
                count += 1

        seconds = await _async_timed(read)
        _check(count, sizes.events, "async read_all")
        return seconds

    async def sync_project(tag: str) -> float:
        runner = ProjectionRunner(sync, Balances(f"bench_s{tag}"), backend.sync_target,
                                  batch_size=500, name=f"bench-s{tag}")
        await asyncio.to_thread(runner.setup)
        handled = 0

        def project() -> None:
            nonlocal handled
            handled = runner.run_until_caught_up()

        seconds = await asyncio.to_thread(_timed, project)
        _check(handled, sizes.events, "sync projection")
        return seconds

    async def async_project(tag: str) -> float:
        runner = AsyncProjectionRunner(astore, Balances(f"bench_a{tag}"), backend.async_target,
                                       batch_size=500, name=f"bench-a{tag}")
        await runner.setup()
        handled = 0

        async def project() -> None:
            nonlocal handled
            handled = await runner.run_until_caught_up()

        seconds = await _async_timed(project)
        _check(handled, sizes.events, "async projection")
        return seconds

    # Warm-up, untimed: connections, page cache, statement preparation.
    await sync_read()
    await async_read()
    for r in range(repeat):
        progress(f"{backend.name}: repetition {r + 1} of {repeat}")
        order = ("sync", "async") if r % 2 == 0 else ("async", "sync")
        tag = uuid.uuid4().hex[:8]
        for side in order if "command" in only else ():
            for workers, key in ((1, "command x1"), (k, f"command x{k}")):
                prefix = f"cmd-{side}-{workers}-{tag}"
                await asyncio.to_thread(_seed, cmd_sync, prefix, sizes)
                plan = _plan(prefix, sizes)
                if side == "sync":
                    seconds = await asyncio.to_thread(_sync_commands, cmd_sync, plan, workers)
                    results[key].sync.append(sizes.commands / seconds)
                else:
                    seconds = await _async_commands(cmd_async, plan, workers)
                    results[key].async_.append(sizes.commands / seconds)
                stored = await asyncio.to_thread(cmd_sync.head_version, f"{prefix}-0")
                expected = 1 + sum(1 for s, _ in plan if s == f"{prefix}-0")
                _check(stored, expected, f"{side} command stream")
        for side in order if "read_all" in only else ():
            seconds = await (sync_read() if side == "sync" else async_read())
            getattr(results["read_all"], "sync" if side == "sync" else "async_").append(
                sizes.events / seconds)
        for side in order if "projection" in only else ():
            seconds = await (sync_project(tag) if side == "sync" else async_project(tag))
            getattr(results["projection"], "sync" if side == "sync" else "async_").append(
                sizes.events / seconds)
    return [r for r in results.values() if r.sync]


def table(results: Sequence[Result]) -> str:
    lines = [f"{'backend':<9} {'scenario':<22} {'sync':>12} {'async':>12} {'async/sync':>10}"
             f" {'best':>5}  unit"]
    for r in results:
        lines.append(
            f"{r.backend:<9} {r.scenario:<22} {statistics.median(r.sync):>12,.0f} "
            f"{statistics.median(r.async_):>12,.0f} {r.ratio:>10.2f} {r.best_ratio:>5.2f}  "
            f"{r.unit}"
        )
    return "\n".join(lines)


def run(
    backends: Sequence[str], sizes: Sizes, repeat: int, dsn: str = DSN,
    progress: Callable[[str], None] = print, only: Sequence[str] = SCENARIOS,
) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in backends:
            backend: Backend = (
                SQLiteBackend(Path(folder)) if name == "sqlite" else PostgresBackend(dsn)
            )
            results += asyncio.run(run_backend(backend, sizes, repeat, progress, only))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.async_vs_sync",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres", metavar="DSN", default=None,
                        help=f"the PostgreSQL server (default {DSN})")
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--commands", type=int, default=DEFAULT.commands)
    parser.add_argument("--concurrency", type=int, default=DEFAULT.concurrency)
    parser.add_argument("--events", type=int, default=DEFAULT.events)
    parser.add_argument("--only", action="append", choices=SCENARIOS,
                        help="run this scenario only (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes(
        commands=args.commands, concurrency=args.concurrency, events=args.events
    )
    repeat = 1 if args.quick else args.repeat
    results = run(args.backend or ["sqlite", "postgres"], sizes, repeat,
                  dsn=args.postgres or DSN, only=args.only or SCENARIOS)
    print(f"median of {repeat} run(s); command = Repository.get + raise 1 event + save; "
          f"x{sizes.concurrency} = {sizes.concurrency} threads (sync) / tasks (async)")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
