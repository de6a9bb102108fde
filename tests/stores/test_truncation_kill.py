"""SIGKILL in the middle of apply_retention truncating a SQLite stream (a step's rows
deleted, not committed): the committed steps stay, the killed one is rolled back, the
stream reads as an unbroken tail of its history, and a rerun completes the cut."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from eskit import NewEvent, SQLiteEventStore

ROOT = Path(__file__).resolve().parents[2]

# Truncations log (INFO) after the DELETE and before COMMIT: at the third, stop there.
_CHILD = textwrap.dedent("""
    import sys, time
    import eskit.stores.sqlite_truncation as st
    from eskit import SQLiteEventStore
    from eskit.maintenance import retention
    seen = []
    def stop(message, *args, **kwargs):
        if "truncated stream" in message:
            seen.append(args)
            if len(seen) == 3:
                print("in-truncate", flush=True)
                time.sleep(60)
    st._log.info = stop
    retention.TRUNCATE_STEP = 100
    with SQLiteEventStore(sys.argv[1]) as store:
        retention.apply_retention(
            store, [retention.RetentionPolicy("big-", max_events=50)], force=True)
    print("finished", flush=True)
""")


def test_sqlite_truncation_killed_mid_step_keeps_a_whole_tail_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "events.db")
    with SQLiteEventStore(db) as store:
        for _ in range(5):
            store.append("big-1", [NewEvent("E", {"n": n}) for n in range(100)])
        store.append("small", [NewEvent("E", {})])
        original = [(e.event_id, e.version, e.position) for e in store.read_stream("big-1")]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "in-truncate"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:  # pragma: no cover - only if an assert failed above
            child.kill()
            child.wait()
    with SQLiteEventStore(db) as store:
        # Two steps of 100 committed; the third (rows deleted, no COMMIT) rolled back.
        left = [(e.event_id, e.version, e.position) for e in store.read_stream("big-1")]
        assert left == original[200:]
        assert store.head_version("big-1") == 500
        from eskit.stores.verify import verify_store

        # The committed steps left their anchor, the rolled-back one nothing: clean.
        assert verify_store(store).ok
        from eskit.maintenance.retention import RetentionPolicy, apply_retention

        result = apply_retention(store, [RetentionPolicy("big-", max_events=50)], force=True)
        assert result.truncated_events == 250
        assert [(e.event_id, e.version, e.position)
                for e in store.read_stream("big-1")] == original[450:]
        assert store.append("big-1", [NewEvent("E", {})], 500).version == 501
        assert [e.aggregate_id for e in store.read_all()].count("small") == 1
        assert verify_store(store).ok
