"""The SQLite store's connections over its life: threads that come and go, and close().

A crash in the store kills the interpreter, so the close() race runs in a
subprocess: a SIGSEGV fails that test instead of ending the test run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eskit import NewEvent, SQLiteEventStore, SQLiteSnapshotStore, StoreError
from eskit.aio import AsyncSQLiteEventStore
from eskit.stores.sqlite import MAX_IDLE_READERS

ROOT = Path(__file__).resolve().parents[2]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("front", ["sync", "async"])
def test_closing_the_store_while_threads_read_raises_store_error_and_never_crashes(
    tmp_path: Path, front: str,
) -> None:
    attempts = 40
    result = subprocess.run(
        [sys.executable, "-m", "tests.stores.sqlite_close_race", str(tmp_path / "race.db"),
         front, str(attempts)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, (
        f"exit status {result.returncode} (negative: killed by that signal)\n"
        f"{result.stdout}{result.stderr}"
    )
    ok, runs, store_errors = result.stdout.split()
    assert (ok, int(runs)) == ("ok", attempts)
    # The readers were running when close() came: they saw it, as StoreError.
    assert int(store_errors) >= attempts


def test_a_closed_store_refuses_reads_and_snapshots_with_store_error(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    snapshots = SQLiteSnapshotStore(store)
    store.append("s", [NewEvent("A")], 0)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.read_stream("s")
    with pytest.raises(StoreError, match="closed"):
        list(store.read_all())
    with pytest.raises(StoreError, match="closed"):
        snapshots.latest("s", "Agg")


def test_thousands_of_short_lived_threads_do_not_leak_connections(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "events.db") as store:
        store.append("warm-up", [NewEvent("A")])
        store.read_stream("warm-up")
        before = _open_fds()
        errors: list[BaseException] = []

        def request(n: int) -> None:  # what one request of a thread-per-request server does
            try:
                store.append(f"s-{n % 50}", [NewEvent("Requested", {"n": n})])
                store.read_stream(f"s-{n % 50}")
                store.head_position()
            except BaseException as exc:
                errors.append(exc)

        threads_run = 0
        for wave in range(100):  # 3,000 threads, 30 alive at a time
            threads = [threading.Thread(target=request, args=(wave * 30 + i,)) for i in range(30)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            threads_run += len(threads)
        assert not errors, errors[:3]
        after = _open_fds()
        assert threads_run == 3000
        assert store.head_position() == 3001
        # At most the pool's idle readers stay open, two descriptors each.
        assert after - before <= 2 * MAX_IDLE_READERS, (before, after)
    assert _open_fds() <= before - 2, "close() left descriptors open"


def test_event_loops_that_come_and_go_do_not_leak_connections(tmp_path: Path) -> None:
    store = AsyncSQLiteEventStore(tmp_path / "events.db")

    async def requests(n: int) -> None:  # each asyncio.run starts new worker threads
        await asyncio.gather(*(store.append(f"s-{n}-{i}", [NewEvent("A")]) for i in range(4)))
        await asyncio.gather(*(store.read_stream(f"s-{n}-{i}") for i in range(4)))

    asyncio.run(requests(-1))
    before = _open_fds()
    for n in range(150):
        asyncio.run(requests(n))
    after = _open_fds()
    asyncio.run(store.close())
    assert after - before <= 2 * MAX_IDLE_READERS, (before, after)
