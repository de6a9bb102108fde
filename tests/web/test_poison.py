"""One stored event today's code cannot read never stops a reader of the global log."""

from pathlib import Path

import httpx
import orjson

from eskit import EventRegistry, NewEvent, SQLiteEventStore
from eskit.web import WebSettings, create_app
from tests.web.conftest import TestClient
from tests.web.test_sse import messages


def poisoned_store(path: Path) -> SQLiteEventStore:
    registry = EventRegistry()
    store = SQLiteEventStore(path, registry=registry)
    store.append("s", [NewEvent("Added", {"n": 1}), NewEvent("Poison", {"n": 2}),
                       NewEvent("Added", {"n": 3})])

    @registry.upcaster("Poison", from_version=1)
    def upcast(data: dict) -> dict:
        raise KeyError("amount_cents")

    return store


def test_the_global_log_shows_an_undecodable_event_in_its_place(tmp_path: Path) -> None:
    with poisoned_store(tmp_path / "e.db") as store:
        client = TestClient(create_app(store, settings=WebSettings()))
        events = client.get("/api/events").json()["events"]
        assert [e["type"] for e in events] == ["Added", "Poison", "Added"]
        assert "undecodable" not in events[0]
        assert "amount_cents" in events[1]["undecodable"]
        assert events[1]["data"] == {}
        assert events[2]["data"] == {"n": 3}
        stream = client.get("/api/streams/s")
        assert stream.status_code == 500
        assert stream.headers["content-type"] == "application/problem+json"
        assert stream.json()["code"] == "undecodable-event"


def test_the_event_stream_passes_an_undecodable_event_as_its_own_type(
    tmp_path: Path, serve,
) -> None:
    with poisoned_store(tmp_path / "e.db") as store:
        server = serve(create_app(store, settings=WebSettings()))
        found = []
        with httpx.stream("GET", server.url + "/api/subscribe", timeout=10) as response:
            for message in messages(response):
                if "data" in message:
                    found.append(message)
                    if len(found) == 3:
                        break
        assert [m.get("event") for m in found] == [None, "undecodable", None]
        assert [orjson.loads(m["data"])["type"] for m in found] == ["Added", "Poison", "Added"]
