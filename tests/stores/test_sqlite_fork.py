"""A SQLite store (and target) opened before fork(): every acknowledged append survives.

The children of a process that opened the store — multiprocessing's "fork"
start method, a gunicorn ``--preload`` master, Celery prefork — append through
the store they inherited, or through one they open themselves, while the parent
closes its store or exits. Each child reports the id of every append the store
acknowledged; afterwards every one of them must be in the file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eskit import NewEvent, SQLiteEventStore, SQLiteSnapshotStore, SQLiteTarget, StoreError, utc_now
from eskit.codec import encode
from eskit.snapshots import Snapshot

FORK = multiprocessing.get_context("fork")
CHILDREN = 3
APPENDS = 200  # per child
ROOT = Path(__file__).resolve().parents[2]


def _stored_ids(path: Path) -> set[UUID]:
    with SQLiteEventStore(path, create=False) as store:
        return {event.event_id for event in store.read_all()}


def _append_and_report(store: SQLiteEventStore, child: int, progress: Any) -> list[str]:
    acked = []
    for n in range(APPENDS):
        result = store.append(f"child-{child}", [NewEvent("Appended", {"n": n})])
        acked.append(str(result.events[0].event_id))
        with progress.get_lock():
            progress.value += 1
        time.sleep(0.001)  # let the parent's close land mid-run
    return acked


def _child(store: SQLiteEventStore, mode: str, child: int, progress: Any, results: Any) -> None:
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("eskit.stores.sqlite")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        if mode == "own":  # the child opens the file itself; the parent's store stays open
            store = SQLiteEventStore(store.path)
        acked = _append_and_report(store, child, progress)
        head = store.read_stream(f"child-{child}", backwards=True, limit=1)[0]
        SQLiteSnapshotStore(store).save(_snapshot(child, head))
        results.put((child, acked, records, None))
    except BaseException as exc:
        results.put((child, [], records, f"{type(exc).__name__}: {exc}"))


def _snapshot(child: int, head: Any) -> Snapshot:
    return Snapshot(f"child-{child}", "Counter", head.version, head.event_id, 1,
                    encode({"n": head.version}), utc_now())


@pytest.mark.parametrize("mode", ["inherited", "own"])
@pytest.mark.parametrize("with_target", [False, True], ids=["store", "store+target"])
def test_children_forked_after_open_lose_no_acknowledged_append_when_the_parent_closes(
    tmp_path: Path, mode: str, with_target: bool,
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    parent_ids = {e.event_id for e in store.append("parent", [NewEvent("Opened")]).events}
    target = SQLiteTarget(path) if with_target else None
    progress = FORK.Value("i", 0)
    results = FORK.Queue()
    children = [
        FORK.Process(target=_child, args=(store, mode, n, progress, results))
        for n in range(CHILDREN)
    ]
    for child in children:
        child.start()
    # The parent keeps using its store after the forks, then closes it mid-run.
    parent_ids |= {e.event_id for e in store.append("parent", [NewEvent("Forked")]).events}
    deadline = time.monotonic() + 60
    while progress.value < CHILDREN * APPENDS // 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert progress.value < CHILDREN * APPENDS, "the children finished before the close"
    store.close()
    if target is not None:
        target.close()
    reports = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    acked: set[UUID] = set()
    for n, ids, log, failure in sorted(reports):
        assert failure is None, f"child {n}: {failure}"
        assert len(ids) == APPENDS
        acked |= {UUID(i) for i in ids}
        if mode == "inherited":  # item 23: the reopening is logged, at DEBUG only
            assert any("after a fork" in line for line in log), log
    stored = _stored_ids(path)
    assert acked - stored == set(), f"{len(acked - stored)} acknowledged appends were lost"
    assert stored == acked | parent_ids
    with SQLiteEventStore(path) as reopened:
        for n in range(CHILDREN):
            assert SQLiteSnapshotStore(reopened).latest(f"child-{n}", "Counter") is not None


# A gunicorn --preload master, as a script: it opens the store at import, forks
# workers with os.fork(), and then closes the store or exits while they append.
_PRELOAD = r'''
import os, sys, time
from eskit import NewEvent, utc_now, SQLiteEventStore, SQLiteTarget

path, out, how = sys.argv[1], sys.argv[2], sys.argv[3]
store = SQLiteEventStore(path)          # preloaded by the master
target = SQLiteTarget(path)             # a projection target on the same file
store.append("master", [NewEvent("Booted")])
for worker in range(3):
    if os.fork() == 0:                  # a worker: serve "requests" through the inherited store
        with open(f"{out}/worker-{worker}.acked", "w") as acked:
            for n in range(200):
                result = store.append(f"worker-{worker}", [NewEvent("Served", {"n": n})])
                acked.write(f"{result.events[0].event_id}\n")
                acked.flush()
                time.sleep(0.002)
        os.rename(f"{out}/worker-{worker}.acked", f"{out}/worker-{worker}.done")
        os._exit(0)
time.sleep(0.15)                        # the workers are mid-run
if how == "close":
    store.close()
    target.close()
    time.sleep(2)
# how == "exit": the master exits with the store open; the workers carry on.
'''


@pytest.mark.parametrize("how", ["close", "exit"])
def test_preforked_workers_lose_no_acknowledged_append_when_the_master_closes_or_exits(
    tmp_path: Path, how: str,
) -> None:
    path = tmp_path / "events.db"
    master = subprocess.run(
        [sys.executable, "-c", _PRELOAD, str(path), str(tmp_path), how],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert master.returncode == 0, master.stderr
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.done"))) < 3:
        assert time.monotonic() < deadline, "the workers did not finish"
        time.sleep(0.05)
    acked = {UUID(line) for f in tmp_path.glob("*.done") for line in f.read_text().split()}
    assert len(acked) == 3 * 200
    stored = _stored_ids(path)
    assert acked - stored == set(), f"{len(acked - stored)} acknowledged appends were lost"
    assert len(stored) == len(acked) + 1


def _use_in_child(store: SQLiteEventStore, results: Any) -> None:
    try:
        store.append("child", [NewEvent("A")])
        results.put("ok")
    except StoreError as exc:
        results.put(f"StoreError: {exc}")


def test_an_in_memory_store_is_the_childs_own_copy_after_fork() -> None:
    store = SQLiteEventStore()
    store.append("s", [NewEvent("Before")])
    results = FORK.Queue()
    child = FORK.Process(target=_use_in_child, args=(store, results))
    child.start()
    assert results.get(timeout=30) == "ok"
    child.join(30)
    assert [e.event_type for e in store.read_stream("s")] == ["Before"]
    assert store.read_stream("child") == []
    store.close()


def test_the_parent_keeps_working_across_many_forks(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "events.db") as store:
        for n in range(5):
            store.append("s", [NewEvent("A", {"n": n})])
            pid = os.fork()
            if pid == 0:
                os._exit(0 if store.head_version("s") == n + 1 else 1)
            assert os.waitpid(pid, 0)[1] == 0
            assert store.head_version("s") == n + 1
