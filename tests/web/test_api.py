"""The HTTP API's routes on SQLite and PostgreSQL: what is stored is what is read."""

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

from eskit import SQLiteEventStore
from eskit.web import WebSettings, create_app
from tests.web.conftest import READ, WRITE, ClientFactory, TestClient


def url(stream_id: str, suffix: str = "") -> str:
    return "/api/streams/" + quote(stream_id, safe="") + suffix


def append(client: TestClient, stream_id: str, *events: dict[str, Any], **extra: Any) -> Any:
    headers = {**WRITE, **extra.pop("headers", {})}
    return client.post(url(stream_id), json={"events": list(events), **extra}, headers=headers)


def ev(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "Counted", "data": {"n": n}, **extra}


def test_appended_events_read_back_in_order_with_string_positions(client: TestClient) -> None:
    created = append(client, "order-1", ev(1), ev(2, metadata={"by": "alice"}))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 2
    assert body["duplicate"] is False
    assert created.headers["etag"] == '"2"'
    assert created.headers["location"] == "/api/streams/order-1"
    assert all(isinstance(e["position"], str) and e["position"].isdigit() for e in body["events"])

    read = client.get(url("order-1"), headers=READ).json()
    assert [(e["version"], e["type"], e["data"]) for e in read["events"]] == [
        (1, "Counted", {"n": 1}), (2, "Counted", {"n": 2})]
    assert read["events"][1]["metadata"]["by"] == "alice"
    assert [e["id"] for e in read["events"]] == [e["id"] for e in body["events"]]
    assert [e["position"] for e in read["events"]] == [e["position"] for e in body["events"]]
    assert read["next"] is None


def test_a_stream_reads_in_pages_forwards_and_backwards(client: TestClient) -> None:
    assert append(client, "s", *[ev(i) for i in range(1, 8)]).status_code == 201
    seen, link = [], url("s") + "?limit=3"
    while link:
        page = client.get(link, headers=READ).json()
        seen += [e["version"] for e in page["events"]]
        link = page["next"]
    assert seen == [1, 2, 3, 4, 5, 6, 7]

    seen, link = [], url("s") + "?limit=3&direction=backward"
    while link:
        page = client.get(link, headers=READ).json()
        assert page["direction"] == "backward"
        seen += [e["version"] for e in page["events"]]
        link = page["next"]
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    middle = client.get(url("s") + "?from=5&limit=2", headers=READ).json()
    assert [e["version"] for e in middle["events"]] == [5, 6]
    below = client.get(url("s") + "?from=3&direction=backward", headers=READ).json()
    assert [e["version"] for e in below["events"]] == [3, 2, 1]


STREAM_IDS = [
    "a/b", "100%", "%2F", "x/metadata", "ü ñ 中文", "emoji 🎉", "?q=1#frag", "a+b&c=d",
    " lead", "tab\tin", "'; DROP TABLE events; --", "\u202eRTL", "a" * 2000,
]


def test_any_stream_id_round_trips_through_the_path(client: TestClient) -> None:
    for stream_id in STREAM_IDS:
        created = append(client, stream_id, ev(1))
        assert created.status_code == 201, created.text
        assert created.json()["stream_id"] == stream_id
        read = client.get(url(stream_id), headers=READ)
        assert read.status_code == 200, read.text
        assert [e["stream_id"] for e in read.json()["events"]] == [stream_id]
        meta = client.get(url(stream_id, "/metadata"), headers=READ).json()
        assert meta["stream_id"] == stream_id
        assert meta["version"] == 1
        assert client.get(created.headers["location"], headers=READ).status_code == 200
    listed = client.get("/api/streams?limit=1000", headers=READ).json()["streams"]
    assert [s["stream_id"] for s in listed] == sorted(STREAM_IDS)


def test_a_stream_id_that_is_not_utf8_is_422(client: TestClient) -> None:
    response = client.get("/api/streams/%FF%FE", headers=READ)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_a_stale_expected_version_is_409_and_writes_nothing(client: TestClient) -> None:
    append(client, "s", ev(1))
    for expected in (0, 2, "no_stream"):
        conflict = append(client, "s", ev(9), expected_version=expected)
        assert conflict.status_code == 409, expected
        problem = conflict.json()
        assert problem["code"] == "conflict"
        assert problem["actual_version"] == 1
        assert conflict.headers["content-type"] == "application/problem+json"
    assert append(client, "new", ev(1), expected_version="stream_exists").status_code == 409
    assert append(client, "s", ev(2), expected_version=1).status_code == 201
    assert append(client, "s", ev(3), expected_version="stream_exists").status_code == 201
    versions = [e["data"]["n"] for e in client.get(url("s"), headers=READ).json()["events"]]
    assert versions == [1, 2, 3]
    assert client.get(url("new"), headers=READ).status_code == 404


def test_if_match_states_the_version_and_a_mismatch_is_412(client: TestClient) -> None:
    etag = append(client, "s", ev(1)).headers["etag"]
    assert client.get(url("s", "/metadata"), headers=READ).headers["etag"] == etag
    ok = append(client, "s", ev(2), headers={"If-Match": etag})
    assert ok.status_code == 201
    stale = append(client, "s", ev(3), headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["code"] == "precondition-failed"
    assert append(client, "other", ev(1), headers={"If-Match": "*"}).status_code == 412
    assert append(client, "s", ev(3), headers={"If-Match": "*"}).status_code == 201
    for bad in ('W/"3"', "3", '"x"', '"1", "2"'):
        assert append(client, "s", ev(4), headers={"If-Match": bad}).status_code == 422, bad
    both = append(client, "s", ev(4), expected_version=3, headers={"If-Match": '"3"'})
    assert both.status_code == 422
    assert client.get(url("s", "/metadata"), headers=READ).json()["version"] == 3


def test_a_retried_append_with_the_same_event_ids_is_stored_once(client: TestClient) -> None:
    batch = [ev(1, id=str(uuid4())), ev(2, id=str(uuid4()))]
    first = append(client, "s", *batch, expected_version=0)
    again = append(client, "s", *batch, expected_version=0)
    assert first.status_code == 201
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["events"] == first.json()["events"]
    assert len(client.get(url("s"), headers=READ).json()["events"]) == 2
    partial = append(client, "s", batch[1], ev(3, id=str(uuid4())))
    assert partial.status_code == 409
    assert partial.json()["code"] == "duplicate-event"
    assert len(client.get(url("s"), headers=READ).json()["events"]) == 2


def test_a_batch_with_one_bad_event_is_422_and_nothing_is_written(client: TestClient) -> None:
    for bad in ({"type": ""}, {"type": "T", "data": {"k": "\ud800"}}, {"type": "a\x00b"},
                {"type": "T", "extra": 1}, {"data": {}}, {"type": "T", "id": "not-a-uuid"}):
        response = client.post(url("s"), headers=WRITE,
                               content=json.dumps({"events": [ev(1), bad]}).encode())
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    for body in ({}, {"events": []}, {"events": [ev(1)], "expected_version": -1},
                 {"events": [ev(1)], "expected_version": True},
                 {"events": [ev(1)], "expected_version": "maybe"}, [1]):
        assert client.post(url("s"), json=body, headers=WRITE).status_code == 422, body
    assert client.post(url("s"), content=b"{not json", headers={
        **WRITE, "content-type": "application/json"}).status_code == 422
    assert client.get(url("s"), headers=READ).status_code == 404


def test_event_data_round_trips_exactly(client: TestClient) -> None:
    data = {"big": 2**70, "neg": -(2**63), "float": 0.1, "nested": {"list": [1, "two", None,
            True]}, "text": "ü\n\"quoted\"\u2028", "empty": {}}
    assert append(client, "s", {"type": "T", "data": data}).status_code == 201
    [event] = client.get(url("s"), headers=READ).json()["events"]
    assert event["data"] == data


def test_the_global_log_pages_by_position(client: TestClient) -> None:
    for stream in ("a", "b", "c"):
        append(client, stream, ev(1), ev(2))
    seen: list[tuple[str, int]] = []
    positions: list[int] = []
    link = "/api/events?limit=4"
    while link:
        page = client.get(link, headers=READ).json()
        seen += [(e["stream_id"], e["version"]) for e in page["events"]]
        positions += [int(e["position"]) for e in page["events"]]
        link = page["next"]
    assert seen == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    assert positions == sorted(positions)
    assert len(set(positions)) == 6
    after = client.get(f"/api/events?from_position={positions[3]}", headers=READ).json()
    assert [int(e["position"]) for e in after["events"]] == positions[4:]
    assert client.get("/api/events?from_position=-1", headers=READ).status_code == 422
    assert client.get(f"/api/events?from_position={2**128}", headers=READ).status_code == 422


def test_streams_are_listed_by_prefix_and_paged(client: TestClient) -> None:
    for stream in ("order-1", "order-2", "cart-1", "order-3"):
        append(client, stream, ev(1))
    append(client, "order-2", ev(2))
    page = client.get("/api/streams?prefix=order-&limit=2", headers=READ).json()
    assert [s["stream_id"] for s in page["streams"]] == ["order-1", "order-2"]
    assert page["streams"][1]["version"] == 2
    assert isinstance(page["streams"][1]["last_position"], str)
    append(client, "order-0", ev(1))  # created behind the cursor: the next page stays put
    rest = client.get(page["next"], headers=READ).json()
    assert [s["stream_id"] for s in rest["streams"]] == ["order-3"]
    assert rest["next"] is None
    everything = client.get("/api/streams", headers=READ).json()["streams"]
    assert [s["stream_id"] for s in everything] == [
        "cart-1", "order-0", "order-1", "order-2", "order-3"]
    after = client.get("/api/streams?after=order-10", headers=READ).json()["streams"]
    assert [s["stream_id"] for s in after] == ["order-2", "order-3"], "a cursor need not exist"


def test_stream_metadata_gives_version_and_times(client: TestClient) -> None:
    first = append(client, "s", ev(1)).json()
    last = append(client, "s", ev(2), ev(3)).json()
    meta = client.get(url("s", "/metadata"), headers=READ).json()
    assert meta["version"] == 3
    assert meta["first_position"] == first["position"]
    assert meta["last_position"] == last["position"]
    assert meta["created"] <= meta["last_write"]
    missing = client.get(url("nope", "/metadata"), headers=READ)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not-found"


def test_every_error_is_a_problem(client: TestClient) -> None:
    for response in (
        client.get("/api/nowhere", headers=READ),
        client.delete(url("s"), headers=WRITE),
        client.get(url("s"), headers=READ),
        client.get(url("s") + "?limit=0", headers=READ),
        client.get(url("s") + "?direction=sideways", headers=READ),
        client.get("/api/events"),
    ):
        assert response.status_code >= 400
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = response.json()
        assert problem["status"] == response.status_code
        assert {"type", "title", "detail", "code"} <= problem.keys()


def test_a_body_over_the_limit_is_refused(make_client: ClientFactory) -> None:
    client = make_client(WebSettings(write_tokens=("w",), max_request_bytes=100_000))
    headers = {"Authorization": "Bearer w", "content-type": "application/json"}
    chunked = client.post(url("s"), content=(b" " * 10_000 for _ in range(20)), headers=headers)
    declared = client.post(url("s"), content=b" " * 100_001, headers=headers)
    for response in (chunked, declared):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "too-large"
    small = client.post(url("s"), json={"events": [ev(1)]}, headers=headers)
    assert small.status_code == 201
    assert client.get("/api/events").json()["events"][0]["data"] == {"n": 1}


def test_the_body_limit_stops_reading_as_soon_as_it_is_passed(tmp_path: Path) -> None:
    # Straight through ASGI: the test client would buffer the whole body first.
    store = SQLiteEventStore(tmp_path / "e.db")
    app = create_app(store, settings=WebSettings(write_tokens=("w",), max_request_bytes=100_000))
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b" " * 10_000, "more_body": read < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/streams/s", "raw_path": b"/api/streams/s",
        "root_path": "", "query_string": b"", "server": ("test", 80), "client": ("c", 1),
        "headers": [(b"authorization", b"Bearer w"), (b"content-type", b"application/json"),
                    (b"transfer-encoding", b"chunked")],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert read == 11, "the 11th chunk passed the limit; nothing after it was read"
    assert store.head_position() == 0
    store.close()


def test_health_needs_no_token_and_reports_the_store(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert client.get("/api/openapi.json").status_code == 200


def test_a_sync_postgres_store_is_served_through_worker_threads(postgres_dsn: str) -> None:
    from eskit.stores.postgres import PostgresEventStore
    from tests.conftest import new_schema_name
    from tests.web.conftest import TOKENS

    with PostgresEventStore(postgres_dsn, schema=new_schema_name()) as store:
        with TestClient(create_app(store, settings=TOKENS)) as client:
            assert append(client, "s", ev(1), ev(2), expected_version=0).status_code == 201
            assert append(client, "s", ev(3), expected_version=0).status_code == 409
            page = client.get("/api/events", headers=READ).json()
            assert [e["data"]["n"] for e in page["events"]] == [1, 2]
        assert store.head_version("s") == 2, "the app leaves the store open for its owner"
