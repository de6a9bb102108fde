"""How long the web explorer's pages take on a large store (issue 16, item 4's pages).

``python -m benchmarks.explorer_pages --backend sqlite --events 1000000`` builds a
store of ``--events`` events in streams of 10 (written straight into the event table,
as ``benchmarks.storage_stats --bulk`` does: seconds, not hours, for a million), then
times each page through Starlette's in-process test client, median of ``--repeat``
requests after one warm-up. A round trip in-process is the server's time plus well
under a millisecond of client; no network. It prints one JSON document.

Pages timed: the streams page (first page, a page in the middle by cursor, a
category prefix), a stream's timeline, an event by stream and version and by id
(what a causation link opens), and a page of the global log. Not timed: the
event-type filter and the correlation look-up, which scan the log without the
filtered reads' indexes (docs/explorer.md says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from benchmarks.storage_stats import _bulk_fill, _store
from eskit.web.explorer import explorer_routes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.x would rather have httpx2
    from starlette.testclient import TestClient

QUICK_EVENTS = 2_000


@dataclass(frozen=True)
class _Settings:
    write_token: str | None = None


def _pages(streams: int, store: Any) -> dict[str, str]:
    middle = streams // 2
    (halfway,) = store.read_all(store.head_position() // 2, limit=1)
    return {
        "streams_first_page": "/streams",
        "streams_page_by_cursor": f"/streams?after=order-{middle}",
        "streams_by_category": "/streams?prefix=sensor-",
        "stream_timeline": f"/stream?stream=customer-{middle - middle % 3 + 1}",
        "event": f"/event?stream=order-{middle - middle % 3}&version=5",
        "event_by_id": f"/event?id={halfway.event_id}",  # a causation link
        "log_page": f"/log?after={store.head_position() // 2}",
    }


def run(backend: str, events: int, repeat: int, workdir: Path) -> dict[str, Any]:
    streams = events // 10
    with _store(backend, workdir) as (store, _, _):
        fill_seconds = _bulk_fill(store, events)
        client = TestClient(Starlette(routes=explorer_routes(store, _Settings())))
        timings: dict[str, float] = {}
        for name, url in _pages(streams, store).items():
            assert client.get(url).status_code == 200, url  # warm-up, and a real page
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, url
            timings[name] = round(statistics.median(times) * 1000, 2)
    return {"backend": backend, "events": events, "streams": streams,
            "fill_seconds": round(fill_seconds, 1), "repeat": repeat, "median_ms": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.explorer_pages")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS} events")
    parser.add_argument("--output", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        result = run(args.backend, QUICK_EVENTS if args.quick else args.events, args.repeat,
                     Path(workdir))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
