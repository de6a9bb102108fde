"""DCB over HTTP: tags on events, POST /api/read-events, and append conditions on
POST /api/streams/{id} and /api/append-many, on SQLite and PostgreSQL."""

from typing import Any

from tests.web.conftest import READ, WRITE, TestClient
from tests.web.test_api import url


def claim(name: str, user: str) -> dict[str, Any]:
    return {"type": "UsernameClaimed", "data": {"user": user}, "tags": [f"username:{name}"]}


def query(name: str) -> dict[str, Any]:
    return {"items": [{"types": ["UsernameClaimed"], "tags": [f"username:{name}"]}]}


def read_events(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/api/read-events", json=body, headers=READ)


def test_tags_are_stored_and_shown_on_every_read(client: TestClient) -> None:
    created = client.post(url("claim-1"), json={"events": [claim("ada", "u1"),
                                                          {"type": "Note"}]}, headers=WRITE)
    assert created.status_code == 201, created.text
    stream = client.get(url("claim-1"), headers=READ).json()
    assert [e["tags"] for e in stream["events"]] == [["username:ada"], []]
    log = client.get("/api/events", headers=READ).json()
    assert [e["tags"] for e in log["events"]] == [["username:ada"], []]


def test_read_events_returns_the_matches_and_a_position_to_decide_on(
    client: TestClient,
) -> None:
    client.post(url("c-1"), json={"events": [claim("ada", "u1")]}, headers=WRITE)
    client.post(url("c-2"), json={"events": [claim("bob", "u2")]}, headers=WRITE)
    found = read_events(client, {"query": query("ada")})
    assert found.status_code == 200, found.text
    body = found.json()
    assert [e["stream_id"] for e in body["events"]] == ["c-1"]
    assert body["events"][0]["tags"] == ["username:ada"]
    assert isinstance(body["position"], str)
    assert int(body["position"]) >= int(body["events"][0]["position"])
    every = read_events(client, {"query": {"items": [{}]}, "limit": 1})
    assert len(every.json()["events"]) == 1
    later = read_events(client, {"query": {"items": [{}]},
                                 "after": every.json()["position"]})
    assert [e["stream_id"] for e in later.json()["events"]] == ["c-2"]


def test_a_condition_that_holds_appends_and_a_stale_one_is_409_writing_nothing(
    client: TestClient,
) -> None:
    position = read_events(client, {"query": query("ada")}).json()["position"]
    condition = {"query": query("ada"), "after": position}
    first = client.post(url("claim-u1"), json={"events": [claim("ada", "u1")],
                                               "condition": condition}, headers=WRITE)
    assert first.status_code == 201, first.text
    again = client.post(url("claim-u2"), json={"events": [claim("ada", "u2")],
                                               "condition": condition}, headers=WRITE)
    assert again.status_code == 409, again.text
    problem = again.json()
    assert problem["code"] == "condition-failed"
    assert problem["stream_ids"] == ["claim-u2"]
    assert problem["after"] == position
    assert client.get(url("claim-u2"), headers=READ).status_code == 404
    # With If-Match too, a failed condition stays a 409 condition-failed, not a 412.
    stale = client.post(url("claim-u3"), json={"events": [claim("ada", "u3")],
                                               "condition": condition},
                        headers={**WRITE, "If-Match": '"0"'})
    assert stale.status_code == 409
    assert stale.json()["code"] == "condition-failed"


def test_append_many_takes_one_condition_for_the_whole_call(client: TestClient) -> None:
    def register(user: str) -> Any:
        return client.post("/api/append-many", json={
            "appends": [
                {"stream_id": f"user-{user}", "events": [{"type": "UserRegistered"}],
                 "expected_version": "no_stream"},
                {"stream_id": f"claim-ada-{user}", "events": [claim("ada", user)]},
            ],
            "condition": {"query": query("ada"), "after": None},
        }, headers=WRITE)

    assert register("u1").status_code == 201
    refused = register("u2")
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "condition-failed"
    assert refused.json()["stream_ids"] == ["user-u2", "claim-ada-u2"]
    for stream in ("user-u2", "claim-ada-u2"):
        assert client.get(url(stream), headers=READ).status_code == 404
    per_stream = client.post("/api/append-many", json={"appends": [
        {"stream_id": "x", "events": [{"type": "E"}],
         "condition": {"query": query("ada")}}]}, headers=WRITE)
    assert per_stream.status_code == 422


def test_bad_tags_and_queries_are_422_and_nothing_is_written(client: TestClient) -> None:
    for body in [
        {"events": [{"type": "E", "tags": [""]}]},
        {"events": [{"type": "E", "tags": ["dup", "dup"]}]},
        {"events": [{"type": "E", "tags": ["t"] * 33}]},
        {"events": [{"type": "E"}], "condition": {"query": {"items": []}}},
        {"events": [{"type": "E"}], "condition": {"query": {"items": [{"types": [""]}]}}},
        {"events": [{"type": "E"}], "condition": {"query": query("a"), "after": "-1"}},
        {"events": [{"type": "E"}],
         "condition": {"query": query("a"), "after": str(2**128)}},
    ]:
        response = client.post(url("bad"), json=body, headers=WRITE)
        assert response.status_code == 422, (body, response.text)
    assert client.get(url("bad"), headers=READ).status_code == 404
    assert read_events(client, {"query": {"items": []}}).status_code == 422
    assert read_events(client, {"query": query("a"), "limit": 0}).status_code == 422
    writes = client.post("/api/read-events", json={"query": query("a")})
    assert writes.status_code == 401
