"""The command line: run the scenarios, show progress, print a table, write JSON."""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import eskit
from benchmarks.backends import BACKENDS, Backend
from benchmarks.scenarios import (
    DEFAULT_SIZES,
    QUICK_SIZES,
    SCENARIOS,
    Measurement,
    Sizes,
    applies,
    build,
    concurrency_ratios,
    measure,
)

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "nproc": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "orjson": orjson.__version__,
        "eskit": eskit.__version__,
        "platform": platform.platform(),
        "revision": source_revision(),
    }


def source_revision() -> str:
    """The git commit of the checkout, with ``+dirty`` if src/ has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time eskit against the raw drivers (sqlite3, psycopg) doing the same work.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a smoke run that takes seconds")
    parser.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="timed runs per side; the median is reported (default 5)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS),
                        metavar="BACKEND",
                        help=f"run only this backend (repeatable): {', '.join(BACKENDS)}")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default benchmarks/results/latest.json, "
                             "or quick.json with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, run each selected scenario's eskit and raw "
                             "sides once under cProfile and print the top functions")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


CAPTION = (
    "memory = eskit InMemoryEventStore vs raw sqlite3 on ':memory:'; "
    "postgres = PostgresEventStore vs raw psycopg 3"
)


def results_table(results: list[Measurement], title: str) -> Table:
    table = Table(title=title, caption=CAPTION)
    table.add_column("scenario", no_wrap=True)
    table.add_column("backend")
    table.add_column("eskit ev/s", justify="right")
    table.add_column("raw ev/s", justify="right")
    table.add_column("eskit/raw", justify="right")
    for m in results:
        table.add_row(
            f"{m.title} ({m.events:,})", m.backend, f"{m.eskit_rate:,.0f}",
            f"{m.raw_rate:,.0f}", f"{m.ratio:.2f}",
        )
    return table


def select_backends(names: list[str] | None, console: Console) -> list[Backend]:
    """The chosen backends (all by default) that can run here; a note for each that can't."""
    chosen = []
    for name, backend in BACKENDS.items():
        if names and name not in names:
            continue
        problem = backend.unavailable()
        if problem:
            console.print(f"note: skipping the {name} backend: {problem} "
                          "(set ESKIT_BENCH_POSTGRES_DSN to point elsewhere)", highlight=False)
            continue
        chosen.append(backend)
    return chosen


def profile(keys: list[str], backends: list[Backend], sizes: Sizes, console: Console) -> None:
    for key in keys:
        for backend in backends:
            if not applies(key, backend):
                continue
            with tempfile.TemporaryDirectory(prefix="eskit-bench-") as tmp, \
                    backend.scenario(key, Path(tmp)) as locations:
                for pair in build(key, backend, locations, sizes):
                    for name, side in (("eskit", pair.eskit), ("raw", pair.raw)):
                        title = f"{pair.title} on {backend.name} ({name} side)"
                        if hasattr(side, "timed_run"):
                            console.rule(f"cProfile: {title}: skipped, it runs in worker "
                                         "processes")
                            side.close()
                            continue
                        try:
                            if SCENARIOS[key].warmup:
                                side.before_run()
                                side.run()
                            side.before_run()
                            profiler = cProfile.Profile()
                            profiler.runcall(side.run)
                        finally:
                            side.close()
                        out = io.StringIO()
                        stats = pstats.Stats(profiler, stream=out)
                        stats.sort_stats("tottime").print_stats(15)
                        console.rule(f"cProfile: {title}, sorted by tottime")
                        print(out.getvalue(), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    keys = args.only or list(SCENARIOS)
    keys = [k for k in SCENARIOS if k in keys]
    # A pipe or a file gets 100 columns, enough for the table without wrapping.
    console = Console(width=None if sys.stdout.isatty() else 100)
    backends = select_backends(args.backend, console)
    plan = [(key, b) for key in keys for b in backends if applies(key, b)]
    if not plan:
        console.print("nothing to run: no selected scenario applies to an available backend")
        return 1
    info = machine()

    if args.profile:
        profile(keys, backends, sizes, console)
        return 0

    servers = {b.name: b.describe() for b in backends if b.describe()}
    postgres = servers.get("postgres")
    console.print(
        f"eskit {info['eskit']} | Python {info['python']} | SQLite {info['sqlite']} | "
        + (f"PostgreSQL {postgres['server_version']} (psycopg {postgres['psycopg']}) | "
           if postgres else "")
        + f"orjson {info['orjson']} | {info['nproc']} CPU(s): {info['cpu']} | "
        f"source {info['revision']}",
        highlight=False,
    )
    results: list[Measurement] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    total = sum(
        SCENARIOS[key].pairs * 2 * (args.repeat + SCENARIOS[key].warmup) for key, _ in plan
    )
    with tempfile.TemporaryDirectory(prefix="eskit-bench-") as tmp, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("starting", total=total)
        for key, backend in plan:
            first = True

            def step(what: str, key: str = key, name: str = backend.name) -> None:
                nonlocal first
                if not first:
                    progress.advance(task)
                first = False
                progress.update(task, description=f"{key} | {name} | {what}")

            workdir = Path(tmp) / f"{key}-{backend.name.replace(' ', '-')}"
            workdir.mkdir()
            results += measure(key, backend, workdir, sizes, args.repeat, step)
            progress.advance(task)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    mode = "quick" if args.quick else "default"
    console.print(results_table(
        results, f"eskit vs raw driver: median of {args.repeat} run(s), {mode} sizes",
    ))
    ratios = concurrency_ratios(results)
    for r in ratios:
        console.print(
            f"{r['scenario']} on {r['backend']}: total rate with {r['processes']} processes "
            f"/ 1 process: eskit {r['eskit']:.2f}, raw {r['raw']:.2f}",
            highlight=False,
        )
    console.print(
        f"total {elapsed:.1f} s | 1-minute load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after, on {info['nproc']} CPU(s)",
        highlight=False,
    )

    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "mode": mode,
        "repeat": args.repeat,
        "sizes": asdict(sizes),
        "machine": info,
        "servers": servers,
        "total_seconds": elapsed,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "results": [m.as_json() for m in results],
        "concurrency_ratios": ratios,
    }
    output.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {output}", highlight=False)
    return 0
