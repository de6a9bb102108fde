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

``--libraries eskit eventsourcing`` runs every case with ``eventsourcing`` 9.5's DCB
recorder too (``eventsourcing.dcb.postgres_tt``), interleaved, on a schema of its own.

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


LIBRARIES = ("eskit", "eventsourcing")


@dataclass
class Run:
    mode: str
    writers: int
    seconds: float
    appended: int
    conflicts: int
    library: str = "eskit"

    @property
    def per_second(self) -> float:
        return self.appended / self.seconds


def _writer(dsn: str, schema: str, mode: str, n: int, seconds: float, start: Any,
            results: Any, library: str = "eskit") -> None:
    if library == "eventsourcing":
        _peer_writer(dsn, schema, mode, n, seconds, start, results)
        return
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


def _peer_recorder(dsn: str, name: str) -> Any:
    """The peer's DCB recorder: ``eventsourcing`` 9.5's PostgreSQL one ("TT": an events
    table and a tags table) under table names of its own, one pooled connection.

    In the public schema: 9.5.6's tags table references the events table without its
    schema, so it cannot be created in another schema (unless that is on search_path)."""
    from eventsourcing.dcb.postgres_tt import PostgresDCBRecorderTT
    from eventsourcing.postgres import PostgresDatastore
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    datastore = PostgresDatastore(
        str(info.get("dbname", "postgres")), str(info.get("host", "127.0.0.1")),
        str(info.get("port", 5432)), str(info.get("user", "postgres")),
        str(info.get("password", "")), pool_size=1,
    )
    return PostgresDCBRecorderTT(datastore, events_table_name=name)


def _peer_writer(dsn: str, schema: str, mode: str, n: int, seconds: float, start: Any,
                 results: Any) -> None:
    """The same decision written with the peer's DCB API (read, then a conditional append
    that raises ``IntegrityError`` when the condition fails)."""
    import orjson
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
    from eventsourcing.persistence import IntegrityError

    recorder = _peer_recorder(dsn, schema)
    course = "shared" if mode == "overlapping" else f"own-{n}"
    appended = conflicts = 0
    query = DCBQuery(items=[DCBQueryItem(types=["Enrolled"], tags=[f"course:{course}"])])
    start.wait()
    deadline = time.monotonic() + seconds
    i = 0
    last: int | None = None
    while time.monotonic() < deadline:
        i += 1
        student = f"w{n}-s{i}"
        event = DCBEvent("Enrolled", orjson.dumps({"course": course, "student": student}),
                         tags=[f"course:{course}", f"student:{student}"])
        if mode == "plain":
            recorder.append([event])
            appended += 1
            continue
        read = recorder.read(query, after=last)
        for _ in read:  # the decision folds what is new
            pass
        if read.head is not None:
            last = read.head
        try:
            recorder.append([event], DCBAppendCondition(fail_if_events_match=query, after=last))
            appended += 1
        except IntegrityError:
            conflicts += 1
    recorder.datastore.close()
    results.put((appended, conflicts))


def run(mode: str, writers: int, seconds: float, dsn: str = DSN,
        library: str = "eskit") -> Run:
    schema = f"eskit_bench_dcb_{uuid.uuid4().hex[:10]}"
    if library == "eventsourcing":
        recorder = _peer_recorder(dsn, schema)
        recorder.create_table()
        recorder.datastore.close()
    else:
        from eskit.stores.postgres import PostgresEventStore

        PostgresEventStore(dsn, schema=schema).close()
    start = SPAWN.Barrier(writers + 1)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=_writer,
                           args=(dsn, schema, mode, n, seconds, start, results, library))
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
            for table in (f"{schema}_tt_tag", f"{schema}_tt_main"):  # the peer's tables
                conn.execute(f'DROP TABLE IF EXISTS public."{table}" CASCADE')
    return Run(mode, writers, seconds, sum(c[0] for c in counts), sum(c[1] for c in counts),
               library)


def main(argv: list[str] | None = None) -> list[Run]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--libraries", nargs="+", default=["eskit"], choices=LIBRARIES,
                        help="eventsourcing: the same decisions with the peer's DCB recorder")
    args = parser.parse_args(argv)
    runs = []
    for writers in args.writers:
        for mode in args.modes:
            for library in args.libraries:  # interleaved: the machine's load hits both
                r = run(mode, writers, args.seconds, library=library)
                runs.append(r)
                print(f"{library:13} {mode:12} {writers} writers: {r.per_second:8.0f} "
                      f"appends/s ({r.appended} appended, {r.conflicts} conditions failed)",
                      flush=True)
    print(json.dumps([{**asdict(r), "per_second": r.per_second} for r in runs], indent=1))
    return runs


if __name__ == "__main__":
    main()
