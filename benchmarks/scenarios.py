"""The scenarios: each times eskit and a raw-driver baseline doing the same work on one backend.

A scenario is built from pairs of *sides* (eskit and raw) with the same
interface: ``before_run`` (untimed set-up: a fresh store or fresh streams for
append scenarios, a store filled once for read scenarios), ``run`` (the timed
work), ``check`` (a value both sides must agree on, such as the number of
stored events or the rebuilt balance), ``stored`` and ``close``. A side may
instead time itself (``timed_run``: the concurrent scenario's workers report
their own elapsed time). Every side does its work through a
:class:`~benchmarks.backends.Driver`, so one side class serves eskit and raw on
every backend. :func:`measure` alternates the sides ``repeat`` times and
records every wall-clock duration (``time.perf_counter``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import methodcaller
from pathlib import Path
from statistics import median
from typing import Any, Protocol

from benchmarks.backends import (
    BACKENDS,
    Backend,
    Driver,
    Side,
    append_batches,
    run_commands,
)
from benchmarks.model import amounts
from benchmarks.workers import WorkerGroup

__all__ = [
    "DEFAULT_SIZES",
    "QUICK_SIZES",
    "SCENARIOS",
    "Measurement",
    "Pair",
    "Sizes",
    "Timed",
    "applies",
    "build",
    "measure",
    "run_scenario",
]


@dataclass(frozen=True)
class Sizes:
    append_one: int = 2_000
    """Appends of one event each to one stream (one transaction each)."""
    batches: int = 200
    batch_size: int = 100
    command_appends: int = 2_000
    """Commands (read the head, append one event), round-robin over command_streams."""
    command_streams: int = 200
    concurrent_appends: int = 2_000
    """Commands per process in the concurrent scenario, over concurrent_streams each."""
    concurrent_streams: int = 100
    aggregate: int = 10_000
    """Events in the stream that load_aggregate and read_stream replay."""
    read_all: int = 100_000
    read_all_streams: int = 100
    populate_batch: int = 1_000
    """Batch size used (untimed) to fill the stores for the read scenarios."""
    projection: int = 20_000
    """Events the projection scenario projects (PostgreSQL; on 200 streams)."""


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(
    append_one=50, batches=5, batch_size=20, command_appends=50, command_streams=7,
    concurrent_appends=20, concurrent_streams=3, aggregate=300, read_all=2_000,
    read_all_streams=7, populate_batch=100, projection=1_200,
)


class Timed(Protocol):
    def before_run(self) -> None: ...
    def run(self) -> int: ...
    def check(self) -> Any: ...
    def stored(self) -> int: ...
    def close(self) -> None: ...


def stream_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}account-{i}" for i in range(n)]


@dataclass(frozen=True)
class Place:
    """Where one side of one scenario opens its driver."""

    backend: Backend
    side: Side
    locations: Callable[[str], str]
    tag: str

    def open(self) -> Driver:
        return self.backend.open(self.side, self.locations(f"{self.side}-{self.tag}"))

    def opener(self) -> Callable[[], Driver]:
        """A picklable ``open`` for worker processes (one location for all of them)."""
        return partial(self.backend.open, self.side, self.locations(f"{self.side}-{self.tag}"))


class _DriverSide:
    def __init__(self, place: Place) -> None:
        self.place = place
        self.driver: Driver | None = None
        self.names: list[str] = []
        self.result: Any = None

    def check(self) -> Any:
        return self.result

    def stored(self) -> int:
        assert self.driver is not None
        return self.driver.stored(self.names)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None


class AppendSide(_DriverSide):
    """``n_tx`` appends of ``per_tx`` deposits, round-robin over ``streams`` streams, each
    with the exact expected version; ``command``: read the head first (``per_tx`` is 1).

    Every run appends to fresh streams; backends with ``fresh_per_run`` also get a
    fresh, empty store for every run.
    """

    def __init__(self, place: Place, n_tx: int, per_tx: int, streams: int,
                 command: bool = False) -> None:
        super().__init__(place)
        self.per_tx, self.streams, self.command = per_tx, streams, command
        self.amounts = amounts(n_tx * per_tx)
        self.runs = 0

    def before_run(self) -> None:
        self.runs += 1
        if self.driver is None or self.place.backend.fresh_per_run:
            self.close()
            self.driver = self.place.open()
        self.names = stream_names(f"r{self.runs}-", self.streams)

    def run(self) -> int:
        assert self.driver is not None
        if self.command:
            return run_commands(self.driver, self.names, self.amounts)
        return append_batches(self.driver, self.names, self.amounts, self.per_tx)

    def check(self) -> int:
        return self.stored()


class ReadSide(_DriverSide):
    """A store filled once (untimed, on the first ``before_run``: ``total`` deposits
    round-robin over ``streams`` streams in appends of ``batch``), then ``read``."""

    def __init__(self, place: Place, streams: int, total: int, batch: int,
                 read: Callable[[Driver], tuple[Any, ...]]) -> None:
        super().__init__(place)
        self.total, self.batch, self.read = total, batch, read
        self.names = stream_names("", streams)

    def before_run(self) -> None:
        if self.driver is None:
            self.driver = self.place.open()
            append_batches(self.driver, self.names, amounts(self.total), self.batch)
            self.driver.wait_readable()

    def run(self) -> int:
        assert self.driver is not None
        self.result = self.read(self.driver)
        return int(self.result[0])


class ConcurrentSide:
    """``procs`` worker processes of a shared :class:`WorkerGroup`, each running
    ``appends`` commands on its own ``streams`` streams; timed by the workers."""

    def __init__(self, group: WorkerGroup, procs: int, appends: int, streams: int) -> None:
        self.group, self.procs, self.appends, self.streams = group, procs, appends, streams
        self.runs = 0
        self.last_stored = 0

    def before_run(self) -> None:
        self.runs += 1
        self.group.start()

    def timed_run(self) -> tuple[float, int]:
        """(the slowest worker's seconds, events appended by all workers)."""
        reports = self.group.run(self.procs, f"r{self.runs}-p{self.procs}-", self.appends,
                                 self.streams)
        self.last_stored = sum(stored for _, _, stored in reports)
        return max(seconds for seconds, _, _ in reports), sum(n for _, n, _ in reports)

    def run(self) -> int:
        return self.timed_run()[1]

    def check(self) -> int:
        return self.last_stored

    def stored(self) -> int:
        return self.last_stored

    def close(self) -> None:
        self.group.close()


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Pair:
    """One row of the results: the eskit and raw sides of one measurement."""

    title: str
    events: int
    """Events appended or read by one run."""
    eskit: Timed
    raw: Timed
    processes: int = 1


Builder = Callable[[Backend, Callable[[str], str], Sizes], list[Pair]]


def _one_pair(backend: Backend, locations: Callable[[str], str], title: str, events: int,
              make: Callable[[Place], Timed], tag: str) -> list[Pair]:
    eskit, raw = (make(Place(backend, side, locations, tag)) for side in ("eskit", "raw"))
    return [Pair(title, events, eskit, raw)]


def _concurrent(backend: Backend, locations: Callable[[str], str], sizes: Sizes) -> list[Pair]:
    n, streams = sizes.concurrent_appends, sizes.concurrent_streams
    eskit, raw = (WorkerGroup(Place(backend, side, locations, "concurrent").opener(), 2)
                  for side in ("eskit", "raw"))
    return [
        Pair(f"concurrent append, {p} process{'es' if p > 1 else ''}", n * p,
             ConcurrentSide(eskit, p, n, streams), ConcurrentSide(raw, p, n, streams), p)
        for p in (1, 2)
    ]


def _projection(backend: Backend, locations: Callable[[str], str], sizes: Sizes) -> list[Pair]:
    from benchmarks.project_scenario import ProjectSide, Shared

    shared = Shared(backend.dsn, lambda: locations("projection"),  # type: ignore[attr-defined]
                    sizes.projection)
    return [Pair("projection, tx.write", sizes.projection,
                 ProjectSide(shared, "eskit"), ProjectSide(shared, "raw"))]


SQLITE = frozenset({"sqlite", "memory"})
ALL = frozenset({"sqlite", "memory", "postgres"})
POSTGRES = frozenset({"postgres"})


@dataclass(frozen=True)
class ScenarioInfo:
    key: str
    kinds: frozenset[str]
    """The backend kinds it runs on."""
    build: Builder
    warmup: bool
    """Whether one untimed run of each side precedes the timed ones."""
    pairs: int = 1


SCENARIOS: dict[str, ScenarioInfo] = {
    s.key: s
    for s in (
        ScenarioInfo("append_one", SQLITE, lambda b, loc, z: _one_pair(
            b, loc, "append 1 event/tx", z.append_one,
            lambda p: AppendSide(p, z.append_one, 1, 1), "append-1"), warmup=False),
        ScenarioInfo("command_append", POSTGRES, lambda b, loc, z: _one_pair(
            b, loc, "command: head + append 1", z.command_appends,
            lambda p: AppendSide(p, z.command_appends, 1, z.command_streams, command=True),
            "command"), warmup=False),
        ScenarioInfo("append_batch", ALL, lambda b, loc, z: _one_pair(
            b, loc, f"append batches of {z.batch_size}", z.batches * z.batch_size,
            lambda p: AppendSide(p, z.batches, z.batch_size, 1), "batch"), warmup=False),
        # The warm-up also gets the second worker's connection going before its first timed run.
        ScenarioInfo("append_concurrent", POSTGRES, _concurrent, warmup=True, pairs=2),
        ScenarioInfo("load_aggregate", ALL, lambda b, loc, z: _one_pair(
            b, loc, "Repository.get", z.aggregate,
            lambda p: ReadSide(p, 1, z.aggregate, z.populate_batch,
                               methodcaller("load_balance", "account-0")),
            "aggregate"), warmup=True),
        ScenarioInfo("read_stream", ALL, lambda b, loc, z: _one_pair(
            b, loc, "read_stream", z.aggregate,
            lambda p: ReadSide(p, 1, z.aggregate, z.populate_batch,
                               methodcaller("read_stream", "account-0")),
            "stream"), warmup=True),
        ScenarioInfo("projection", POSTGRES, _projection, warmup=True),
        ScenarioInfo("read_all", ALL, lambda b, loc, z: _one_pair(
            b, loc, "read_all", z.read_all,
            lambda p: ReadSide(p, z.read_all_streams, z.read_all, z.populate_batch,
                               methodcaller("read_all")),
            "all"), warmup=True),
    )
}


def applies(key: str, backend: Backend) -> bool:
    return backend.kind in SCENARIOS[key].kinds


def build(key: str, backend: Backend, locations: Callable[[str], str],
          sizes: Sizes) -> list[Pair]:
    """The pairs of scenario ``key`` on ``backend``, not yet set up."""
    return SCENARIOS[key].build(backend, locations, sizes)


# --------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    scenario: str
    title: str
    backend: str
    events: int
    processes: int = 1
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
        def side(seconds: list[float], rate: float, stored: int) -> dict[str, Any]:
            return {"seconds": seconds, "median_seconds": median(seconds),
                    "events_per_second": rate, "stored_events": stored}

        return {
            "scenario": self.scenario,
            "title": self.title,
            "backend": self.backend,
            "processes": self.processes,
            "events_per_run": self.events,
            "eskit": side(self.eskit_seconds, self.eskit_rate, self.eskit_stored),
            "raw": side(self.raw_seconds, self.raw_rate, self.raw_stored),
            "eskit_over_raw": self.ratio,
        }


Step = Callable[[str], None]


def _timed(side: Timed) -> tuple[float, int]:
    side.before_run()
    gc.collect()
    timed_run: Callable[[], tuple[float, int]] | None = getattr(side, "timed_run", None)
    if timed_run is not None:
        return timed_run()
    start = time.perf_counter()
    n = side.run()
    return time.perf_counter() - start, n


def measure(key: str, backend: Backend, workdir: Path, sizes: Sizes, repeat: int,
            step: Step | None = None) -> list[Measurement]:
    """Run scenario ``key`` on ``backend``: ``repeat`` timed runs per side, alternating.

    Even-numbered repeats run the sides in order (eskit first), odd ones in
    reverse (raw first). ``step`` is called with a short description before each
    run (for progress display). Returns one measurement per pair. Raises
    ``AssertionError`` if a run did not process the expected number of events
    or the two sides disagree on the result.
    """
    info = SCENARIOS[key]
    with backend.scenario(key, workdir) as locations:
        pairs = info.build(backend, locations, sizes)
        results = [Measurement(key, p.title, backend.name, p.events, p.processes) for p in pairs]
        runs: list[tuple[str, Timed, Measurement, list[float]]] = []
        for p, m in zip(pairs, results, strict=True):
            label = f" ({p.processes} proc)" if len(pairs) > 1 else ""
            runs += [(f"eskit{label}", p.eskit, m, m.eskit_seconds),
                     (f"raw{label}", p.raw, m, m.raw_seconds)]
        try:
            if info.warmup:
                for name, side, _, _ in runs:
                    if step:
                        step(f"{name} set-up and warm-up")
                    side.before_run()
                    side.run()
            for r in range(repeat):
                for name, side, m, times in runs if r % 2 == 0 else runs[::-1]:
                    if step:
                        step(f"{name} run {r + 1}/{repeat}")
                    seconds, n = _timed(side)
                    assert n == m.events, f"{key} {name}: processed {n} events, not {m.events}"
                    times.append(seconds)
            for p, m in zip(pairs, results, strict=True):
                m.eskit_stored, m.raw_stored = p.eskit.stored(), p.raw.stored()
                m.eskit_check, m.raw_check = p.eskit.check(), p.raw.check()
        finally:
            for _, side, _, _ in runs:
                side.close()
    for m in results:
        assert m.eskit_check == m.raw_check, (
            f"{key} {m.title}: eskit {m.eskit_check} != raw {m.raw_check}"
        )
    return results


def run_scenario(key: str, backend: Backend | str, workdir: Path,
                 sizes: Sizes = QUICK_SIZES, repeat: int = 1) -> list[Measurement]:
    """One scenario on one backend (what the smoke test calls)."""
    if isinstance(backend, str):
        backend = BACKENDS[backend]
    return measure(key, backend, workdir, sizes, repeat)


def concurrency_ratios(results: Sequence[Measurement]) -> list[dict[str, Any]]:
    """For each concurrent measurement with more than one process, its total rate over
    the one-process rate of the same scenario and backend, for eskit and raw."""
    single = {(m.scenario, m.backend): m for m in results if m.processes == 1}
    ratios = []
    for m in results:
        one = single.get((m.scenario, m.backend))
        if m.processes > 1 and one is not None:
            ratios.append({
                "scenario": m.scenario, "backend": m.backend, "processes": m.processes,
                "eskit": m.eskit_rate / one.eskit_rate, "raw": m.raw_rate / one.raw_rate,
            })
    return ratios
