"""Sync SQLite subscriptions wake on any process's commit, by watching ``PRAGMA data_version``.

Every subscription here polls only every 30 s, so an event delivered within a
test's timeout was delivered by a wake-up, not a poll.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from eskit import NewEvent, SQLiteEventStore, StoreError, Subscription
from eskit.stores.sqlite_wakeups import DataVersionWatch
from eskit.subscription import SQLITE_CHECK_INTERVAL

LIVE = 30.0

_CHILD = """
import sys, time
from eskit import NewEvent, SQLiteEventStore
store = SQLiteEventStore(sys.argv[1])
for n in range(int(sys.argv[2])):
    sys.stdin.readline()
    store.append("child", [NewEvent("E", {"n": n})])
    print(time.time(), flush=True)
store.close()
"""


class _CountingReads:
    """The store as a subscription sees it, counting its read_all calls."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.reads = 0

    def read_all(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self.store.read_all(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _iterate(subscription: Subscription, into: list[Any], arrived: list[float]) -> threading.Thread:
    def run() -> None:
        for event in subscription:
            into.append(event)
            arrived.append(time.time())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_a_sync_subscription_wakes_on_a_commit_by_another_process_without_polling_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    rounds = 8
    store = SQLiteEventStore(path)
    counting = _CountingReads(store)
    subscription = Subscription(counting, poll_interval=LIVE)
    received: list[Any] = []
    arrived: list[float] = []
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(rounds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    thread = _iterate(subscription, received, arrived)
    try:
        _wait_until(lambda: counting.reads == 1)
        time.sleep(0.5)  # caught up and waiting: no commit, so no further read
        assert counting.reads == 1, "an idle subscription must not poll read_all"
        delays = []
        for n in range(rounds):
            child.stdin.write("go\n")
            child.stdin.flush()
            committed = float(child.stdout.readline())
            _wait_until(lambda n=n: len(received) > n)
            delays.append(arrived[n] - committed)
            time.sleep(0.13)  # land the next commit anywhere in a check interval
        assert [e.event_data["n"] for e in received] == list(range(rounds))
        # One read per commit seen (each wake-up reads once, finds the event, waits).
        assert counting.reads <= 1 + rounds
    finally:
        subscription.stop()
        thread.join(5)
        store.close()
        assert child.wait(10) == 0
    assert not thread.is_alive()
    print(f"sync cross-process wake-up delays (ms): {[round(d * 1000, 1) for d in delays]}")
    # A lost wake-up would take the 30 s poll; the check runs every 50 ms. The bound
    # is loose for a shared machine; the delays printed above are the measurement.
    assert max(delays) < 2.0
    assert statistics.median(delays) < 0.5
    assert SQLITE_CHECK_INTERVAL < 0.1


def test_closing_the_store_ends_a_waiting_subscription_at_once(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    subscription = store.subscribe(poll_interval=LIVE)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            for _ in subscription:
                pass
        except StoreError as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.3)  # waiting
    store.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(failed) == 1


def test_the_watch_sees_only_other_connections_commits_and_takes_a_baseline_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    try:
        store.append("before", [NewEvent("E")])
        watch = store._watch_file()
        assert watch.changed() is False, "the first look is the baseline"
        assert watch.changed() is False
        store.append("s", [NewEvent("E")])
        assert watch.changed() is True
        assert watch.changed() is False, "each commit is reported once"
        watch.close()
        store.append("s", [NewEvent("E")])
        assert watch.changed() is False, "a closed watch reports nothing"
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_the_watch_hands_no_connection_to_a_forked_child_and_reports_a_change_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    try:
        watch: DataVersionWatch = store._watch_file()
        assert watch.changed() is False
        pid = os.fork()
        if pid == 0:  # the child: nothing inherited open; exit without cleanup
            os._exit(0 if watch._conn is None else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # Commits during the fork cannot be known: the next look says "changed".
        assert watch.changed() is True
        assert watch.changed() is False
        watch.close()
    finally:
        store.close()


def test_a_watch_that_reconnects_never_creates_a_file_where_the_store_was_deleted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    try:
        watch = store._watch_file()
        watch.close()
        fresh = store._watch_file()
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with pytest.raises(StoreError):
            fresh.changed()
        assert not path.exists()
        fresh.close()
    finally:
        store.close()
