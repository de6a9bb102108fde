"""Close a SQLite store while threads read from it, many times over (run as a script).

Run by tests/stores/test_sqlite_lifecycle.py in a subprocess, so that a crash
(SIGSEGV) fails that test rather than killing the test run. Prints one line,
``ok <attempts> <store errors>``, or exits non-zero naming the unexpected error.

    python -m tests.stores.sqlite_close_race PATH sync|async ATTEMPTS
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

from eskit import NewEvent, SQLiteEventStore, StoreError
from eskit.aio import AsyncSQLiteEventStore

READERS = 6


def _read_until_closed(store: SQLiteEventStore, errors: list[BaseException],
                       store_errors: list[int], started: threading.Barrier) -> None:
    started.wait()
    try:
        while True:
            store.read_stream("s")
            list(store.read_all())
            store.head_position()
    except StoreError:
        store_errors.append(1)
    except BaseException as exc:  # anything else is a bug the parent must see
        errors.append(exc)


def sync_attempt(path: Path, errors: list[BaseException], store_errors: list[int]) -> None:
    store = SQLiteEventStore(path)
    started = threading.Barrier(READERS + 1)
    threads = [
        threading.Thread(target=_read_until_closed, args=(store, errors, store_errors, started))
        for _ in range(READERS)
    ]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.002)
    store.close()
    for thread in threads:
        thread.join(10)
        if thread.is_alive():
            errors.append(RuntimeError("a reader did not stop after close()"))


async def _async_attempt(path: Path, errors: list[BaseException],
                         store_errors: list[int]) -> None:
    store = await AsyncSQLiteEventStore.open(path)

    async def read() -> None:
        try:
            while True:
                await store.read_stream("s")
                [e async for e in store.read_all()]
        except StoreError:
            store_errors.append(1)
        except BaseException as exc:
            errors.append(exc)

    tasks = [asyncio.create_task(read()) for _ in range(READERS)]
    await asyncio.sleep(0.003)
    await store.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


def main() -> int:
    path, mode, attempts = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with SQLiteEventStore(path) as store:
        for i in range(20):
            store.append("s", [NewEvent("Happened", {"i": i, "pad": "x" * 200})] * 1)
    errors: list[BaseException] = []
    store_errors: list[int] = []
    for _ in range(attempts):
        if mode == "sync":
            sync_attempt(path, errors, store_errors)
        else:
            asyncio.run(_async_attempt(path, errors, store_errors))
        if errors:
            print(f"unexpected {type(errors[0]).__name__}: {errors[0]}")
            return 1
    print(f"ok {attempts} {len(store_errors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
