"""``python -m benchmarks sse``: how fast ``GET /api/subscribe`` delivers events.

A SQLite store with ``--events`` events (default 100,000, in 1,000 streams) is served
by ``eskit.web`` on uvicorn, on a loopback port, in this process; one client (httpx,
in a process of its own, so that it does not share the server's interpreter) reads
the event stream from position 0 until it has every event, parsing each message's
JSON as a client would. Prints events per second, the median of
``--repeat`` runs. Issue 16 asks for 10,000 events/s.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from eskit import NewEvent, SQLiteEventStore
from eskit.web import WebSettings, create_app
from eskit.web.server import Server

__all__ = ["main", "measure"]

_CLIENT = """
import sys, time
import httpx, orjson
url, events = sys.argv[1], int(sys.argv[2])
received = 0
started = time.perf_counter()
with httpx.stream("GET", url, timeout=60) as response:
    for line in response.iter_lines():
        if line.startswith("data: "):
            orjson.loads(line[6:])
            received += 1
            if received == events:
                break
print(events / (time.perf_counter() - started))
"""


def _fill(store: SQLiteEventStore, events: int, streams: int) -> None:
    per_batch = max(1, min(1000, events // streams))
    written = n = 0
    while written < events:
        count = min(per_batch, events - written)
        store.append(f"order-{n % streams}", [
            NewEvent("ItemAdded", {"sku": f"sku-{i}", "qty": i % 7, "price": "9.90"})
            for i in range(count)
        ])
        written += count
        n += 1


def measure(events: int, streams: int = 1000, repeat: int = 3) -> list[float]:
    """Events per second of each run."""
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as folder, SQLiteEventStore(
            Path(folder) / "sse.db") as store:
        _fill(store, events, streams)
        server = Server(create_app(store, settings=WebSettings()), log_level="warning")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/subscribe"
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            for _ in range(repeat):
                result = subprocess.run(
                    [sys.executable, "-c", _CLIENT, url, str(events)], capture_output=True,
                    text=True, timeout=600, check=True,
                )
                rates.append(float(result.stdout))
        finally:
            server.stop()
            thread.join(10)
            sock.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sse", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rates = measure(args.events, args.streams, args.repeat)
    print(f"SSE /api/subscribe, {args.events:,} events from position 0, one client: "
          f"{statistics.median(rates):,.0f} events/s (median of {len(rates)}; "
          f"runs: {', '.join(f'{r:,.0f}' for r in rates)})")
    return 0
