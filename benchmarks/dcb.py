"""DCB on PostgreSQL: the rate of conditional appends with 2 and 8 writers.

Each writer is a process of its own (``spawn``) running the course-enrolment
decision for a fixed time: ``read_events(query)``, then ``append(...,
condition=AppendCondition(query, after=position))``, again after a lost race.

* ``disjoint``: every writer enrols into a course of its own (queries never
  overlap): the rate should grow with the writers, since no writer waits for
  another.
* ``overlapping``: every writer enrols into one shared course (every query
  overlaps every append): the conditions serialise them and most attempts lose.
* ``plain``: the same events appended without a condition, for comparison.

Each decision keeps its state and reads only the events after its last read
(``after=``), as a long-lived command handler would.

Run: ``.venv/bin/python -m benchmarks.dcb [--seconds 5] [--writers 2 8]``
(``ESKIT_BENCH_POSTGRES_DSN`` names the server). Prints one line per run and the
JSON of all runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from eskit import AppendCondition, AppendConditionFailed, NewEvent, Query

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MODES = ("disjoint", "overlapping", "plain")
SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Run:
    mode: str
    writers: int
    seconds: float
    appended: int
    conflicts: int

    @property
    def per_second(self) -> float:
        return self.appended / self.seconds


def _writer(dsn: str, schema: str, mode: str, n: int, seconds: float, start: Any,
            results: Any) -> None:
    from eskit.stores.postgres import PostgresEventStore

    course = "shared" if mode == "overlapping" else f"own-{n}"
    appended = conflicts = 0
    with PostgresEventStore(dsn, schema=schema, setup=False, pool_size=1) as store:
        start.wait()
        deadline = time.monotonic() + seconds
        i = last = 0
        while time.monotonic() < deadline:
            i += 1
            student = f"w{n}-s{i}"
            event = NewEvent("Enrolled", {"course": course, "student": student},
                             tags=(f"course:{course}", f"student:{student}"))
            if mode == "plain":
                store.append(f"enrolment-{uuid.uuid4()}", [event])
                appended += 1
                continue
            query = Query.of(types=["Enrolled"], tags=[f"course:{course}"])
            # The decision keeps its state and reads only what is new since its last
            # read: the read stays small however long the course's history grows.
            read = store.read_events(query, after=last)
            last = read.position
            try:
                store.append(f"enrolment-{uuid.uuid4()}", [event],
                             condition=AppendCondition(query, after=read.position))
                appended += 1
            except AppendConditionFailed:
                conflicts += 1
    results.put((appended, conflicts))


def run(mode: str, writers: int, seconds: float, dsn: str = DSN) -> Run:
    from eskit.stores.postgres import PostgresEventStore

    schema = f"eskit_bench_dcb_{uuid.uuid4().hex[:10]}"
    PostgresEventStore(dsn, schema=schema).close()
    start = SPAWN.Barrier(writers + 1)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=_writer, args=(dsn, schema, mode, n, seconds, start, results))
             for n in range(writers)]
    try:
        for p in procs:
            p.start()
        start.wait()
        counts = [results.get(timeout=seconds + 120) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return Run(mode, writers, seconds, sum(c[0] for c in counts), sum(c[1] for c in counts))


def main(argv: list[str] | None = None) -> list[Run]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)
    runs = []
    for writers in args.writers:
        for mode in args.modes:
            r = run(mode, writers, args.seconds)
            runs.append(r)
            print(f"{mode:12} {writers} writers: {r.per_second:8.0f} appends/s "
                  f"({r.appended} appended, {r.conflicts} conditions failed)", flush=True)
    print(json.dumps([{**asdict(r), "per_second": r.per_second} for r in runs], indent=1))
    return runs


if __name__ == "__main__":
    main()
