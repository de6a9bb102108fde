"""Concurrent appends: worker processes (``multiprocessing`` spawn), each with its own store.

A :class:`WorkerGroup` starts its processes once (untimed); each opens its own
driver (an eskit store with its own pool, or a raw connection) and then waits
for jobs. For a timed run the parent sends each participating worker its job,
waits until all have built their inputs and report ready, then sets one shared
event; every worker times its own appends from that moment and reports its
elapsed time, so neither process start nor messaging is timed.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from typing import Any

from benchmarks.backends import Driver, run_commands
from benchmarks.model import amounts

__all__ = ["WorkerGroup"]

TIMEOUT = 600.0


def _worker(opener: Callable[[], Driver], index: int, conn: Connection, go: EventType) -> None:
    try:
        driver = opener()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        conn.send(("started",))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            _, prefix, appends, streams = message
            names = [f"{prefix}w{index}-account-{i}" for i in range(streams)]
            amts = amounts(appends)
            gc.collect()
            conn.send(("ready",))
            go.wait()
            start = time.perf_counter()
            done = run_commands(driver, names, amts)
            elapsed = time.perf_counter() - start
            conn.send(("done", elapsed, done, driver.stored(names)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        driver.close()


class WorkerGroup:
    """Up to ``size`` worker processes appending through drivers made by ``opener``.

    ``opener`` must be picklable (it is sent to spawned processes).
    """

    def __init__(self, opener: Callable[[], Driver], size: int) -> None:
        self.opener, self.size = opener, size
        self.workers: list[tuple[BaseProcess, Connection]] = []

    def start(self) -> None:
        if self.workers:
            return
        ctx = multiprocessing.get_context("spawn")
        self.go = ctx.Event()
        for index in range(self.size):
            parent, child = ctx.Pipe()
            proc: BaseProcess = ctx.Process(
                target=_worker, args=(self.opener, index, child, self.go),
                name=f"bench-worker-{index}", daemon=True,
            )
            proc.start()
            child.close()
            self.workers.append((proc, parent))
        for proc, conn in self.workers:
            self._expect(proc, conn, "started")

    def run(self, procs: int, prefix: str, appends: int,
            streams: int) -> list[tuple[float, int, int]]:
        """``appends`` commands in each of ``procs`` workers, each on its own ``streams``
        streams; per worker (seconds, events appended, events stored in its streams)."""
        self.start()
        chosen = self.workers[:procs]
        self.go.clear()
        for _, conn in chosen:
            conn.send(("run", prefix, appends, streams))
        for proc, conn in chosen:
            self._expect(proc, conn, "ready")
        self.go.set()
        return [self._expect(proc, conn, "done")[1:] for proc, conn in chosen]

    @staticmethod
    def _expect(proc: BaseProcess, conn: Connection, kind: str) -> Any:
        if not conn.poll(TIMEOUT):
            raise RuntimeError(f"{proc.name}: no answer within {TIMEOUT:.0f} s")
        try:
            message = conn.recv()
        except EOFError:
            raise RuntimeError(f"{proc.name} exited (code {proc.exitcode})") from None
        if message[0] == "error":
            raise RuntimeError(f"{proc.name} failed:\n{message[1]}")
        assert message[0] == kind, message
        return message

    def close(self) -> None:
        for _, conn in self.workers:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for proc, conn in self.workers:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            conn.close()
        self.workers = []
