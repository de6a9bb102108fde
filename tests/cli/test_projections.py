"""``eskit projections``: the progress bar, JSON status, skipped events, SIGTERM.

The older end-to-end tests of this group are in tests/projections/test_cli_projections.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from eskit import NewEvent, SQLiteEventStore, SQLiteTarget
from tests.cli.helpers import ROOT, eskit_cli
from tests.projections.helpers import added

COUNTER = "tests.projections.helpers:Counter"


def checkpoint(db):
    target = SQLiteTarget(db)
    try:
        states = target.states("counter")
        return states[0].position if states else 0
    finally:
        target.close()


def counted(db):
    conn = sqlite3.connect(db)
    try:
        return sum(n for (n,) in conn.execute("SELECT n FROM counts"))
    finally:
        conn.close()


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_sigterm_stops_run_follow_after_its_batch_exit_0_and_checkpoint_equals_events_handled(
    tmp_path,
):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [added() for _ in range(200)])
    env = {**os.environ, "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eskit.cli", "projections", "run", str(db),
         "--projection", COUNTER, "--follow"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    writing = threading.Event()
    writing.set()

    def write():  # events keep arriving while the runner follows, and when it stops
        with SQLiteEventStore(db) as store:
            i = 0
            while writing.is_set():
                store.append(f"s-{i % 7}", [added() for _ in range(5)])
                i += 1
                time.sleep(0.005)

    writer = threading.Thread(target=write)
    try:
        wait_until(lambda: checkpoint(db) >= 200)
        writer.start()
        wait_until(lambda: checkpoint(db) >= 400)  # following live, mid-flow
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        writing.clear()
        if writer.is_alive():
            writer.join()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "counter: stopped" in out
    at = checkpoint(db)
    with SQLiteEventStore(db) as store:
        positions = [event.position for event in store.read_all()]
    assert at in positions  # the checkpoint is the position of a handled event
    handled = sum(1 for position in positions if position <= at)
    assert counted(db) == handled  # every event up to the checkpoint, each exactly once
    assert positions[-1] > at, "the writer was still writing: the test stopped a live runner"


def test_run_shows_a_progress_bar_on_stderr_while_it_catches_up(tmp_path):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [added() for _ in range(3000)])
    result = eskit_cli("projections", "run", db, "--projection", COUNTER,
                       env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"})
    assert result.returncode == 0, result.stderr
    assert "catching up counter" in result.stderr
    assert "counter: 3000 events handled" in result.stdout


def test_status_json_lists_each_projection_with_its_checkpoint_and_lag(tmp_path):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [added(1), added(2)])
    assert eskit_cli("projections", "run", db, "--projection", COUNTER).returncode == 0
    with SQLiteEventStore(db) as store:
        store.append("a", [added(3)], expected_version=2)
    result = eskit_cli("projections", "status", db, "--json")
    assert result.returncode == 0, result.stderr
    (status,) = json.loads(result.stdout)
    assert (status["name"], status["partition"], status["events_handled"]) == ("counter", 0, 2)
    assert (status["lag_events"], status["caught_up"], status["parked"]) == (1, False, 0)
    assert status["checkpoint"] < status["head"]


def test_parked_skipped_lists_the_skipped_events_under_their_own_title(tmp_path):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [NewEvent("Poison"), NewEvent("Poison")])
        first, second = (e.event_id for e in store.read_stream("a"))
    assert eskit_cli("projections", "run", db, "--projection", COUNTER,
                     "--park").returncode == 0
    assert eskit_cli("projections", "skip", db, "counter", first).returncode == 0
    skipped = eskit_cli("projections", "parked", db, "--skipped")
    assert skipped.returncode == 0, skipped.stderr
    assert "1 skipped event" in skipped.stdout
    assert str(first) in skipped.stdout
    assert str(second) not in skipped.stdout
    parked = eskit_cli("projections", "parked", db)
    assert "1 parked event" in parked.stdout
    assert str(second) in parked.stdout
    assert str(first) not in parked.stdout


@pytest.mark.parametrize("command", ["status", "parked"])
def test_projection_commands_take_the_store_from_eskit_dsn(tmp_path, command):
    db = tmp_path / "events.db"
    with SQLiteEventStore(db) as store:
        store.append("a", [added(1)])
    assert eskit_cli("projections", "run", "--projection", COUNTER,
                     env={"ESKIT_DSN": str(db)}).returncode == 0
    result = eskit_cli("projections", command, env={"ESKIT_DSN": str(db)})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["parked"], ["skip", "counter", "some-id"], ["status"]])
def test_projection_commands_on_a_missing_file_exit_2_and_create_nothing(tmp_path, command):
    missing = tmp_path / "missing.db"
    result = eskit_cli("projections", command[0], missing, *command[1:], cwd=tmp_path)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "expected"),
    [(["status"], "no projections have run"), (["parked"], "no parked events"),
     (["parked", "--skipped"], "no skipped events")],
)
def test_reports_on_a_store_where_no_projection_ran_create_no_tables(
    tmp_path, command, expected
):
    path = tmp_path / "plain.db"
    with SQLiteEventStore(path) as store:
        store.append("a", [added(1)])
    before = path.read_bytes()
    result = eskit_cli("projections", *command, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout
    assert path.read_bytes() == before, "a report must not change the store"


def test_reports_on_a_postgres_schema_where_no_projection_ran_create_no_tables(postgres_dsn):
    import psycopg

    from eskit.stores.postgres import PostgresEventStore
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    PostgresEventStore(postgres_dsn, schema=schema).close()
    for command in (["status", "--json"], ["parked"]):
        result = eskit_cli("projections", *command, postgres_dsn, "--schema", schema)
        assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(postgres_dsn) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".eskit_projections',))
        assert found.fetchone() == (None,)
