"""Processes for the bus fault tests (tests/bus/test_bus_faults.py), and the read model they share.

Run as ``python -m tests.bus.bus_fault_workers COMMAND ...``:

- ``append DB COUNT STREAMS``: append COUNT ``Deposited`` events to a SQLite store,
  round-robin over STREAMS streams, a few per append, as a busy application does.
- ``relay DB URL NAME LEASE LOG [--until-caught-up]``: a :class:`~eskit.bus.relay.Relay`
  on the store, publishing to URL. Every publish is logged to LOG (one line when it
  starts, one once the broker confirmed it, with this process's pid, the monotonic
  clock and the positions) before the relay may move its checkpoint.
- ``consume URL GROUP TARGET BLOCK_AT FLAG``: a :class:`~eskit.bus.consumer.Consumer`
  applying the balances read model to a SQLite target; the BLOCK_AT-th handler call
  writes the event id to FLAG and blocks inside its transaction until the process is
  killed (0: never blocks).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Self

from eskit import Event, NewEvent, SQLiteEventStore
from eskit.bus.consumer import Consumer
from eskit.bus.relay import Relay
from eskit.bus.sink import OutgoingMessage, Sink
from eskit.bus.urls import sink_for_url, source_for_url
from eskit.projections.targets import SQLiteTarget

Model = dict[str, tuple[Decimal, int]]


def target(path: str | Path) -> SQLiteTarget:
    """The read model's database, its table created."""
    t = SQLiteTarget(path)
    with t.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS balances "
                     "(stream TEXT PRIMARY KEY, total TEXT NOT NULL, applied INTEGER NOT NULL)")
    return t


def apply(event: Event, conn: Any) -> None:
    """The handler: a running balance and how many events were applied, per stream."""
    row = conn.execute("SELECT total, applied FROM balances WHERE stream = ?",
                       (str(event.stream_id),)).fetchone()
    total, applied = (Decimal(row[0]), row[1]) if row else (Decimal(0), 0)
    conn.execute("INSERT OR REPLACE INTO balances VALUES (?, ?, ?)", (
        str(event.stream_id), str(total + event.event_data["amount"]), applied + 1))


def clean_run(events: Sequence[Event]) -> Model:
    """The read model a consumer that saw each event exactly once would have."""
    out: Model = {}
    for event in events:
        total, count = out.get(str(event.stream_id), (Decimal(0), 0))
        out[str(event.stream_id)] = (total + event.event_data["amount"], count + 1)
    return out


def read_model(t: SQLiteTarget) -> Model:
    with t.transaction() as conn:
        rows = conn.execute("SELECT stream, total, applied FROM balances").fetchall()
    return {r[0]: (Decimal(r[1]), r[2]) for r in rows}


def append(db: str, count: int, streams: int, prefix: str = "account") -> None:
    # NORMAL: no fsync per append; what is under test is the relay, not the store's durability.
    store = SQLiteEventStore(db, synchronous="NORMAL")
    versions = [0] * streams
    n = 0
    while n < count:
        s = n % streams
        size = min(1 + n % 3, count - n)
        store.append(f"{prefix}-{s}", [
            NewEvent("Deposited", {"amount": Decimal(f"{n + i}.{(n + i) % 100:02d}")})
            for i in range(size)
        ], expected_version=versions[s])
        versions[s] += size
        n += size
        if n % 30 < 3:
            time.sleep(0.01)  # spread the appends over the relay's run


class LoggingSink(Sink):
    """Wraps a broker's sink: logs each publish's start and confirm, with positions."""

    scheme: ClassVar[str] = "logging"

    def __init__(self, inner: Sink, log: str, pause: float = 0.01) -> None:
        self.inner = inner
        self.pause = pause
        self.log = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @classmethod
    def from_url(cls, url: str) -> Self:  # pragma: no cover - built directly
        raise NotImplementedError

    @property
    def destination(self) -> str:
        return self.inner.destination

    def _line(self, what: str, messages: Sequence[OutgoingMessage]) -> None:
        positions = ",".join(str(m.event.position) for m in messages)
        # One write(2) per line in O_APPEND: whole lines even when killed, across processes.
        os.write(self.log, f"{what} {os.getpid()} {time.monotonic():.6f} {positions}\n".encode())

    async def open(self) -> None:
        await self.inner.open()

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._line("start", messages)
        await self.inner.publish(messages)
        self._line("end", messages)
        await asyncio.sleep(self.pause)  # confirmed, not yet checkpointed: a kill often lands here

    async def close(self) -> None:
        await self.inner.close()


def relay(db: str, url: str, name: str, lease: float, log: str, until_caught_up: bool) -> None:
    store = SQLiteEventStore(db)
    Relay(store, LoggingSink(sink_for_url(url), log), name=name, batch_size=50,
          lease_seconds=lease, poll_interval=0.05).run_sync(until_caught_up=until_caught_up)


def consume(url: str, group: str, target_path: str, block_at: int, flag: str) -> None:
    calls = [0]

    def handler(event: Event, conn: Any) -> None:
        apply(event, conn)
        calls[0] += 1
        if calls[0] == block_at:
            Path(flag).write_text(str(event.event_id))
            while True:  # mid-handler, its transaction open, until SIGKILL
                time.sleep(1)

    consumer = Consumer(source_for_url(url, group=group), target(target_path), handler,
                        name="balances", backoff=(0.01, 0.1))
    consumer.run_sync()


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "append":
        append(args[0], int(args[1]), int(args[2]))
    elif command == "relay":
        relay(args[0], args[1], args[2], float(args[3]), args[4], "--until-caught-up" in args)
    elif command == "consume":
        consume(args[0], args[1], args[2], int(args[3]), args[4])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
