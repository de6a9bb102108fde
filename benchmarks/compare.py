"""Peer comparison: eskit, the ``eventsourcing`` library (the peer) and the raw driver.

``python -m benchmarks compare`` runs six workloads on each backend (SQLite
file, PostgreSQL, memory) for the three sides, alternating them, ``--repeat``
times (default 3), and reports medians:

* ``command-append``: commands round-robin over pre-opened aggregates; each
  loads the aggregate (no cache), applies one command, saves one event in its
  own transaction;
* ``batch-append``: new aggregates of ``batch_events`` events, one transaction each;
* ``load-long``: load a ``long``-event aggregate without snapshot;
* ``load-snapshot``: the same with a snapshot at ``long`` and ``tail`` events after;
* ``read-all``: read the whole log in global order, decoding every event, with
  the peak memory (tracemalloc) at a tenth of the log and at the whole log;
* ``concurrent-append`` (PostgreSQL only): the command workload in 1 and in 2
  processes on disjoint aggregates: total rate and its 2/1 ratio.

Every workload checks that the three sides end in the same state (per-aggregate
version and balance, or event count and total) before it is reported. Results go
to ``benchmarks/results/compare.json`` and a bar chart of the ratios to
``benchmarks/results/compare.png``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.backends import DEFAULT_POSTGRES_DSN
from benchmarks.model import Account, Deposited, amounts

__all__ = [
    "DEFAULT",
    "QUICK",
    "SIDES",
    "WORKLOADS",
    "Cell",
    "Sizes",
    "Target",
    "main",
    "run_workload",
]

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("eskit", "peer", "raw")


@dataclass(frozen=True)
class Sizes:
    commands: int = 5_000
    command_aggregates: int = 500
    batch_aggregates: int = 1_000
    batch_events: int = 100
    long: int = 10_000
    tail: int = 10
    long_loads: int = 3
    """Loads of the long aggregate per timed run."""
    snapshot_loads: int = 200
    """Loads through the snapshot per timed run."""
    read_all: int = 100_000
    read_all_aggregates: int = 100
    concurrent_commands: int = 2_000
    """Commands per process in the concurrent workload."""
    concurrent_aggregates: int = 100
    """Aggregates per process in the concurrent workload."""
    fill_batch: int = 1_000
    """Events per transaction when filling stores (untimed)."""


DEFAULT = Sizes()
QUICK = Sizes(
    commands=40, command_aggregates=8, batch_aggregates=5, batch_events=10, long=120, tail=10,
    long_loads=1, snapshot_loads=2, read_all=400, read_all_aggregates=5,
    concurrent_commands=12, concurrent_aggregates=3, fill_batch=50,
)
REDUCED = replace(DEFAULT, commands=2_000, command_aggregates=200, batch_aggregates=300,
                  read_all=50_000, concurrent_commands=1_000)
"""``--reduced``: smaller appends and log, the same aggregate lengths."""


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One backend: where each side's stores live."""

    kind: str
    """``"sqlite"`` (a file, WAL, synchronous FULL for all three sides), ``"memory"``
    or ``"postgres"``."""
    workdir: Path
    dsn: str | None = None
    schema_name: Callable[[], str] | None = None
    """How to name a fresh PostgreSQL schema (default ``eskit_cmp_<random>``)."""
    created: list[str] = field(default_factory=list)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def location(self, tag: str) -> str:
        """A fresh place for one store: a file path, a new schema, or ``""`` (memory)."""
        if self.kind == "sqlite":
            return str(self.workdir / f"{tag}-{next(self.counter)}-{uuid.uuid4().hex[:8]}.db")
        if self.kind == "memory":
            return ""
        import psycopg

        name = self.schema_name() if self.schema_name else f"eskit_cmp_{uuid.uuid4().hex[:10]}"
        assert self.dsn is not None
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        self.created.append(name)
        return name

    def cleanup(self) -> None:
        if self.kind != "postgres" or not self.created:
            return
        import psycopg

        assert self.dsn is not None
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.created.clear()


# --------------------------------------------------------------------------- sides


class BenchAccount(Account):
    """:class:`benchmarks.model.Account` with a command method."""

    def deposit(self, amount: Decimal) -> None:
        self.raise_event(Deposited(amount))


class EskitSide:
    """eskit's public API: a store, a Repository (no cache), a snapshot store."""

    name = "eskit"

    def __init__(self, kind: str, location: str, dsn: str | None, create: bool = True) -> None:
        # eskit creates its tables safely under concurrency, so ``create`` is not needed.
        from eskit import (
            InMemoryEventStore,
            InMemorySnapshotStore,
            OnDemand,
            Repository,
            SQLiteEventStore,
            SQLiteSnapshotStore,
        )

        if kind == "sqlite":
            self.store: Any = SQLiteEventStore(location)
            snapshots: Any = SQLiteSnapshotStore(self.store)
        elif kind == "memory":
            self.store = InMemoryEventStore()
            snapshots = InMemorySnapshotStore(self.store)
        else:
            from eskit import PostgresEventStore, PostgresSnapshotStore

            self.store = PostgresEventStore(dsn, schema=location)
            snapshots = PostgresSnapshotStore(self.store)
        self.repo = Repository(self.store)
        self.snap_repo = Repository(self.store, snapshots=snapshots, snapshot_policy=OnDemand())

    def open_account(self, name: str, amts: Sequence[Decimal]) -> None:
        account = BenchAccount(name)
        for a in amts:
            account.deposit(a)
        self.repo.save(account)

    def fill(self, name: str, amts: Sequence[Decimal], batch: int) -> None:
        account = BenchAccount(name)
        for start in range(0, len(amts), batch):
            for a in amts[start : start + batch]:
                account.deposit(a)
            self.repo.save(account)

    def command(self, name: str, amount: Decimal) -> None:
        account = self.repo.get(name, BenchAccount)
        account.deposit(amount)
        self.repo.save(account)

    def balance(self, name: str) -> tuple[int, Decimal]:
        account = self.repo.get(name, BenchAccount)
        return account.version, account.balance

    def snapshot(self, name: str, version: int) -> None:
        self.snap_repo.take_snapshot(self.snap_repo.get(name, BenchAccount, version=version))

    def snapshot_balance(self, name: str) -> tuple[int, Decimal]:
        account = self.snap_repo.get(name, BenchAccount)
        return account.version, account.balance

    def read_all(self) -> tuple[int, Decimal]:
        count, total = 0, Decimal(0)
        for event in self.store.read_all():
            total += event.event_data["amount"]
            count += 1
        return count, total

    def close(self) -> None:
        self.store.close()


class PeerSide:
    """The ``eventsourcing`` library's application (:mod:`benchmarks.peer`)."""

    name = "peer"

    def __init__(self, kind: str, location: str, dsn: str | None, create: bool = True) -> None:
        from benchmarks.peer import Bank, account_id, peer_env

        env = peer_env(kind, location, dsn, snapshots=True)
        if not create:
            env["CREATE_TABLE"] = "n"  # its documented switch; the parent created them
        self.app = Bank(env=env)
        self.account_id = account_id

    def open_account(self, name: str, amts: Sequence[Decimal]) -> None:
        self.app.open_account(name, amts)

    def fill(self, name: str, amts: Sequence[Decimal], batch: int) -> None:
        account = self.app.open_account(name, amts[:batch])
        for start in range(batch, len(amts), batch):
            for a in amts[start : start + batch]:
                account.deposit(a)
            self.app.save(account)

    def command(self, name: str, amount: Decimal) -> None:
        self.app.deposit(name, amount)

    def balance(self, name: str) -> tuple[int, Decimal]:
        return self.app.balance(name)

    def snapshot(self, name: str, version: int) -> None:
        self.app.take_snapshot(self.account_id(name), version=version)

    def snapshot_balance(self, name: str) -> tuple[int, Decimal]:
        return self.app.balance(name)  # its repository starts from the newest snapshot

    def read_all(self) -> tuple[int, Decimal]:
        return self.app.read_all()

    def close(self) -> None:
        self.app.close()


class RawSide:
    """The hand-written drivers of the other benchmarks (sqlite3, psycopg 3), plus a
    one-row-per-stream snapshot table for ``load-snapshot``."""

    name = "raw"

    def __init__(self, kind: str, location: str, dsn: str | None, create: bool = True) -> None:
        self.kind = kind
        self.driver: Any
        if kind == "postgres":
            import psycopg

            from benchmarks.raw_postgres import RawPostgres, create_table

            assert dsn is not None
            with psycopg.connect(dsn, autocommit=True) as conn:
                if create:
                    create_table(conn, location)
                    conn.execute(f'CREATE TABLE "{location}".raw_snapshots (stream_id text'
                                 " PRIMARY KEY, version bigint NOT NULL, state json NOT NULL)")
            self.driver = RawPostgres(dsn, location)
            self.snap_table = f'"{location}".raw_snapshots'
        else:
            from benchmarks.raw_sqlite import RawSQLite

            self.driver = RawSQLite(location or ":memory:", "FULL" if location else None)
            self.driver.conn.execute("CREATE TABLE raw_snapshots (stream_id TEXT PRIMARY KEY,"
                                     " version INTEGER NOT NULL, state TEXT NOT NULL)")

    def open_account(self, name: str, amts: Sequence[Decimal]) -> None:
        self.driver.append(name, 0, amts)

    def fill(self, name: str, amts: Sequence[Decimal], batch: int) -> None:
        for start in range(0, len(amts), batch):
            self.driver.append(name, start, amts[start : start + batch])

    def command(self, name: str, amount: Decimal) -> None:
        version, _balance = self.driver.load_balance(name)
        self.driver.append(name, version, [amount])

    def balance(self, name: str) -> tuple[int, Decimal]:
        return self.driver.load_balance(name)  # type: ignore[no-any-return]

    def snapshot(self, name: str, version: int) -> None:
        import orjson

        from benchmarks.model import fold_rows

        rows = self.driver._read_stream(name)[:version]
        v, balance = fold_rows(rows, version=4 if self.kind == "postgres" else 3,
                               data=8 if self.kind == "postgres" else 6)
        state = orjson.dumps({"balance": str(balance)}).decode()
        if self.kind == "postgres":
            self.driver.cur.execute(f"INSERT INTO {self.snap_table} VALUES (%s, %s, %s)",
                                    (name, v, state))
        else:
            self.driver.conn.execute("INSERT INTO raw_snapshots VALUES (?, ?, ?)", (name, v, state))

    def snapshot_balance(self, name: str) -> tuple[int, Decimal]:
        import orjson

        if self.kind == "postgres":
            cur = self.driver.cur
            version, state = cur.execute(
                f"SELECT version, state FROM {self.snap_table} WHERE stream_id = %s", (name,)
            ).fetchone()
            rows = cur.execute(self.driver.read_stream_sql, (name, version)).fetchall()
            at, data = 4, 8
        else:
            from benchmarks.raw_sqlite import READ_STREAM

            conn = self.driver.conn
            version, text = conn.execute(
                "SELECT version, state FROM raw_snapshots WHERE stream_id = ?", (name,)
            ).fetchone()
            state = orjson.loads(text)
            rows = conn.execute(READ_STREAM, (name, version)).fetchall()
            at, data = 3, 6
        balance = Decimal(state["balance"])
        loads = orjson.loads
        for row in rows:
            balance += Decimal(loads(row[data])["amount"])
            version = row[at]
        return version, balance

    def read_all(self) -> tuple[int, Decimal | None]:
        count, _, _ = self.driver.read_all()
        return count, None

    def close(self) -> None:
        self.driver.close()


SIDE_CLASSES: dict[str, Callable[..., Any]] = {
    "eskit": EskitSide, "peer": PeerSide, "raw": RawSide,
}


def open_side(target: Target, side: str) -> Any:
    return SIDE_CLASSES[side](target.kind, target.location(side), target.dsn)


# --------------------------------------------------------------------------- workloads


@dataclass
class Cell:
    """One workload on one backend: every timed run of every side, and the final states."""

    workload: str
    backend: str
    unit: str
    work: int
    """Units of work (events, commands or loads) per timed run."""
    seconds: dict[str, list[float]] = field(default_factory=dict)
    states: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def rate(self, side: str) -> float:
        return self.work / median(self.seconds[side])

    def ratio(self, a: str, b: str) -> float:
        return self.rate(a) / self.rate(b)


def rotations(repeat: int, sides: Sequence[str]) -> Iterator[str]:
    """The sides in turn, the first one rotating each repeat so none always goes first."""
    for r in range(repeat):
        k = r % len(sides)
        yield from (*sides[k:], *sides[:k])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def command_append(target: Target, sizes: Sizes, repeat: int, sides: Sequence[str]) -> Cell:
    cell = Cell("command-append", target.kind, "commands/s", sizes.commands)
    accounts = names("cmd", sizes.command_aggregates)
    opening, amts = amounts(len(accounts)), amounts(sizes.commands)

    def work(side: Any) -> None:
        n = len(accounts)
        for i, amount in enumerate(amts):
            side.command(accounts[i % n], amount)

    for name in rotations(repeat, sides):
        side = open_side(target, name)
        try:
            for account, amount in zip(accounts, opening, strict=True):
                side.open_account(account, [amount])
            seconds, _ = timed(lambda side=side: work(side))
            cell.seconds.setdefault(name, []).append(seconds)
            cell.states[name] = [side.balance(a) for a in accounts]
        finally:
            side.close()
    return cell


def batch_append(target: Target, sizes: Sizes, repeat: int, sides: Sequence[str]) -> Cell:
    cell = Cell("batch-append", target.kind, "events/s",
                sizes.batch_aggregates * sizes.batch_events)
    accounts = names("batch", sizes.batch_aggregates)
    amts = amounts(sizes.batch_events)

    def work(side: Any) -> None:
        for account in accounts:
            side.open_account(account, amts)

    for name in rotations(repeat, sides):
        side = open_side(target, name)
        try:
            seconds, _ = timed(lambda side=side: work(side))
            cell.seconds.setdefault(name, []).append(seconds)
            cell.states[name] = [side.balance(a) for a in accounts]
        finally:
            side.close()
    return cell


@contextmanager
def opened(target: Target, sides: Sequence[str]) -> Iterator[dict[str, Any]]:
    opened: dict[str, Any] = {}
    try:
        for name in sides:
            opened[name] = open_side(target, name)
        yield opened
    finally:
        for side in opened.values():
            side.close()


def load_long(target: Target, sizes: Sizes, repeat: int, sides: Sequence[str]) -> Cell:
    cell = Cell("load-long", target.kind, "events/s", sizes.long * sizes.long_loads)
    amts = amounts(sizes.long)
    with opened(target, sides) as by_name:
        for side in by_name.values():
            side.fill("long", amts, sizes.fill_batch)

        def work(side: Any) -> Any:
            for _ in range(sizes.long_loads):
                state = side.balance("long")
            return state

        for name in rotations(repeat, sides):
            seconds, state = timed(lambda name=name: work(by_name[name]))
            cell.seconds.setdefault(name, []).append(seconds)
            cell.states[name] = state
    return cell


def load_snapshot(target: Target, sizes: Sizes, repeat: int, sides: Sequence[str]) -> Cell:
    cell = Cell("load-snapshot", target.kind, "loads/s", sizes.snapshot_loads)
    amts = amounts(sizes.long + sizes.tail)
    with opened(target, sides) as by_name:
        for side in by_name.values():
            side.fill("snap", amts[: sizes.long], sizes.fill_batch)
            side.snapshot("snap", sizes.long)
            for a in amts[sizes.long :]:
                side.command("snap", a)

        def work(side: Any) -> Any:
            for _ in range(sizes.snapshot_loads):
                state = side.snapshot_balance("snap")
            return state

        for name in rotations(repeat, sides):
            seconds, state = timed(lambda name=name: work(by_name[name]))
            cell.seconds.setdefault(name, []).append(seconds)
            cell.states[name] = state
        cell.extra["without_snapshot"] = {n: s.balance("snap") for n, s in by_name.items()}
    return cell


def peak_memory(fn: Callable[[], Any]) -> int:
    """Bytes allocated at the peak of ``fn`` beyond what was allocated before it."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def read_all(target: Target, sizes: Sizes, repeat: int, sides: Sequence[str]) -> Cell:
    cell = Cell("read-all", target.kind, "events/s", sizes.read_all)
    per = sizes.read_all // sizes.read_all_aggregates
    accounts = names("log", sizes.read_all_aggregates)
    amts = amounts(per)
    tenth = max(1, len(accounts) // 10)
    peaks: dict[str, dict[str, int]] = {}
    with opened(target, sides) as by_name:
        for part, chosen in (("tenth", accounts[:tenth]), ("full", accounts[tenth:])):
            for side in by_name.values():
                for account in chosen:
                    side.fill(account, amts, sizes.fill_batch)
            for name, side in by_name.items():
                peaks.setdefault(name, {})[part] = peak_memory(side.read_all)
        for name in rotations(repeat, sides):
            seconds, state = timed(by_name[name].read_all)
            cell.seconds.setdefault(name, []).append(seconds)
            cell.states[name] = state
    cell.work = per * len(accounts)
    cell.extra["peak_bytes"] = peaks
    cell.extra["events_at_tenth"] = per * tenth
    return cell


def _concurrent_worker(kind: str, location: str, dsn: str, side_name: str, prefix: str,
                       commands: int, aggregates: int, barrier: Any, results: Any) -> None:
    side = None
    try:
        side = SIDE_CLASSES[side_name](kind, location, dsn, create=False)
        accounts = names(prefix, aggregates)
        for account, amount in zip(accounts, amounts(aggregates), strict=True):
            side.open_account(account, [amount])
        amts = amounts(commands)
        gc.collect()
        barrier.wait(timeout=300)
        start = time.perf_counter()
        for i, amount in enumerate(amts):
            side.command(accounts[i % aggregates], amount)
        elapsed = time.perf_counter() - start
        results.put((elapsed, [side.balance(a) for a in accounts]))
    except BaseException as exc:
        results.put((None, repr(exc)))
        barrier.abort()
        raise
    finally:
        if side is not None:
            side.close()


def collect(results: Any, workers: Sequence[Any], timeout: float = 600.0) -> Any:
    """The next worker result; fails if every worker has exited without one."""
    import queue

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            if not any(w.is_alive() for w in workers):
                try:
                    return results.get(timeout=1)
                except queue.Empty:
                    raise RuntimeError("the worker processes exited without a result") from None
    raise RuntimeError(f"no worker result within {timeout:.0f} s")


def concurrent_append(target: Target, sizes: Sizes, repeat: int, sides: Sequence[str]) -> Cell:
    """Work = commands of the 2-process run; rates are total commands over the slowest
    process's time; ``extra`` holds the 1-process rates too."""
    cell = Cell("concurrent-append", target.kind, "commands/s", 2 * sizes.concurrent_commands)
    ctx = multiprocessing.get_context("spawn")
    one: dict[str, list[float]] = {}
    locations = {name: target.location(name) for name in sides}
    for name in sides:  # create the tables before the processes race to
        SIDE_CLASSES[name](target.kind, locations[name], target.dsn).close()
    run = itertools.count()
    for name in rotations(repeat, sides):
        for procs in (1, 2):
            barrier, results = ctx.Barrier(procs), ctx.Queue()
            workers = [
                ctx.Process(target=_concurrent_worker, daemon=True, args=(
                    target.kind, locations[name], target.dsn, name, f"c{next(run)}w{i}",
                    sizes.concurrent_commands, sizes.concurrent_aggregates, barrier, results))
                for i in range(procs)
            ]
            for w in workers:
                w.start()
            outcomes = [collect(results, workers) for _ in workers]
            for w in workers:
                w.join(60)
            for elapsed, detail in outcomes:
                if elapsed is None:
                    raise RuntimeError(f"a {name} worker failed: {detail}")
            seconds = max(o[0] for o in outcomes)
            states = sorted(s for o in outcomes for s in o[1])
            if procs == 1:
                one.setdefault(name, []).append(seconds)
            else:
                cell.seconds.setdefault(name, []).append(seconds)
                cell.states[name] = states
    cell.extra["one_process_seconds"] = one
    cell.extra["one_process_rate"] = {n: sizes.concurrent_commands / median(s)
                                      for n, s in one.items()}
    cell.extra["two_over_one"] = {n: cell.rate(n) / cell.extra["one_process_rate"][n]
                                  for n in one}
    return cell


WORKLOADS: dict[str, Callable[[Target, Sizes, int, Sequence[str]], Cell]] = {
    "command-append": command_append,
    "batch-append": batch_append,
    "load-long": load_long,
    "load-snapshot": load_snapshot,
    "read-all": read_all,
    "concurrent-append": concurrent_append,
}


def applies(workload: str, kind: str) -> bool:
    return workload != "concurrent-append" or kind == "postgres"


def run_workload(workload: str, target: Target, sizes: Sizes, repeat: int = 3,
                 sides: Sequence[str] = SIDES) -> Cell:
    """Run one workload on one backend; raises if the sides disagree on the final state."""
    try:
        cell = WORKLOADS[workload](target, sizes, repeat, sides)
    finally:
        target.cleanup()
    check_agreement(cell)
    return cell


def check_agreement(cell: Cell) -> None:
    states = cell.states
    reference = states.get("eskit")
    for name, state in states.items():
        if cell.workload == "read-all" and name == "raw":
            same = state[0] == reference[0]  # raw does not sum the amounts
        else:
            same = state == reference
        if not same:
            raise AssertionError(f"{cell.workload} on {cell.backend}: {name} ended in a "
                                 f"different state from eskit: {state!r} != {reference!r}")


# --------------------------------------------------------------------------- reporting


def postgres_problem(dsn: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def table(cells: Sequence[Cell]) -> Any:
    from rich.table import Table

    out = Table(title="eskit vs eventsourcing 9.5 (peer) vs raw driver: medians",
                caption="raw = sqlite3 / psycopg 3 by hand; memory raw = sqlite3 ':memory:'; "
                        "peer memory = its POPO recorders")
    for col in ("workload", "backend", "unit", "eskit", "peer", "eskit/peer", "eskit/raw",
                "notes"):
        out.add_column(col, justify="left" if col in ("workload", "backend", "unit", "notes")
                       else "right")
    for c in cells:
        notes = ""
        if c.workload == "read-all":
            mib = {n: p["full"] / 2**20 for n, p in c.extra["peak_bytes"].items()}
            tenth = {n: p["tenth"] / 2**20 for n, p in c.extra["peak_bytes"].items()}
            notes = (f"peak MiB tenth->full: eskit {tenth['eskit']:.1f}->{mib['eskit']:.1f}, "
                     f"peer {tenth['peer']:.1f}->{mib['peer']:.1f}")
        if c.workload == "concurrent-append":
            r = c.extra["two_over_one"]
            notes = (f"2p/1p: eskit {r['eskit']:.2f}, peer {r['peer']:.2f}, "
                     f"raw {r['raw']:.2f}")
        out.add_row(f"{c.workload} ({c.work:,})", c.backend, c.unit, f"{c.rate('eskit'):,.0f}",
                    f"{c.rate('peer'):,.0f}", f"{c.ratio('eskit', 'peer'):.2f}",
                    f"{c.ratio('eskit', 'raw'):.2f}", notes)
    return out


def chart(cells: Sequence[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{c.workload}\n{c.backend}" for c in cells]
    peer = [c.ratio("eskit", "peer") for c in cells]
    raw = [c.ratio("eskit", "raw") for c in cells]
    fig, ax = plt.subplots(figsize=(max(8, len(cells) * 0.8), 5))
    xs = range(len(cells))
    ax.bar([x - 0.2 for x in xs], peer, width=0.4, label="eskit / peer (eventsourcing)")
    ax.bar([x + 0.2 for x in xs], raw, width=0.4, label="eskit / raw driver")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.axhline(2.0, color="green", linewidth=0.8, linestyle="--", label="target: 2x peer")
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ratio of rates (higher = eskit faster)")
    ax.set_title("eskit relative to the peer and to the raw driver (medians)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks compare",
        description="eskit vs the eventsourcing library vs the raw driver, same workloads.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--reduced", action="store_true",
                        help="smaller append workloads and read-all log (same aggregate lengths)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="timed runs per side (default 3); medians are reported")
    parser.add_argument("--only", action="append", choices=list(WORKLOADS), metavar="WORKLOAD",
                        help=f"run only this workload (repeatable): {', '.join(WORKLOADS)}")
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres", "memory"],
                        help="run only this backend (repeatable)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default benchmarks/results/compare.json, "
                             "compare-quick.json with --quick)")
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG chart (default benchmarks/results/compare.png, "
                             "compare-quick.png with --quick)")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    parser.add_argument("--read-all-events", type=int, default=None, metavar="N",
                        help="size of the read-all log (default 100,000); peak memory is "
                             "measured at a tenth of it and at all of it")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.read_all_events is not None and args.read_all_events < 100:
        parser.error("--read-all-events must be at least 100")
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from benchmarks.runner import machine

    args = parse_args(argv)
    sizes = QUICK if args.quick else REDUCED if args.reduced else DEFAULT
    if args.read_all_events is not None:
        sizes = replace(sizes, read_all=args.read_all_events)
    stem = "compare-quick" if args.quick else "compare"
    args.output = args.output or RESULTS / f"{stem}.json"
    args.chart = args.chart or RESULTS / f"{stem}.png"
    console = Console(width=None if sys.stdout.isatty() else 160)
    dsn = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    kinds = [k for k in ("sqlite", "postgres", "memory") if not args.backend or k in args.backend]
    if "postgres" in kinds and (problem := postgres_problem(dsn)):
        console.print(f"note: skipping the postgres backend: {problem}", highlight=False)
        kinds.remove("postgres")
    workloads = [w for w in WORKLOADS if not args.only or w in args.only]
    from importlib.metadata import version

    started = time.perf_counter()
    load_before = os.getloadavg()
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="eskit-compare-") as tmp:
        for workload in workloads:
            for kind in kinds:
                if not applies(workload, kind):
                    continue
                console.print(f"[dim]{workload} on {kind}...[/dim]")
                target = Target(kind, Path(tmp), dsn=dsn if kind == "postgres" else None)
                cells.append(run_workload(workload, target, sizes, args.repeat))
    elapsed = time.perf_counter() - started
    console.print(table(cells))
    info = {**machine(), "eventsourcing": version("eventsourcing")}
    load_after = os.getloadavg()
    console.print(f"{info['nproc']} CPUs, {info['cpu']}; Python {info['python']}; "
                  f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
                  f"{elapsed:.0f} s", highlight=False)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join(["python -m benchmarks compare", *(argv or sys.argv[2:])]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": elapsed, "sizes": asdict(sizes), "repeat": args.repeat,
        "machine": info, "loadavg_before": load_before, "loadavg_after": load_after,
        "cells": [{**asdict(c), "states": None,
                   "rates": {s: c.rate(s) for s in c.seconds},
                   "eskit_over_peer": c.ratio("eskit", "peer"),
                   "eskit_over_raw": c.ratio("eskit", "raw")} for c in cells],
    }
    args.output.write_text(json.dumps(payload, indent=2, default=str))
    console.print(f"wrote {args.output}")
    if not args.no_chart:
        chart(cells, args.chart)
        console.print(f"wrote {args.chart}")
    return 0
