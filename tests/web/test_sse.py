"""``/api/subscribe`` over a real uvicorn server: live, resumable, and ended by a shutdown."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from eskit import NewEvent, SQLiteEventStore
from eskit.web import WebSettings, create_app
from tests.conftest import new_schema_name
from tests.web.conftest import READ, READER, WRITER

SETTINGS = WebSettings(read_tokens=(READER,), write_tokens=(WRITER,), heartbeat_seconds=0.2)


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The response's SSE messages: ``{"id", "data"}`` for events, ``{"comment"}`` else."""
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read_events(client: httpx.Client, url: str, count: int, headers: dict[str, str]
                ) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in messages(response):
            if "data" in message:
                event = orjson.loads(message["data"])
                assert message["id"] == event["position"], "the SSE id is the position"
                found.append(event)
                if len(found) == count:
                    break
    return found


def add(store: Any, stream: str, first: int, count: int) -> None:
    store.append(stream, [NewEvent("Counted", {"n": n}) for n in range(first, first + count)])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    with SQLiteEventStore(tmp_path / "events.db") as opened:
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path, serve) -> Iterator[tuple[Any, Any]]:
    """A store the test writes to, and a server on it: SQLite through the same sync
    store, PostgreSQL through its URL (an async store, woken by LISTEN/NOTIFY)."""
    if request.param == "sqlite":
        with SQLiteEventStore(tmp_path / "events.db") as store:
            yield store, serve(create_app(store, settings=SETTINGS))
        return
    from eskit.stores.postgres import PostgresEventStore

    dsn = request.getfixturevalue("postgres_dsn")
    schema = new_schema_name()
    with PostgresEventStore(dsn, schema=schema) as store:
        yield store, serve(create_app(dsn, schema=schema, settings=SETTINGS))


def test_a_client_that_reconnects_with_last_event_id_misses_nothing_and_repeats_nothing(
    served: tuple[Any, Any],
) -> None:
    store, server = served
    add(store, "a", 0, 30)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        first = read_events(client, "/api/subscribe", 12, READ)
        # Disconnected: more events land, in two streams, before the client is back.
        add(store, "b", 100, 25)
        add(store, "a", 30, 5)
        last_id = first[-1]["position"]
        rest = read_events(client, "/api/subscribe?from_position=0", 48,
                           {**READ, "Last-Event-ID": last_id})
    received = first + rest
    everything = list(store.read_all())
    assert [e["position"] for e in received] == [str(e.position) for e in everything]
    assert [e["id"] for e in received] == [str(e.event_id) for e in everything]
    assert len({e["id"] for e in received}) == 60


def test_live_events_arrive_while_connected_and_heartbeats_fill_the_quiet(
    store: SQLiteEventStore, serve,
) -> None:
    server = serve(create_app(store, settings=SETTINGS))
    add(store, "a", 0, 3)
    start = store.head_position()

    def later() -> None:
        time.sleep(0.6)
        add(store, "live", 0, 4)

    writer = threading.Thread(target=later)
    seen: list[dict[str, Any]] = []
    with httpx.Client(base_url=server.url, timeout=10) as client, client.stream(
            "GET", f"/api/subscribe?from_position={start}", headers=READ) as response:
        writer.start()
        for message in messages(response):
            seen.append(message)
            if sum("data" in m for m in seen) == 4:
                break
    writer.join()
    events = [orjson.loads(m["data"]) for m in seen if "data" in m]
    assert [(e["stream_id"], e["data"]["n"]) for e in events] == [("live", n) for n in range(4)]
    assert any(m.get("comment") == "" for m in seen), "a heartbeat came before the events"


def test_a_bad_last_event_id_or_a_missing_token_is_a_problem_before_streaming(
    store: SQLiteEventStore, serve,
) -> None:
    server = serve(create_app(store, settings=SETTINGS))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        bad = client.get("/api/subscribe", headers={**READ, "Last-Event-ID": "12x"})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert client.get("/api/subscribe").status_code == 401


def test_shutting_down_ends_open_streams_cleanly(store: SQLiteEventStore, serve) -> None:
    server = serve(create_app(store, settings=SETTINGS))
    add(store, "a", 0, 2)
    ended = threading.Event()
    received: list[dict[str, Any]] = []

    def listen() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client, client.stream(
                "GET", "/api/subscribe", headers=READ) as response:
            for message in messages(response):
                if "data" in message:
                    received.append(message)
        ended.set()

    listener = threading.Thread(target=listen)
    listener.start()
    deadline = time.monotonic() + 10
    while len(received) < 2:  # the stream is open and has sent what there is
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    server.server.stop()
    assert ended.wait(4), "the stream ended well before the graceful-shutdown timeout"
    server.thread.join(4)
    assert not server.thread.is_alive()
    assert time.monotonic() - started < 4
    assert len(received) == 2
    listener.join()


def test_a_sync_postgres_store_wakes_its_streams_on_another_process_commit(
    postgres_dsn: str, serve, monkeypatch,
) -> None:
    from eskit.stores.postgres import PostgresEventStore
    from eskit.web import sse, threaded

    # Neither the subscription's poll nor the waiting thread's round ends in time:
    # only the NOTIFY of the other store's commit can deliver the event.
    monkeypatch.setattr(sse, "POLL_SECONDS", 30.0)
    monkeypatch.setattr(threaded, "LISTEN_SECONDS", 30.0)
    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as served, \
            PostgresEventStore(postgres_dsn, schema=schema) as other:
        add(served, "a", 0, 1)
        server = serve(create_app(served, settings=SETTINGS))
        with httpx.Client(base_url=server.url, timeout=20) as client, client.stream(
                "GET", "/api/subscribe", headers=READ) as response:
            lines = messages(response)
            assert "data" in next(m for m in lines if "data" in m)
            time.sleep(0.3)  # the stream is idle, waiting
            written = time.monotonic()
            add(other, "b", 0, 1)  # not through the served store object
            event = orjson.loads(next(m for m in lines if "data" in m)["data"])
            took = time.monotonic() - written
    assert event["stream_id"] == "b"
    assert took < 10, f"woken by LISTEN/NOTIFY, not a 30 s timeout ({took:.1f} s)"
