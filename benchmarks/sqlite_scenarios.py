"""The scenarios: each times eskit and the raw ``sqlite3`` baseline on one backend.

A scenario is built from two *sides* (eskit and raw) with the same interface:
``before_run`` (untimed set-up, e.g. a fresh database for append scenarios),
``run`` (the timed work), ``check`` (a value both sides must agree on, such as
the number of stored events or the rebuilt balance), ``stored`` and ``close``.
:func:`measure` alternates the two sides ``repeat`` times and records every
wall-clock duration (``time.perf_counter``).

Backends: eskit's :class:`~eskit.SQLiteEventStore` on a file in a temporary
directory with ``synchronous=FULL`` (the default) and ``NORMAL``, against raw
``sqlite3`` on a file with the same settings; and eskit's
:class:`~eskit.InMemoryEventStore` against raw ``sqlite3`` on ``":memory:"``.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Literal, Protocol

from benchmarks.model import Account, Deposited, amounts
from benchmarks.raw import RawStore
from eskit import EventStore, InMemoryEventStore, Repository, SQLiteEventStore

__all__ = [
    "BACKENDS",
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "SCENARIOS",
    "Backend",
    "Measurement",
    "Side",
    "Sizes",
    "measure",
    "run_scenario",
    "scenario_sides",
]


@dataclass(frozen=True)
class Backend:
    name: str
    kind: str  # "sqlite" or "memory"
    synchronous: Literal["FULL", "NORMAL"] | None = None

    def eskit_store(self, path: Path) -> EventStore:
        if self.kind == "memory":
            return InMemoryEventStore()
        assert self.synchronous is not None
        return SQLiteEventStore(path, synchronous=self.synchronous)

    def raw_store(self, path: Path) -> RawStore:
        if self.kind == "memory":
            return RawStore(":memory:", None)
        return RawStore(str(path), self.synchronous)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("sqlite FULL", "sqlite", "FULL"),
        Backend("sqlite NORMAL", "sqlite", "NORMAL"),
        Backend("memory", "memory"),
    )
}


@dataclass(frozen=True)
class Sizes:
    append_one: int = 2_000
    """Appends of one event each (one transaction each)."""
    batches: int = 200
    batch_size: int = 100
    aggregate: int = 10_000
    """Events in the stream that load_aggregate and read_stream replay."""
    read_all: int = 100_000
    read_all_streams: int = 100
    populate_batch: int = 1_000
    """Batch size used (untimed) to fill the stores for the read scenarios."""


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(
    append_one=50, batches=5, batch_size=20, aggregate=300, read_all=2_000,
    read_all_streams=7, populate_batch=100,
)


class Side(Protocol):
    def before_run(self) -> None: ...
    def run(self) -> int: ...
    def check(self) -> Any: ...
    def stored(self) -> int: ...
    def close(self) -> None: ...


def _eskit_stored(store: EventStore) -> int:
    # Versions are dense within a stream, so this is the number of stored events.
    return sum(info.version for info in store.list_streams())


class _Dirs:
    """Fresh numbered paths under one work directory."""

    def __init__(self, workdir: Path, prefix: str) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.counter = itertools.count()

    def new(self) -> Path:
        return self.workdir / f"{self.prefix}-{next(self.counter)}.db"


# --------------------------------------------------------------------------- appends


class EskitAppend:
    """``n_tx`` appends of ``per_tx`` deposits to one stream, exact expected version."""

    def __init__(self, backend: Backend, workdir: Path, n_tx: int, per_tx: int) -> None:
        self.backend, self.n_tx, self.per_tx = backend, n_tx, per_tx
        self.paths = _Dirs(workdir, f"eskit-append-{per_tx}")
        self.amounts = amounts(n_tx * per_tx)
        self.store: EventStore | None = None

    def before_run(self) -> None:
        self.close()
        self.store = self.backend.eskit_store(self.paths.new())

    def run(self) -> int:
        store, per, amts = self.store, self.per_tx, self.amounts
        assert store is not None
        for i in range(self.n_tx):
            start = i * per
            store.append(
                "account-1", [Deposited(a) for a in amts[start : start + per]],
                expected_version=start,
            )
        return self.n_tx * per

    def check(self) -> int:
        return self.stored()

    def stored(self) -> int:
        assert self.store is not None
        return _eskit_stored(self.store)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class RawAppend:
    def __init__(self, backend: Backend, workdir: Path, n_tx: int, per_tx: int) -> None:
        self.backend, self.n_tx, self.per_tx = backend, n_tx, per_tx
        self.paths = _Dirs(workdir, f"raw-append-{per_tx}")
        self.amounts = amounts(n_tx * per_tx)
        self.store: RawStore | None = None

    def before_run(self) -> None:
        self.close()
        self.store = self.backend.raw_store(self.paths.new())

    def run(self) -> int:
        store, per, amts = self.store, self.per_tx, self.amounts
        assert store is not None
        for i in range(self.n_tx):
            start = i * per
            store.append("account-1", start, amts[start : start + per])
        return self.n_tx * per

    def check(self) -> int:
        return self.stored()

    def stored(self) -> int:
        assert self.store is not None
        return self.store.stored()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


# --------------------------------------------------------------------------- reads


def _populate_eskit(store: EventStore, streams: int, total: int, batch: int) -> None:
    """Fill ``streams`` streams round-robin, ``batch`` events per append, ``total`` in all."""
    amts = amounts(total)
    versions = [0] * streams
    done = 0
    for turn in itertools.count():
        if done >= total:
            return
        s = turn % streams
        n = min(batch, total - done)
        store.append(
            f"account-{s}", [Deposited(a) for a in amts[done : done + n]],
            expected_version=versions[s],
        )
        versions[s] += n
        done += n


def _populate_raw(store: RawStore, streams: int, total: int, batch: int) -> None:
    amts = amounts(total)
    versions = [0] * streams
    done = 0
    for turn in itertools.count():
        if done >= total:
            return
        s = turn % streams
        n = min(batch, total - done)
        store.append(f"account-{s}", versions[s], amts[done : done + n])
        versions[s] += n
        done += n


class _EskitReadBase:
    """An eskit store filled once (untimed, on the first ``before_run``)."""

    def __init__(self, backend: Backend, workdir: Path, prefix: str, streams: int, total: int,
                 batch: int) -> None:
        self.backend, self.streams, self.total, self.batch = backend, streams, total, batch
        self.path = workdir / f"eskit-{prefix}.db"
        self.store: EventStore | None = None
        self.result: Any = None

    def before_run(self) -> None:
        if self.store is None:
            self.store = self.backend.eskit_store(self.path)
            _populate_eskit(self.store, self.streams, self.total, self.batch)
            self.store.head_position()  # open the reader connection outside the timer

    def check(self) -> Any:
        return self.result

    def stored(self) -> int:
        assert self.store is not None
        return _eskit_stored(self.store)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class _RawReadBase:
    def __init__(self, backend: Backend, workdir: Path, prefix: str, streams: int, total: int,
                 batch: int) -> None:
        self.backend, self.streams, self.total, self.batch = backend, streams, total, batch
        self.path = workdir / f"raw-{prefix}.db"
        self.store: RawStore | None = None
        self.result: Any = None

    def before_run(self) -> None:
        if self.store is None:
            self.store = self.backend.raw_store(self.path)
            _populate_raw(self.store, self.streams, self.total, self.batch)

    def check(self) -> Any:
        return self.result

    def stored(self) -> int:
        assert self.store is not None
        return self.store.stored()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class EskitLoadAggregate(_EskitReadBase):
    """``Repository.get`` of an ``Account`` with ``n`` deposits (no cache)."""

    def __init__(self, backend: Backend, workdir: Path, n: int, batch: int) -> None:
        super().__init__(backend, workdir, "aggregate", 1, n, batch)

    def run(self) -> int:
        assert self.store is not None
        account = Repository(self.store).get("account-0", Account)
        self.result = (account.version, account.balance)
        return account.version


class RawLoadAggregate(_RawReadBase):
    def __init__(self, backend: Backend, workdir: Path, n: int, batch: int) -> None:
        super().__init__(backend, workdir, "aggregate", 1, n, batch)

    def run(self) -> int:
        assert self.store is not None
        self.result = self.store.load_balance("account-0")
        return int(self.result[0])


class EskitReadStream(_EskitReadBase):
    """``store.read_stream`` of one ``n``-event stream."""

    def __init__(self, backend: Backend, workdir: Path, n: int, batch: int) -> None:
        super().__init__(backend, workdir, "stream", 1, n, batch)

    def run(self) -> int:
        assert self.store is not None
        events = self.store.read_stream("account-0")
        self.result = (len(events), events[-1].version)
        return len(events)


class RawReadStream(_RawReadBase):
    def __init__(self, backend: Backend, workdir: Path, n: int, batch: int) -> None:
        super().__init__(backend, workdir, "stream", 1, n, batch)

    def run(self) -> int:
        assert self.store is not None
        rows = self.store.read_stream("account-0")
        self.result = (len(rows), rows[-1][3])
        return len(rows)


class EskitReadAll(_EskitReadBase):
    """``store.read_all()`` over every event, in position order."""

    def __init__(self, backend: Backend, workdir: Path, sizes: Sizes) -> None:
        super().__init__(backend, workdir, "all", sizes.read_all_streams, sizes.read_all,
                         sizes.populate_batch)

    def run(self) -> int:
        assert self.store is not None
        count = last = 0
        for event in self.store.read_all():
            count += 1
            last = event.position or 0
        self.result = (count, last)
        return count


class RawReadAll(_RawReadBase):
    def __init__(self, backend: Backend, workdir: Path, sizes: Sizes) -> None:
        super().__init__(backend, workdir, "all", sizes.read_all_streams, sizes.read_all,
                         sizes.populate_batch)

    def run(self) -> int:
        assert self.store is not None
        self.result = self.store.read_all()
        return int(self.result[0])


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class ScenarioInfo:
    key: str
    title: str
    events: Callable[[Sizes], int]
    """Events appended or read by one run."""
    sides: Callable[[Backend, Path, Sizes], tuple[Side, Side]]
    warmup: bool
    """Whether one untimed run of each side precedes the timed ones (read scenarios)."""


SCENARIOS: dict[str, ScenarioInfo] = {
    s.key: s
    for s in (
        ScenarioInfo(
            "append_one", "append 1 event/tx",
            lambda z: z.append_one,
            lambda b, w, z: (EskitAppend(b, w, z.append_one, 1), RawAppend(b, w, z.append_one, 1)),
            warmup=False,
        ),
        ScenarioInfo(
            "append_batch", "append batches of 100",
            lambda z: z.batches * z.batch_size,
            lambda b, w, z: (EskitAppend(b, w, z.batches, z.batch_size),
                             RawAppend(b, w, z.batches, z.batch_size)),
            warmup=False,
        ),
        ScenarioInfo(
            "load_aggregate", "Repository.get",
            lambda z: z.aggregate,
            lambda b, w, z: (EskitLoadAggregate(b, w, z.aggregate, z.populate_batch),
                             RawLoadAggregate(b, w, z.aggregate, z.populate_batch)),
            warmup=True,
        ),
        ScenarioInfo(
            "read_stream", "read_stream",
            lambda z: z.aggregate,
            lambda b, w, z: (EskitReadStream(b, w, z.aggregate, z.populate_batch),
                             RawReadStream(b, w, z.aggregate, z.populate_batch)),
            warmup=True,
        ),
        ScenarioInfo(
            "read_all", "read_all",
            lambda z: z.read_all,
            lambda b, w, z: (EskitReadAll(b, w, z), RawReadAll(b, w, z)),
            warmup=True,
        ),
    )
}


def scenario_sides(key: str, backend: Backend, workdir: Path, sizes: Sizes) -> tuple[Side, Side]:
    """The (eskit, raw) sides of scenario ``key``, not yet set up."""
    return SCENARIOS[key].sides(backend, workdir, sizes)


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    scenario: str
    title: str
    backend: str
    events: int
    eskit_seconds: list[float] = field(default_factory=list)
    raw_seconds: list[float] = field(default_factory=list)
    eskit_stored: int = 0
    raw_stored: int = 0
    eskit_check: Any = None
    raw_check: Any = None

    @property
    def eskit_rate(self) -> float:
        return self.events / median(self.eskit_seconds)

    @property
    def raw_rate(self) -> float:
        return self.events / median(self.raw_seconds)

    @property
    def ratio(self) -> float:
        return self.eskit_rate / self.raw_rate

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "backend": self.backend,
            "events_per_run": self.events,
            "eskit": {
                "seconds": self.eskit_seconds,
                "median_seconds": median(self.eskit_seconds),
                "events_per_second": self.eskit_rate,
                "stored_events": self.eskit_stored,
            },
            "raw": {
                "seconds": self.raw_seconds,
                "median_seconds": median(self.raw_seconds),
                "events_per_second": self.raw_rate,
                "stored_events": self.raw_stored,
            },
            "eskit_over_raw": self.ratio,
        }


Step = Callable[[str], None]


def _timed(side: Side) -> tuple[float, int]:
    side.before_run()
    gc.collect()
    start = time.perf_counter()
    n = side.run()
    return time.perf_counter() - start, n


def measure(key: str, backend: Backend, workdir: Path, sizes: Sizes, repeat: int,
            step: Step | None = None) -> Measurement:
    """Run scenario ``key`` on ``backend``: ``repeat`` timed runs per side, alternating.

    Even-numbered repeats run eskit first, odd ones raw first. ``step`` is
    called with a short description before each run (for progress display).
    Raises ``AssertionError`` if a run did not process the expected number of
    events or the two sides disagree on the result.
    """
    info = SCENARIOS[key]
    events = info.events(sizes)
    m = Measurement(key, info.title, backend.name, events)
    eskit, raw = info.sides(backend, workdir, sizes)
    sides: dict[str, tuple[Side, list[float]]] = {
        "eskit": (eskit, m.eskit_seconds), "raw": (raw, m.raw_seconds),
    }
    try:
        if info.warmup:
            for name, (side, _) in sides.items():
                if step:
                    step(f"{name} set-up and warm-up")
                side.before_run()
                side.run()
        for r in range(repeat):
            order = ["eskit", "raw"] if r % 2 == 0 else ["raw", "eskit"]
            for name in order:
                side, times = sides[name]
                if step:
                    step(f"{name} run {r + 1}/{repeat}")
                seconds, n = _timed(side)
                assert n == events, f"{key} {name}: processed {n} events, expected {events}"
                times.append(seconds)
        m.eskit_stored, m.raw_stored = eskit.stored(), raw.stored()
        m.eskit_check, m.raw_check = eskit.check(), raw.check()
    finally:
        eskit.close()
        raw.close()
    assert m.eskit_check == m.raw_check, f"{key}: eskit {m.eskit_check} != raw {m.raw_check}"
    return m


def run_scenario(key: str, backend_name: str, workdir: Path, sizes: Sizes = QUICK_SIZES,
                 repeat: int = 1) -> Measurement:
    """One scenario on one backend (what the smoke test calls)."""
    return measure(key, BACKENDS[backend_name], workdir, sizes, repeat)
