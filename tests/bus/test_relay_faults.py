"""Relays in real processes: SIGKILL at random moments, and two relays of one name.

The sink is a file (tests/bus/filesink.py) written and fsynced before publish
returns, so what a killed relay had confirmed is exactly what is in the file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eskit import NewEvent, SQLiteEventStore
from eskit.bus.cloudevents import from_cloudevent
from eskit.bus.relay import relay_status
from tests.bus.filesink import FileSink
from tests.cli.helpers import ROOT

RELAY = """
import sys
from eskit import SQLiteEventStore
from eskit.bus.relay import Relay
from tests.bus.filesink import FileSink
db, url, name, lease = sys.argv[1:5]
store = SQLiteEventStore(db)
Relay(store, FileSink.from_url(url), name=name, batch_size=40,
      lease_seconds=float(lease)).run_sync(until_caught_up=True)
"""


def _relay(db: Path, url: str, name: str = "r", lease: float = 15.0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", RELAY, str(db), url, name, str(lease)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _fill(db: Path, events: int, streams: int = 9) -> SQLiteEventStore:
    store = SQLiteEventStore(db)
    versions = [0] * streams
    batch = []
    for n in range(events):
        batch.append(n)
        if len(batch) == 3 or n == events - 1:  # a few events per append
            s = n % streams
            store.append(f"account-{s}", [NewEvent("Deposited", {"n": b}) for b in batch],
                         expected_version=versions[s])
            versions[s] += len(batch)
            batch = []
    return store


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_keeps_stream_order(tmp_path: Path) -> None:
    store = _fill(tmp_path / "events.db", 1200)
    out = tmp_path / "published.jsonl"
    url = f"file://{out}?delay=0.02"
    rng = random.Random(12)

    def lines() -> int:
        return len(FileSink.read(str(out))) if out.exists() else 0

    kills = 0
    for _ in range(4):  # kill each run at a random moment after it has published something
        seen = lines()
        # A killed relay keeps its lease until it expires: the next run waits that long.
        proc = _relay(tmp_path / "events.db", url, lease=1.5)
        deadline = time.monotonic() + 60
        while lines() == seen and proc.poll() is None:
            assert time.monotonic() < deadline, "the relay published nothing"
            time.sleep(0.005)
        if proc.poll() is not None:
            break
        time.sleep(rng.uniform(0, 0.06))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    final = _relay(tmp_path / "events.db", url, lease=1.5)
    assert final.wait(timeout=120) == 0, final.stderr.read() if final.stderr else ""
    events = list(store.read_all())
    published = [from_cloudevent(body) for body in FileSink.read(str(out))]
    assert kills >= 3, "the relay finished before the kills: slow the sink down"
    assert {e.event_id for e in published} == {e.event_id for e in events}
    # Drop repeats (as the consumer's inbox does): exactly the store's order, so per
    # stream too; every repeat is a re-sent tail, never an event from the future.
    first: dict[object, object] = {}
    for event in published:
        first.setdefault(event.event_id, event)
    assert list(first.values()) == events
    [status] = relay_status(store)
    assert status.position == events[-1].position
    assert status.lag_events == 0


@pytest.mark.slow
def test_two_relays_started_with_one_name_do_not_both_publish(tmp_path: Path) -> None:
    store = _fill(tmp_path / "events.db", 600)
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    procs = [_relay(tmp_path / "events.db", f"file://{o}?delay=0.002") for o in outs]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    counts = [len(FileSink.read(str(o))) if o.exists() else 0 for o in outs]
    # Under the lease one relay published all 600, once; the other, starting after
    # the release from the same checkpoint, found nothing left.
    assert sorted(counts) == [0, 600]
    assert relay_status(store)[0].published == 600
