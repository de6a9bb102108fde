"""POST /api/append-many: several streams in one transaction, on SQLite and PostgreSQL."""

from typing import Any
from uuid import uuid4

from tests.web.conftest import READ, WRITE, TestClient
from tests.web.test_api import ev, url


def many(client: TestClient, *appends: dict[str, Any], headers: Any = WRITE) -> Any:
    return client.post("/api/append-many", json={"appends": list(appends)}, headers=headers)


def part(stream: str, *events: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"stream_id": stream, "events": list(events), **extra}


def numbers(client: TestClient, stream: str) -> list[int]:
    response = client.get(url(stream), headers=READ)
    if response.status_code == 404:
        return []
    return [e["data"]["n"] for e in response.json()["events"]]


def test_every_stream_is_appended_in_request_order(client: TestClient) -> None:
    created = many(client, part("acc/a", ev(1), expected_version=0),
                   part("acc-b", ev(2), ev(3), expected_version="no_stream"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["duplicate"] is False
    assert [(r["stream_id"], r["version"]) for r in body["results"]] == [("acc/a", 1), ("acc-b", 2)]
    positions = [int(e["position"]) for r in body["results"] for e in r["events"]]
    assert positions == sorted(positions)
    assert all(isinstance(r["position"], str) for r in body["results"])
    assert numbers(client, "acc/a") == [1]
    assert numbers(client, "acc-b") == [2, 3]


def test_a_stream_that_moved_is_409_naming_every_conflict_and_nothing_is_written(
    client: TestClient,
) -> None:
    many(client, part("a", ev(1)), part("b", ev(1)))
    conflict = many(client, part("a", ev(2), expected_version=0), part("c", ev(2)),
                    part("b", ev(2), expected_version="no_stream"))
    assert conflict.status_code == 409, conflict.text
    assert conflict.headers["content-type"] == "application/problem+json"
    problem = conflict.json()
    assert problem["code"] == "conflict"
    assert problem["stream_id"] == "a"
    assert [(c["stream_id"], c["expected_version"], c["actual_version"])
            for c in problem["conflicts"]] == [("a", 0, 1), ("b", "NO_STREAM", 1)]
    assert numbers(client, "a") == [1]
    assert numbers(client, "b") == [1]
    assert numbers(client, "c") == []


def test_a_retried_call_is_200_duplicate_and_stores_nothing(client: TestClient) -> None:
    call = [part("a", ev(1, id=str(uuid4())), expected_version=0),
            part("b", ev(2, id=str(uuid4())), expected_version=0)]
    first = many(client, *call)
    again = many(client, *call)
    assert first.status_code == 201
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["results"] == [{**r, "duplicate": True} for r in first.json()["results"]]
    assert numbers(client, "a") == [1]
    assert numbers(client, "b") == [2]


def test_bad_requests_are_422_problems_and_write_nothing(client: TestClient) -> None:
    for body in ({}, {"appends": []}, {"appends": [{"events": [ev(1)]}]},
                 {"appends": [part("", ev(1))]},
                 {"appends": [part("a", ev(1)), part("a", ev(2))]},  # a stream twice
                 {"appends": [part("a", ev(1)), part("b", {"type": ""})]},
                 {"appends": [part("a", ev(1), expected_version=-1)]},
                 {"appends": [part("a", ev(1))], "extra": 1}):
        response = client.post("/api/append-many", json=body, headers=WRITE)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    same_id = str(uuid4())
    response = many(client, part("a", ev(1, id=same_id)), part("b", ev(2, id=same_id)))
    assert response.status_code == 422, response.text
    assert numbers(client, "a") == []
    assert numbers(client, "b") == []


def test_appending_needs_a_write_token(client: TestClient) -> None:
    assert many(client, part("a", ev(1)), headers={}).status_code == 401
    assert many(client, part("a", ev(1)), headers=READ).status_code == 403
    assert numbers(client, "a") == []


def test_the_spec_documents_the_route() -> None:
    from eskit import InMemoryEventStore
    from eskit.web import create_app

    spec = create_app(InMemoryEventStore()).openapi()
    operation = spec["paths"]["/api/append-many"]["post"]
    assert {"200", "201", "401", "403", "409", "422"} <= set(operation["responses"])
    assert "AppendManyRequest" in spec["components"]["schemas"]
