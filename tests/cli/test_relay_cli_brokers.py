"""``eskit relay run/status`` as a user runs them: subprocesses, a demo store, real brokers.

Each test publishes under its own Redis key / exchange / JetStream stream and
deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aio_pika
import nats
import pytest
import redis

from eskit import NewEvent, PostgresEventStore, SQLiteEventStore
from eskit.bus.cloudevents import from_cloudevent
from tests.bus.conftest import nats_url, rabbitmq_url, redis_url, unique_name  # noqa: F401
from tests.cli.helpers import ROOT, assert_no_traceback, eskit_cli, rows
from tests.conftest import new_schema_name


@pytest.fixture
def bank(tmp_path: Path) -> Path:
    """The store ``eskit demo`` writes: the bank example's events on a SQLite file."""
    path = tmp_path / "bank.db"
    result = eskit_cli("demo", "--db", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return path


def _status(db: Path) -> dict[str, dict]:
    result = eskit_cli("relay", "status", db, "--json")
    assert result.returncode == 0, result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)}


def test_relay_run_to_redis_publishes_every_event_in_order_then_lag_is_0(
    bank: Path, redis_url: str  # noqa: F811
) -> None:
    key = f"eskit-test:{unique_name('cli')}"
    client = redis.Redis.from_url(redis_url)
    try:
        result = eskit_cli("relay", "run", bank, "--sink", f"{redis_url}?key={key}",
                           "--name", "to-redis", "--until-caught-up")
        assert result.returncode == 0, result.stderr
        assert_no_traceback(result)
        with SQLiteEventStore(bank, create=False) as store:
            events = list(store.read_all())
            head = store.head_position()
        assert f"relay to-redis: {len(events)} published, checkpoint at position {head}" \
            in result.stderr
        entries = client.xrange(key)
        assert [from_cloudevent(fields[b"body"]) for _, fields in entries] == events

        # The status, as JSON and as the table, says it is caught up.
        status = _status(bank)["to-redis"]
        assert (status["position"], status["head_position"]) == (head, head)
        assert (status["lag_events"], status["lag_seconds"], status["published"]) == (
            0, 0.0, len(events))
        assert status["last_error"] is None
        assert status["lease_owner"] is None
        table = eskit_cli("relay", "status", bank)
        [row] = rows(table.stdout)  # one relay
        assert row[:5] == ["to-redis", row[1], str(head), "0", "0.0"]

        # Run again: nothing after the checkpoint, nothing published twice.
        again = eskit_cli("relay", "run", bank, "--sink", f"{redis_url}?key={key}",
                          "--name", "to-redis", "--until-caught-up")
        assert again.returncode == 0, again.stderr
        assert "relay to-redis: 0 published" in again.stderr
        assert client.xlen(key) == len(events)
    finally:
        client.delete(key)
        client.close()


async def _rabbitmq_queue_depth(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        depth = declared.declaration_result.message_count
        assert depth is not None
        return depth


async def _rabbitmq_delete(url: str, exchange: str, group: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{exchange}.{group}", f"{exchange}.{group}.dead"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


def test_relay_run_to_rabbitmq_with_a_declared_group(
    bank: Path, rabbitmq_url: str  # noqa: F811
) -> None:
    exchange = unique_name("cli-")
    url = f"{rabbitmq_url}?exchange={exchange}&groups=mail"
    try:
        result = eskit_cli("relay", "run", bank, "--sink", url, "--types", "MoneyDeposited",
                           "--until-caught-up")
        assert result.returncode == 0, result.stderr
        with SQLiteEventStore(bank, create=False) as store:
            deposits = sum(e.event_type == "MoneyDeposited" for e in store.read_all())
            head = store.head_position()
        assert deposits > 0
        assert asyncio.run(_rabbitmq_queue_depth(rabbitmq_url, f"{exchange}.mail")) == deposits
        [status] = _status(bank).values()
        assert "guest:" not in status["name"]  # the default name, the password left out
        assert (status["position"], status["lag_events"], status["published"]) == (
            head, 0, deposits)
    finally:
        asyncio.run(_rabbitmq_delete(rabbitmq_url, exchange, "mail"))


async def _jetstream_count_and_delete(server: str, stream: str) -> int:
    client = await nats.connect(server)
    try:
        info = await client.jetstream().stream_info(stream)
        return int(info.state.messages)
    finally:
        await client.jetstream().delete_stream(stream)
        await client.close()


def test_relay_run_to_nats_jetstream(bank: Path, nats_url: str) -> None:  # noqa: F811
    stream = unique_name("CLI")
    url = f"{nats_url}/?stream={stream}&prefix={stream.lower()}"
    result = eskit_cli("relay", "run", bank, "--sink", url, "--name", "to-nats",
                       "--until-caught-up")
    try:
        assert result.returncode == 0, result.stderr
    finally:
        stored = asyncio.run(_jetstream_count_and_delete(nats_url, stream))
    with SQLiteEventStore(bank, create=False) as store:
        count, head = len(list(store.read_all())), store.head_position()
    assert stored == count
    status = _status(bank)["to-nats"]
    assert (status["position"], status["lag_events"], status["published"]) == (head, 0, count)


class _Relay:
    """``eskit relay run`` in the background, its stderr read line by line by a thread."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               "COLUMNS": "200", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eskit.cli", "relay", "run", *args], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        stderr = self.proc.stderr
        assert stderr is not None
        # A thread reads stderr, so that a silent relay fails a test instead of hanging it.
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(iter(stderr.readline, "")), daemon=True)
        self._reader.start()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            assert time.monotonic() < deadline, f"no {text!r} in {self.lines}"
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.lines}"
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, then the exit status once stderr is read to its end."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_relay_waiting_for_a_broker_that_is_down_says_so_and_stops_on_sigterm(
    bank: Path,
) -> None:
    # Nothing listens on port 1: the relay retries with backoff and must not be silent.
    relay = _Relay(str(bank), "--sink", "redis://:hunter2@127.0.0.1:1/0", "--name", "down",
                   "--until-caught-up")
    try:
        relay.wait_for("broker unavailable")
        assert relay.stop() == 0
    finally:
        relay.kill()
    output = "".join(relay.lines)
    assert "eskit: relay 'down': broker unavailable, reconnecting:" in output
    assert "hunter2" not in output
    assert "relay down: 0 published, checkpoint at position 0" in output
    status = _status(bank)["down"]
    assert status["last_error"]
    assert "hunter2" not in status["last_error"]
    assert status["lag_events"] == status["head_position"] > 0
    assert status["lease_owner"] is None  # released on a clean stop


def test_two_long_destinations_alike_in_200_characters_keep_two_checkpoints(
    bank: Path, redis_url: str  # noqa: F811
) -> None:
    # Without --name the relay is named after its destination; a name holds 200
    # characters, and one shared checkpoint would make the second relay skip everything.
    stem = f"eskit-test:{unique_name('long')}:" + "k" * 220
    keys = [f"{stem}:a", f"{stem}:b"]
    client = redis.Redis.from_url(redis_url)
    try:
        for key in keys:
            result = eskit_cli("relay", "run", bank, "--sink", f"{redis_url}?key={key}",
                               "--until-caught-up")
            assert result.returncode == 0, result.stderr
        with SQLiteEventStore(bank, create=False) as store:
            count = len(list(store.read_all()))
        assert [client.xlen(key) for key in keys] == [count, count]
        statuses = list(_status(bank).values())
        assert len(statuses) == 2
        assert all(len(s["name"]) == 200 for s in statuses)
        assert [s["published"] for s in statuses] == [count, count]
    finally:
        client.delete(*keys)
        client.close()


def test_a_memory_sink_is_refused_by_the_command_line(bank: Path) -> None:
    result = eskit_cli("relay", "run", bank, "--sink", "memory://bank", "--until-caught-up")
    assert result.returncode == 2
    assert "error: memory:// is a broker inside one process" in result.stderr
    assert_no_traceback(result)
    assert _status(bank) == {}  # no checkpoint moved, none created


def test_relay_run_and_status_on_a_postgres_store(
    postgres_dsn: str, redis_url: str  # noqa: F811 (redis_url)
) -> None:
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("account-1", [NewEvent("Opened", {"n": 1}), NewEvent("Deposited", {"n": 2})])
        events = list(store.read_all())
        head = store.head_position()
    assert head >= 2**53  # PostgreSQL positions: the JSON below must not round them
    key = f"eskit-test:{unique_name('pg')}"
    client = redis.Redis.from_url(redis_url)
    env = {"ESKIT_DSN": postgres_dsn}  # the DSN stays off the command line
    try:
        result = eskit_cli("relay", "run", "--schema", schema, "--sink", f"{redis_url}?key={key}",
                           "--name", "pg", "--until-caught-up", env=env)
        assert result.returncode == 0, result.stderr
        assert [from_cloudevent(f[b"body"]) for _, f in client.xrange(key)] == events
        status = eskit_cli("relay", "status", "--schema", schema, "--json", env=env)
        assert status.returncode == 0, status.stderr
        [document] = json.loads(status.stdout)
        assert (document["position"], document["head_position"]) == (str(head), str(head))
        assert (document["lag_events"], document["published"]) == (0, 2)
        table = eskit_cli("relay", "status", "--schema", schema, env=env)
        assert table.returncode == 0, table.stderr
        assert rows(table.stdout)[0][:4] == ["pg", rows(table.stdout)[0][1], str(head), "0"]
    finally:
        client.delete(key)
        client.close()


def test_a_second_relay_with_the_same_name_waits_for_the_lease(
    bank: Path, redis_url: str  # noqa: F811
) -> None:
    key = f"eskit-test:{unique_name('lease')}"
    args = (str(bank), "--sink", f"{redis_url}?key={key}", "--name", "bank")
    client = redis.Redis.from_url(redis_url)
    first = second = None
    try:
        first = _Relay(*args)
        first.wait_for("publishes to")
        second = _Relay(*args)
        second.wait_for("is leased by another relay; waiting for the lease")
        with SQLiteEventStore(bank, create=False) as store:
            count, head = len(list(store.read_all())), store.head_position()
        deadline = time.monotonic() + 30
        while client.xlen(key) < count:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.stop() == 0  # a clean stop releases the lease at once
        second.wait_for(f"from position {head}")  # ...and the second goes on from there
        assert second.stop() == 0
        assert client.xlen(key) == count  # nothing published twice
        assert any("relay bank: 0 published" in line for line in second.lines)
    finally:
        for relay in (first, second):
            if relay is not None:
                relay.kill()
        client.delete(key)
        client.close()
