"""Relay groups under faults: a broker outage, more members than partitions, and in
real processes a member SIGKILLed mid-stream and ``eskit relay run --partitions``.

The processes' sink is a file (tests/bus/filesink.py) written and fsynced before
publish returns, so what a killed member had confirmed is exactly what is in the file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eskit import BrokerUnavailableError, NewEvent, SQLiteEventStore
from eskit.bus.cloudevents import from_cloudevent
from eskit.bus.relay import relay_status, relay_status_async
from eskit.bus.relay_group import RelayGroup
from eskit.bus.sink import OutgoingMessage
from eskit.projections import partition_of
from tests.bus.filesink import PRELUDE, FileSink
from tests.bus.test_relay_group import (
    LEASE,
    Recorder,
    _assert_in_stream_order,
    _fill,
    _member,
    _until,
)
from tests.cli.helpers import ROOT, eskit_cli
from tests.conftest import new_schema_name

MEMBER = """
import asyncio, signal, sys
from eskit.bus.relay_group import RelayGroup
from tests.bus.filesink import FileSink
kind, where, schema, url, member, lease = sys.argv[1:7]
if kind == "sqlite":
    from eskit import SQLiteEventStore
    store = SQLiteEventStore(where)
else:
    from eskit.stores.postgres import PostgresEventStore
    store = PostgresEventStore(where, schema=schema, pool_size=2)
relay = RelayGroup(store, FileSink.from_url(url), name="out", partitions=6, member=member,
                   batch_size=10, lease_seconds=float(lease), poll_interval=0.02)

async def main():
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, relay.stop)
    await relay.run()

asyncio.run(main())
store.close()
"""


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", MEMBER, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _owners(store: Any) -> dict[int, str | None]:
    return {s.partition: s.lease_owner for s in relay_status(store, lag_limit=1)
            if s.partition is not None}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_killed_members_partitions_are_taken_over_within_the_lease(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lease = 1.5
    if kind == "sqlite":
        where, schema = str(tmp_path / "events.db"), ""
        store: Any = SQLiteEventStore(where)
    else:
        from eskit.stores.postgres import PostgresEventStore

        where, schema = request.getfixturevalue("postgres_dsn"), new_schema_name()
        store = PostgresEventStore(where, schema=schema, pool_size=2)
    _fill(store, 12, 60)  # 720 events, 10 a batch, 30 ms a confirm: seconds of work each
    # Both members append to one file (one write per batch, O_APPEND): the wire's order.
    out = tmp_path / "wire.jsonl"
    procs = {m: _spawn([kind, where, schema, f"file://{out}?delay=0.03", m, str(lease)])
             for m in ("a", "b")}

    def published_by(member: str) -> int:
        return sum(s.published for s in relay_status(store, lag_limit=1)
                   if s.lease_owner == member)

    try:
        deadline = time.monotonic() + 20
        while not (set(_owners(store).values()) == {"a", "b"} and published_by("b")):
            assert time.monotonic() < deadline, "the members never split the partitions"
            assert all(p.poll() is None for p in procs.values())
            time.sleep(0.02)
        lost = {p for p, owner in _owners(store).items() if owner == "b"}
        procs["b"].send_signal(signal.SIGKILL)
        procs["b"].wait()
        killed = time.monotonic()
        statuses = relay_status(store)
        assert any(s.lag_events for s in statuses if s.partition in lost), \
            "b finished before the kill: slow the sink down"
        while set(_owners(store).values()) != {"a"}:
            assert time.monotonic() - killed < lease + 2.0, "no takeover within the lease"
            time.sleep(0.02)
        took = time.monotonic() - killed
        assert took > lease / 3  # b's leases had to expire: it could not release them
        head = store.head_position()
        while any(s.position != head for s in relay_status(store, lag_limit=1)):
            assert time.monotonic() - killed < 30, "a never caught up"
            time.sleep(0.05)
        procs["a"].send_signal(signal.SIGTERM)
        assert procs["a"].wait(timeout=20) == 0, procs["a"].stderr.read()  # type: ignore[union-attr]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = list(store.read_all())
    wire = [from_cloudevent(b) for b in FileSink.read(str(out))]
    assert {e.event_id for e in wire} == {e.event_id for e in events}  # nothing lost
    # Repeats: only the unconfirmed tail of the killed member, at most its one batch in
    # flight, of a partition it held; each stream in order once repeats are dropped.
    first = _first_of_each(wire)
    repeats = len(wire) - len(first)
    assert repeats <= 10
    assert {partition_of(e.stream_id, 6)
            for e in _repeats(wire)} <= lost
    _assert_in_stream_order(first)
    assert len(first) == len(events) == 720
    store.close()


def _repeats(events: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for event in events:
        if event.event_id in seen:
            out.append(event)
        seen.add(event.event_id)
    return out


def _first_of_each(events: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            out.append(event)
    return out


def test_cli_relay_run_with_partitions(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store, 5, 3)
    out = tmp_path / "published.jsonl"
    result = eskit_cli("relay", "run", tmp_path / "events.db", "--sink", f"file://{out}",
                       "--name", "grp", "--partitions", "3", "--until-caught-up",
                       prelude=PRELUDE)
    assert result.returncode == 0, result.stderr
    assert "15 published, 3 partitions" in result.stderr
    published = [from_cloudevent(line) for line in out.read_bytes().splitlines()]
    assert sorted(e.event_id for e in published) == sorted(e.event_id for e in store.read_all())
    statuses = json.loads(eskit_cli("relay", "status", tmp_path / "events.db", "--json").stdout)
    assert [(s["name"], s["group"], s["partition"], s["lag_events"]) for s in statuses] == [
        (f"grp/{p}", "grp", p, 0) for p in range(3)]
    bad = eskit_cli("relay", "run", tmp_path / "events.db", "--sink", f"file://{out}",
                    "--name", "grp", "--partitions", "4", "--until-caught-up", prelude=PRELUDE)
    assert bad.returncode != 0
    assert "has 3 partitions, not 4" in bad.stderr
    store.close()


class Flaky(Recorder):
    """A recorder whose broker is down for the first ``failures`` publishes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailableError("the broker is down")
        await super().publish(messages)


def test_a_broker_outage_keeps_the_partitions_and_loses_nothing(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    _fill(store, 6, 4)

    async def scenario() -> None:
        sink = Flaky(4)
        relay = RelayGroup(store, sink, name="g", partitions=3, member="a",
                           lease_seconds=LEASE, batch_size=5)
        sink.member = relay
        task = asyncio.ensure_future(relay.run())
        errors: set[str | None] = set()
        while sink.failures > 1:  # while it is down, its partitions show the error
            errors |= {s.last_error for s in await relay_status_async(store)}
            await asyncio.sleep(0.02)
        assert "the broker is down" in errors
        await _until(lambda: sink.failures == 0 and relay.held == frozenset(range(3)), 10,
                     "the broker to come back")
        head = store.head_position()
        await _until(lambda: all(relay.positions.get(p) == head for p in range(3)), 10,
                     "catching up")
        statuses = await relay_status_async(store)
        assert all(s.last_error is None for s in statuses)  # cleared once it published
        relay.stop()
        await task
        # Each batch was published again until confirmed: every event once, in order.
        published = [e for e, _ in sink.published]
        assert sorted(e.event_id for e in published) == sorted(
            e.event_id for e in store.read_all())
        assert len(published) == 24
        _assert_in_stream_order(published)

    asyncio.run(scenario())
    store.close()


def test_more_members_than_partitions_wait_and_take_over(tmp_path: Path) -> None:
    writer = SQLiteEventStore(tmp_path / "events.db")

    async def scenario() -> None:
        members = [_member(SQLiteEventStore(tmp_path / "events.db"), "g", name, 2)
                   for name in ("a", "b", "c")]
        tasks = {m.member: asyncio.ensure_future(m.run()) for m, _ in members}
        (a, _), (b, _), (c, sink_c) = members
        # Shares by member id: a and b one each, c none (it waits).
        await _until(lambda: len(a.held) == len(b.held) == 1 and not c.held, 5, "the split")
        await asyncio.sleep(3 * a.heartbeat_interval)
        assert not c.held
        assert len(a.held) == len(b.held) == 1
        await asyncio.to_thread(_fill, writer, 4, 3)
        given_back = a.held
        a.stop()
        await tasks["a"]
        took = await _until(lambda: c.held == given_back, 5, "c to take a's partition")
        assert took < 2 * LEASE
        await asyncio.to_thread(_fill, writer, 4, 3, 3)
        head = writer.head_position()
        await _until(lambda: all(m.positions.get(p) == head for m in (b, c) for p in m.held),
                     10, "catching up")
        for m in (b, c):
            m.stop()
        await asyncio.gather(*tasks.values())
        published = [e for _, sink in members for e, _ in sink.published]
        events = list(writer.read_all())
        assert sorted(e.event_id for e in published) == sorted(e.event_id for e in events)
        assert len(published) == len(events)
        assert {partition_of(e.stream_id, 2) for e, _ in sink_c.published} <= given_back

    asyncio.run(scenario())
    writer.close()


class Slow(Recorder):
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await asyncio.sleep(0.25)
        await super().publish(messages)


def test_a_page_longer_than_the_lease_keeps_every_lease(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    streams = [f"s-{n}" for n in range(20)]
    busy = next(s for s in streams if partition_of(s, 2) == 0)
    quiet = next(s for s in streams if partition_of(s, 2) == 1)
    store.append(busy, [NewEvent("E", {"n": n}) for n in range(10)])
    store.append(quiet, [NewEvent("E", {"n": 0})])

    async def scenario() -> None:
        sink = Slow()
        # One event a batch (max_batch_bytes=1), 0.25 s a confirm: partition 0's page
        # of ten takes 2.5 s, past the 1 s lease.
        relay = RelayGroup(store, sink, name="g", partitions=2, member="a",
                           lease_seconds=LEASE, max_batch_bytes=1, poll_interval=0.02)
        sink.member = relay
        task = asyncio.ensure_future(relay.run())
        expired = []
        while len(sink.published) < 11:
            now = datetime.now(UTC)
            for s in await relay_status_async(store, lag_limit=1):
                if s.lease_until is not None and s.lease_until < now:
                    expired.append(s.name)
            await asyncio.sleep(0.05)
        relay.stop()
        await task
        assert expired == []  # the member heartbeat between the page's batches
        assert relay.history == {0, 1}

    asyncio.run(scenario())
    store.close()
