"""The cost of data protection: append, read-all and load rates with and without it, one run.

``python -m benchmarks.protection [--quick] [--events N] [--repeat N] [--backend sqlite|postgres]``

One workload: customer events of about 200 bytes of JSON, two of whose fields (name
and email) are personal data of the customer the event names, over a few hundred
customers (subjects). Each backend is written and read in three modes, in the same
run, each on a fresh store:

* ``plain``: the store as it is;
* ``fields``: ``protect(store, keys, personal_data=...)``: the two fields sealed with
  the subject's key (AES-256-GCM), the subjects' wrapped keys in the same database;
* ``fields+payload``: ``encrypt_payloads=True`` as well: the whole payload sealed
  with the store key on top.

Append is batches of ``batch`` events to one stream each (``expected`` = the stream's
version, as a command would); read-all is the whole log through ``read_all``; load is
every stream through ``read_stream``. Rates are the median of ``--repeat`` runs;
the ratio is each mode's rate over ``plain``'s in the same run. Issue 15 asks for
each within 25% of the unprotected rate (ratio >= 0.75).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eskit import EventStore, NewEvent, SQLiteEventStore
from eskit.protection import LocalKeyProvider, PersonalFields, generate_master_key, protect

DSN = os.environ.get("ESKIT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MODES = ("plain", "fields", "fields+payload")
PERSONAL = {"CustomerContacted": PersonalFields("customer_id", ["name", "email"])}


@dataclass(frozen=True)
class Sizes:
    events: int
    streams: int
    subjects: int
    batch: int


FULL = Sizes(events=20_000, streams=400, subjects=400, batch=50)
QUICK = Sizes(events=200, streams=8, subjects=8, batch=10)


@dataclass(frozen=True)
class Result:
    backend: str
    mode: str
    events: int
    append_per_s: float
    read_all_per_s: float
    load_per_s: float


def payload(n: int, sizes: Sizes) -> dict[str, Any]:
    customer = n % sizes.subjects
    return {
        "customer_id": f"customer-{customer}",
        "name": f"Customer Number {customer} Lovelace",
        "email": f"customer.{customer}@example.org",
        "channel": "email" if n % 3 else "phone",
        "topic": "renewal",
        "amount": f"{n % 997}.{n % 100:02d}",
        "sequence": n,
    }


def batches(sizes: Sizes) -> Iterator[tuple[str, list[NewEvent]]]:
    """``(stream, events)`` batches of ``sizes.batch``, the streams taken round-robin,
    until ``sizes.events`` are made."""
    n = 0
    while n < sizes.events:
        for s in range(sizes.streams):
            if n >= sizes.events:
                return
            events = [NewEvent("CustomerContacted", payload(n + i, sizes))
                      for i in range(min(sizes.batch, sizes.events - n))]
            n += len(events)
            yield f"customer-{s}", events


@contextmanager
def fresh_store(backend: str, folder: Path, name: str) -> Iterator[EventStore]:
    if backend == "sqlite":
        with SQLiteEventStore(folder / f"{name}.db") as store:
            yield store
        return
    from eskit.stores.postgres import PostgresEventStore

    schema = f"bench_protect_{name}_{os.getpid()}"
    store = PostgresEventStore(DSN, schema=schema)
    try:
        yield store
    finally:
        store.close()
        import psycopg

        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def wrap(store: EventStore, mode: str) -> EventStore:
    if mode == "plain":
        return store
    keys = LocalKeyProvider.parse(generate_master_key("bench"))
    return protect(store, keys, personal_data=PERSONAL,
                   encrypt_payloads=mode == "fields+payload")


def timed(work: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - started)


def run_one(backend: str, mode: str, sizes: Sizes, folder: Path, tag: str) -> Result:
    with fresh_store(backend, folder, f"{mode.replace('+', '_')}_{tag}") as inner:
        store = wrap(inner, mode)
        work = list(batches(sizes))
        versions: dict[str, int] = {}

        def append() -> int:
            count = 0
            for stream, events in work:
                result = store.append(stream, events, versions.get(stream, 0))
                versions[stream] = result.version
                count += len(events)
            return count

        def read_all() -> int:
            return sum(1 for _ in store.read_all())

        def load() -> int:
            return sum(len(store.read_stream(stream)) for stream in versions)

        appended = timed(append)
        read = timed(read_all)
        loaded = timed(load)
        # What protection must not change: every event comes back, in clear.
        first = store.read_stream("customer-0")[0].event_data
        if first["name"] != payload(0, sizes)["name"]:
            raise AssertionError(f"{mode}: the personal field did not come back in clear")
        if mode != "plain":
            stored = inner.read_stream("customer-0")[0].event_data
            if "Lovelace" in json.dumps(stored, default=str):
                raise AssertionError(f"{mode}: plaintext reached the store")
        total = sum(versions.values())
        return Result(backend, mode, total, appended, read, loaded)


def run(backends: list[str], sizes: Sizes, repeat: int) -> list[Result]:
    out: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="eskit-bench-protect-") as tmp:
        for backend in backends:
            per_mode: dict[str, list[Result]] = {m: [] for m in MODES}
            for r in range(repeat):
                for mode in MODES:  # interleaved: the machine's load hits every mode alike
                    per_mode[mode].append(run_one(backend, mode, sizes, Path(tmp), str(r)))
            for mode in MODES:
                runs = per_mode[mode]
                out.append(Result(
                    backend, mode, runs[0].events,
                    statistics.median(x.append_per_s for x in runs),
                    statistics.median(x.read_all_per_s for x in runs),
                    statistics.median(x.load_per_s for x in runs),
                ))
    return out


def render(results: list[Result]) -> str:
    plain = {r.backend: r for r in results if r.mode == "plain"}
    lines = ["| backend | mode | append ev/s | ratio | read-all ev/s | ratio | load ev/s | ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        p = plain[r.backend]
        lines.append(
            f"| {r.backend} | {r.mode} | {r.append_per_s:,.0f}"
            f" | {r.append_per_s / p.append_per_s:.2f}"
            f" | {r.read_all_per_s:,.0f} | {r.read_all_per_s / p.read_all_per_s:.2f}"
            f" | {r.load_per_s:,.0f} | {r.load_per_s / p.load_per_s:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.protection")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    parser.add_argument("--events", type=int,
                        help="events per run (default 20,000), in batches of 50 to 400 streams")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.events:
        sizes = Sizes(events=args.events, streams=FULL.streams, subjects=FULL.subjects,
                      batch=FULL.batch)
    results = run(args.backend or ["sqlite", "postgres"], sizes, args.repeat)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
