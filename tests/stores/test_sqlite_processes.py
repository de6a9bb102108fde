"""Several processes (and threads) writing one SQLite file at the same time.

Each worker process counts what happened to every call by exception type and
reports back; any exception other than the one the test expects, and above all
anything mentioning "database is locked", fails the test. Processes use the
``spawn`` start method, so they share nothing with the parent but the file.
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eskit import (
    ANY,
    NO_STREAM,
    ConcurrencyError,
    NewEvent,
    SQLiteEventStore,
    StoreBusyError,
)

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 120  # seconds; only reached if something hangs


# --------------------------------------------------------------------------- reporting


def _new_report(worker: int) -> dict[str, Any]:
    return {"worker": worker, "ok": 0, "errors": Counter(), "locked": [], "versions": [],
            "fatal": None}


def _record(report: dict[str, Any], exc: BaseException) -> None:
    report["errors"][type(exc).__name__] += 1
    text = f"{type(exc).__name__}: {exc}"
    if "locked" in text.lower() or isinstance(exc, StoreBusyError):
        report["locked"].append(text)


def _guarded(worker: int, results: Any, body: Any) -> None:
    """Run ``body(report)`` in a worker and always send the report back."""
    report = _new_report(worker)
    try:
        body(report)
    except BaseException as exc:  # setup failures (opening the store) count too
        _record(report, exc)
        report["fatal"] = f"{type(exc).__name__}: {exc}"
    results.put(report)


def _run_processes(target: Any, args: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Start one process per args tuple (behind a shared barrier) and collect reports."""
    barrier = SPAWN.Barrier(len(args))
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=target, args=(worker, results, barrier, *a), daemon=True)
        for worker, a in enumerate(args)
    ]
    for p in procs:
        p.start()
    reports = []
    deadline = time.monotonic() + TIMEOUT
    try:
        for _ in procs:  # read before joining: a full queue would block the children
            reports.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {len(procs)} worker processes reported back")
    finally:
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return sorted(reports, key=lambda r: r["worker"])


def _assert_no_surprises(reports: list[dict[str, Any]], allowed: set[str]) -> None:
    locked = [msg for r in reports for msg in r["locked"]]
    assert not locked, f"lock errors reached the caller: {locked[:5]}"
    fatal = [r["fatal"] for r in reports if r["fatal"]]
    assert not fatal, f"workers failed: {fatal}"
    seen = Counter()
    for r in reports:
        seen.update(r["errors"])
    unexpected = {name: n for name, n in seen.items() if name not in allowed}
    assert not unexpected, f"unexpected exception types: {unexpected}"


# --------------------------------------------------------------------------- workers


def _think(i: int) -> None:
    """Between reading the head and appending, sometimes take a moment (a command's
    work), so that other writers really get in between and the race is exercised."""
    if i % 2:
        time.sleep(random.uniform(0, 0.002))



def _same_stream_worker(
    worker: int, results: Any, barrier: Any, path: str, stream: str, attempts: int
) -> None:
    def body(report: dict[str, Any]) -> None:
        store = SQLiteEventStore(path)
        barrier.wait(timeout=TIMEOUT)
        try:
            for i in range(attempts):
                try:
                    head = store.head_version(stream)
                    _think(i)
                    result = store.append(
                        stream, [NewEvent("Ticked", {"worker": worker, "i": i})], head
                    )
                except Exception as exc:
                    _record(report, exc)
                else:
                    report["ok"] += 1
                    report["versions"].append(result.version)
        finally:
            store.close()

    _guarded(worker, results, body)


def _mode_worker(
    worker: int, results: Any, barrier: Any, path: str, mode: str, attempts: int
) -> None:
    """NO_STREAM: everybody tries to create the same fresh streams. ANY: one shared stream."""

    def body(report: dict[str, Any]) -> None:
        store = SQLiteEventStore(path)
        barrier.wait(timeout=TIMEOUT)
        try:
            for i in range(attempts):
                stream = f"new-{i}" if mode == "no_stream" else "shared"
                expected = NO_STREAM if mode == "no_stream" else ANY
                try:
                    result = store.append(
                        stream, [NewEvent("Claimed", {"worker": worker, "i": i})], expected
                    )
                except Exception as exc:
                    _record(report, exc)
                else:
                    report["ok"] += 1
                    report["versions"].append((stream, result.version))
        finally:
            store.close()

    _guarded(worker, results, body)


def _batch_worker(
    worker: int, results: Any, barrier: Any, path: str, batches: int, size: int,
    open_after_barrier: bool, streams_per_worker: int,
) -> None:
    def body(report: dict[str, Any]) -> None:
        if open_after_barrier:  # everybody creates/opens the file at the same moment
            barrier.wait(timeout=TIMEOUT)
            store = SQLiteEventStore(path)
        else:
            store = SQLiteEventStore(path)
            barrier.wait(timeout=TIMEOUT)
        heads = [0] * streams_per_worker
        try:
            for b in range(batches):
                s = b % streams_per_worker
                stream = f"proc-{worker}-{s}"
                events = [
                    NewEvent("Counted", {"worker": worker, "stream": s, "batch": b, "i": i})
                    for i in range(size)
                ]
                try:
                    result = store.append(stream, events, heads[s])
                except Exception as exc:
                    _record(report, exc)
                    heads[s] = store.head_version(stream)
                else:
                    report["ok"] += 1
                    heads[s] = result.version
                if b % 10 == 9:  # readers run beside the writers too
                    try:
                        list(store.read_all(limit=50))
                        store.head_position()
                        store.read_stream(stream, backwards=True, limit=3)
                    except Exception as exc:
                        _record(report, exc)
        finally:
            store.close()

    _guarded(worker, results, body)


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_processes_racing_on_one_stream_with_exact_versions(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    SQLiteEventStore(path).close()  # create the schema up front; the race is on the stream
    reports = _run_processes(_same_stream_worker, [(path, "account-1", 50)] * 4)

    _assert_no_surprises(reports, allowed={"ConcurrencyError"})
    successes = sum(r["ok"] for r in reports)
    conflicts = sum(r["errors"]["ConcurrencyError"] for r in reports)
    assert successes + conflicts == 4 * 50
    assert successes >= 1
    assert conflicts >= 1, "the processes never raced; the test proved nothing"

    with SQLiteEventStore(path) as store:
        events = store.read_stream("account-1")
        assert [e.version for e in events] == list(range(1, successes + 1))
        assert store.head_version("account-1") == successes
        # Every reported success is there exactly once, and nothing else is.
        reported = sorted(v for r in reports for v in r["versions"])
        assert reported == list(range(1, successes + 1))
        by_version = {e.version: e.event_data["worker"] for e in events}
        for r in reports:
            assert all(by_version[v] == r["worker"] for v in r["versions"])
        assert len({e.event_id for e in events}) == successes


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["no_stream", "any"])
def test_processes_racing_with_named_expectations(tmp_path: Path, mode: str) -> None:
    path = str(tmp_path / "modes.db")
    SQLiteEventStore(path).close()
    attempts = 25
    reports = _run_processes(_mode_worker, [(path, mode, attempts)] * 4)

    with SQLiteEventStore(path) as store:
        if mode == "no_stream":
            # Exactly one creator per stream; everybody else hears ConcurrencyError.
            _assert_no_surprises(reports, allowed={"ConcurrencyError"})
            assert sum(r["ok"] for r in reports) == attempts
            assert sum(r["errors"]["ConcurrencyError"] for r in reports) == 3 * attempts
            for i in range(attempts):
                assert [e.version for e in store.read_stream(f"new-{i}")] == [1]
        else:
            _assert_no_surprises(reports, allowed=set())
            assert sum(r["ok"] for r in reports) == 4 * attempts
            events = store.read_stream("shared")
            assert [e.version for e in events] == list(range(1, 4 * attempts + 1))
            reported = sorted(v for r in reports for _, v in r["versions"])
            assert reported == list(range(1, 4 * attempts + 1))


@pytest.mark.slow
def test_processes_appending_batches_to_their_own_streams(tmp_path: Path) -> None:
    path = str(tmp_path / "batches.db")
    SQLiteEventStore(path).close()
    workers, batches, size = 4, 100, 5
    reports = _run_processes(_batch_worker, [(path, batches, size, False, 1)] * workers)

    _assert_no_surprises(reports, allowed=set())
    assert [r["ok"] for r in reports] == [batches] * workers

    with SQLiteEventStore(path) as store:
        everything = list(store.read_all())
        assert len(everything) == workers * batches * size
        positions = [e.position for e in everything]
        assert all(a < b for a, b in itertools.pairwise(positions))
        assert len({e.event_id for e in everything}) == len(everything)
        for w in range(workers):
            events = store.read_stream(f"proc-{w}-0")
            assert [e.version for e in events] == list(range(1, batches * size + 1))
            for e in events:  # batch b holds versions 5b+1 .. 5b+5, in order
                assert e.version == e.event_data["batch"] * size + e.event_data["i"] + 1
        # One writer at a time: in the global order no other event sits inside a batch.
        for first in range(0, len(everything), size):
            chunk = everything[first : first + size]
            assert len({(e.aggregate_id, e.event_data["batch"]) for e in chunk}) == 1
            assert [e.event_data["i"] for e in chunk] == list(range(size))


@pytest.mark.slow
def test_eight_writer_processes_never_see_database_is_locked(tmp_path: Path) -> None:
    # The file does not exist yet: all eight processes create/open it at the same
    # moment, then hammer two streams each.
    path = str(tmp_path / "hammer.db")
    workers, batches, size = 8, 60, 2
    reports = _run_processes(_batch_worker, [(path, batches, size, True, 2)] * workers)

    _assert_no_surprises(reports, allowed=set())
    assert [r["ok"] for r in reports] == [batches] * workers

    with SQLiteEventStore(path) as store:
        everything = list(store.read_all())
        assert len(everything) == workers * batches * size
        positions = [e.position for e in everything]
        assert all(a < b for a, b in itertools.pairwise(positions))
        for w in range(workers):
            for s in range(2):
                versions = [e.version for e in store.read_stream(f"proc-{w}-{s}")]
                assert versions == list(range(1, batches // 2 * size + 1))


def test_threads_sharing_one_store_race_on_one_stream(tmp_path: Path) -> None:
    threads, attempts = 8, 50
    store = SQLiteEventStore(tmp_path / "threads.db")
    barrier = threading.Barrier(threads)
    reports = [_new_report(t) for t in range(threads)]

    def run(t: int) -> None:
        report = reports[t]
        try:
            barrier.wait(timeout=TIMEOUT)
            for i in range(attempts):
                try:
                    head = store.head_version("shared")
                    _think(i)
                    result = store.append(
                        "shared", [NewEvent("Ticked", {"thread": t, "i": i})], head
                    )
                except Exception as exc:
                    _record(report, exc)
                else:
                    report["ok"] += 1
                    report["versions"].append(result.version)
        except BaseException as exc:
            report["fatal"] = f"{type(exc).__name__}: {exc}"

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=TIMEOUT)
    assert not any(th.is_alive() for th in pool)

    try:
        _assert_no_surprises(reports, allowed={"ConcurrencyError"})
        successes = sum(r["ok"] for r in reports)
        losers = sum(r["errors"]["ConcurrencyError"] for r in reports)
        assert successes + losers == threads * attempts
        assert losers >= 1, "the threads never raced; the test proved nothing"
        events = store.read_stream("shared")
        assert [e.version for e in events] == list(range(1, successes + 1))
        assert sorted(v for r in reports for v in r["versions"]) == list(
            range(1, successes + 1)
        )
        by_version = {e.version: e.event_data["thread"] for e in events}
        for r in reports:
            assert all(by_version[v] == r["worker"] for v in r["versions"])
    finally:
        store.close()


def test_a_loser_of_the_race_can_reload_and_retry(tmp_path: Path) -> None:
    """ConcurrencyError carries the actual version; retrying from it succeeds."""
    store = SQLiteEventStore(tmp_path / "retry.db")
    other = SQLiteEventStore(tmp_path / "retry.db")  # a second connection, as another process
    try:
        store.append("s", [NewEvent("A")], NO_STREAM)
        other.append("s", [NewEvent("B")], 1)
        with pytest.raises(ConcurrencyError) as info:
            store.append("s", [NewEvent("C")], 1)
        assert info.value.actual_version == 2
        assert store.append("s", [NewEvent("C")], info.value.actual_version).version == 3
        assert [e.event_type for e in other.read_stream("s")] == ["A", "B", "C"]
    finally:
        store.close()
        other.close()
