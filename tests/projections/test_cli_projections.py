"""End to end: ``eskit projections`` in a subprocess, on a SQLite store."""

import os
import subprocess
import sys
from pathlib import Path

from eskit import NewEvent, SQLiteEventStore
from tests.projections.helpers import added

ROOT = Path(__file__).resolve().parents[2]


def eskit(*args):
    # Keep an inherited PYTHONPATH (a checkout's src/ ahead of an installed eskit).
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "eskit.cli", "projections", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )


def test_projections_cli_runs_shows_status_lists_skips_and_retries_parked_events(tmp_path):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [added(1), NewEvent("Poison", {"amount": 4}), added(2)])
    spec = "tests.projections.helpers:Counter"

    result = eskit("run", db, "--projection", spec, "--park")
    assert result.returncode == 0, result.stderr
    assert "2 events handled" in result.stdout

    status = eskit("status", db)
    assert status.returncode == 0, status.stderr
    assert "counter" in status.stdout
    assert "poison" not in status.stdout  # parked, so no longer failing: no last error

    parked = eskit("parked", db)
    assert "Poison" in parked.stdout
    assert "RuntimeError: poison" in parked.stdout  # the error is kept with the event
    retry = eskit("retry", db, "--projection", spec)
    assert retry.returncode == 2
    assert "stays parked" in retry.stderr

    cured = eskit("retry", db, "--projection", "tests.projections.test_failures:Cured")
    assert cured.returncode == 0, cured.stderr
    assert "1 parked events handled" in cured.stdout
    assert "no parked events" in eskit("parked", db).stdout

    rebuilt = eskit("rebuild", db, "--projection", "tests.projections.test_failures:Cured")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt from 3 events (3 handled)" in rebuilt.stdout


def test_skip_marks_a_parked_event_skipped(tmp_path):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [NewEvent("Poison")])
        event_id = store.read_stream("a")[0].event_id
    assert eskit("run", db, "--projection", "tests.projections.helpers:Counter",
                 "--park").returncode == 0
    assert eskit("skip", db, "counter", event_id).returncode == 0
    assert "no parked events" in eskit("parked", db).stdout
    assert str(event_id) in eskit("parked", db, "--skipped").stdout
    assert eskit("skip", db, "counter", "nope").returncode == 2


def test_run_with_a_group_handles_every_partition_alone_and_leaves(tmp_path):
    from eskit.projections import ConsumerGroup, SQLiteTarget

    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        for s in range(12):
            store.append(f"s{s}", [added(s), added(1)])
    result = eskit("run", db, "--projection", "tests.projections.helpers:Counter",
                   "--group", "counters", "--partitions", "4", "--lease-timeout", "2")
    assert result.returncode == 0, result.stderr
    assert "24 events handled" in result.stdout
    with SQLiteTarget(db) as target:
        states = target.states("counter")
        assert [s.partition for s in states] == [0, 1, 2, 3]
        assert sum(s.events_handled for s in states) == 24
        leases = ConsumerGroup(target, "counters", partitions=4).leases()
        assert [lease.owner for lease in leases] == [None] * 4  # left: released
        assert all(lease.token == 1 for lease in leases)  # each claimed once
    refused = eskit("run", db, "--projection", "tests.projections.helpers:Counter",
                    "--group", "counters", "--partitions", "8")
    assert refused.returncode == 2
    assert "4 partitions" in refused.stderr
