"""``eskit relay run/status`` and ``eskit bus dead-letters/replay``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from eskit import NewEvent, SQLiteEventStore
from eskit.bus.cloudevents import from_cloudevent, to_cloudevent
from eskit.bus.memory import MemorySink, MemorySource
from eskit.bus.sink import OutgoingMessage
from eskit.cli._app import make_app
from tests.bus.conftest import unique_name
from tests.bus.filesink import PRELUDE
from tests.cli.helpers import ROOT, assert_no_traceback, eskit_cli, rows


def _store(path: Path, events: int = 6) -> SQLiteEventStore:
    store = SQLiteEventStore(path)
    for n in range(events):
        stream = "order-1" if n % 3 == 0 else "account-1"
        store.append(stream, [NewEvent("Placed" if n % 3 == 0 else "Deposited", {"n": n})])
    return store


def _lines(path: Path) -> list:
    return [from_cloudevent(line) for line in path.read_bytes().splitlines()]


def test_relay_run_until_caught_up_publishes_everything_once(tmp_path: Path) -> None:
    store = _store(tmp_path / "events.db")
    out = tmp_path / "published.jsonl"
    result = eskit_cli("relay", "run", tmp_path / "events.db", "--sink", f"file://{out}",
                       "--until-caught-up", prelude=PRELUDE)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert _lines(out) == list(store.read_all())
    assert "6 published" in result.stderr
    # Again: from the checkpoint, nothing new.
    again = eskit_cli("relay", "run", tmp_path / "events.db", "--sink", f"file://{out}",
                      "--until-caught-up", prelude=PRELUDE)
    assert again.returncode == 0, again.stderr
    assert len(_lines(out)) == 6
    status = eskit_cli("relay", "status", tmp_path / "events.db")
    assert status.returncode == 0, status.stderr
    assert "lag (events)" in status.stdout
    assert rows(status.stdout)[0][2:5] == [str(store.head_position()), "0", "0.0"]
    [as_json] = json.loads(eskit_cli("relay", "status", tmp_path / "events.db", "--json").stdout)
    assert as_json["name"] == f"file://{out}"  # the default name: the destination
    assert as_json["position"] == store.head_position()
    assert as_json["published"] == 6
    assert as_json["lag_events"] == 0


def test_relay_run_filters_and_names_and_reads_eskit_dsn(tmp_path: Path) -> None:
    store = _store(tmp_path / "events.db")
    out = tmp_path / "orders.jsonl"
    result = eskit_cli("relay", "run", "--sink", f"file://{out}", "--name", "orders",
                       "--types", "Placed", "--prefix", "order-", "--until-caught-up",
                       prelude=PRELUDE, env={"ESKIT_DSN": str(tmp_path / "events.db")})
    assert result.returncode == 0, result.stderr
    assert [e.event_type for e in _lines(out)] == ["Placed", "Placed"]
    [status] = json.loads(eskit_cli("relay", "status", "--json",
                                    env={"ESKIT_DSN": str(tmp_path / "events.db")}).stdout)
    assert status["name"] == "orders"
    assert status["position"] == store.head_position()  # filtered-out events moved it too
    assert status["published"] == 2


def test_relay_status_of_a_store_without_relays_creates_nothing(tmp_path: Path) -> None:
    _store(tmp_path / "events.db")
    result = eskit_cli("relay", "status", tmp_path / "events.db")
    assert result.returncode == 0, result.stderr
    assert "no relay has run" in result.stdout
    import sqlite3

    with sqlite3.connect(tmp_path / "events.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "eskit_relays" not in tables


def test_bad_input_is_a_red_line_and_exit_2(tmp_path: Path) -> None:
    _store(tmp_path / "events.db")
    for args in (["--sink", "kafka://x"], ["--sink", "memory://a b"]):
        result = eskit_cli("relay", "run", tmp_path / "events.db", *args, "--until-caught-up")
        assert result.returncode == 2, result.stderr
        assert "error:" in result.stderr
        assert_no_traceback(result)
    missing = eskit_cli("relay", "run", tmp_path / "nope.db", "--sink", "memory://x")
    assert missing.returncode == 2
    assert not (tmp_path / "nope.db").exists()


def test_sigterm_stops_a_following_relay_with_status_0(tmp_path: Path) -> None:
    _store(tmp_path / "events.db")
    out = tmp_path / "published.jsonl"
    code = (f"{PRELUDE}import sys\nsys.argv = ['eskit', *sys.argv[1:]]\n"
            "from eskit.cli import main\nmain()")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "relay", "run", str(tmp_path / "events.db"), "--sink",
         f"file://{out}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and len(out.read_bytes().splitlines()) == 6):
            assert time.monotonic() < deadline, "the relay published nothing"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dead_letters_are_listed_and_replayed_from_the_cli() -> None:
    name = unique_name("cli")
    url = f"memory://{name}"
    store_event = None

    async def prepare() -> bytes:
        nonlocal store_event
        from datetime import UTC, datetime
        from uuid import uuid4

        from eskit import Event

        store_event = Event(uuid4(), "account-7", "Deposited", {"n": 1}, datetime.now(UTC), 1, 1)
        body = to_cloudevent(store_event)
        source, sink = MemorySource(name, group="mail"), MemorySink(name)
        await source.open()
        await sink.open()
        await sink.publish([OutgoingMessage(store_event, body),
                            OutgoingMessage(store_event, b"garbage")])
        n = 0
        async for delivery in source.deliveries():
            await delivery.dead_letter(f"reason {n}")
            n += 1
            if n == 2:
                break
        await source.close()
        return body

    asyncio.run(prepare())
    runner = CliRunner()
    app = make_app()
    listed = runner.invoke(app, ["bus", "dead-letters", url, "--group", "mail", "--json"])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.output)
    assert [d["reason"] for d in letters] == ["reason 0", "reason 1"]
    assert letters[0]["event_id"] == str(store_event.event_id)
    assert letters[0]["stream_id"] == "account-7"
    assert letters[1]["event_type"] == "(not an eskit CloudEvent)"
    table = runner.invoke(app, ["bus", "dead-letters", url, "--group", "mail"])
    assert "reason 0" in table.output
    one = runner.invoke(app, ["bus", "replay", url, "--group", "mail", "--id",
                              letters[0]["dead_letter_id"]])
    assert one.exit_code == 0, one.output
    assert "1 dead letter replayed" in one.output
    rest = runner.invoke(app, ["bus", "replay", url, "--group", "mail"])
    assert "1 dead letter replayed" in rest.output
    empty = runner.invoke(app, ["bus", "dead-letters", url, "--group", "mail"])
    assert "no dead letters" in empty.output
    bad = runner.invoke(app, ["bus", "replay", url, "--group", "bad group"])
    assert bad.exit_code == 2
