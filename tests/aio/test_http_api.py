"""The HTTP example: commands over HTTP on the async store, on SQLite and PostgreSQL."""

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from examples.http_api.app import create_app
from tests.conftest import new_schema_name

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; the dev extra
    # installs httpx, which still works. Drop this once the extra moves to httpx2.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    if request.param == "sqlite":
        app = create_app(sqlite_path=tmp_path / "bank.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        app = create_app(postgres_dsn=dsn, postgres_schema=new_schema_name())
    with TestClient(app) as test_client:  # runs the lifespan: opens and closes the store
        yield test_client


def _open(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"account_number": "ACC-1", "owner": "Alice", "initial_deposit": "100.00", **extra}
    response = client.post("/accounts", json=body)
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def test_commands_change_the_state_rebuilt_from_events(client: TestClient) -> None:
    account = _open(client)
    url = f"/accounts/{account['id']}"
    assert account["balance"] == "100.00"

    assert client.post(f"{url}/deposits", json={"amount": "25.50"}).json()["balance"] == "125.50"
    withdrawn = client.post(f"{url}/withdrawals", content=b'{"amount": 0.10}')
    assert withdrawn.status_code == 200
    assert withdrawn.json()["balance"] == "125.40", "a JSON number is read exactly"

    loaded = client.get(url)
    assert loaded.status_code == 200
    assert loaded.json() == {
        "id": account["id"], "account_number": "ACC-1", "owner": "Alice",
        "balance": "125.40", "status": "open", "version": 3,
    }
    assert loaded.headers["etag"] == '"3"'

    history = client.get(f"{url}/events").json()
    assert [(e["version"], e["type"]) for e in history] == [
        (1, "AccountOpened"), (2, "MoneyDeposited"), (3, "MoneyWithdrawn"),
    ]
    assert history[1]["data"] == {"amount": "25.50"}


def test_opening_an_account_id_that_exists_is_a_conflict(client: TestClient) -> None:
    account = _open(client, id=str(uuid4()))
    again = client.post("/accounts", json={"id": account["id"], "account_number": "ACC-2",
                                           "owner": "Mallory"})
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    assert client.get(f"/accounts/{account['id']}").json()["owner"] == "Alice"


def test_broken_business_rules_are_422_and_record_nothing(client: TestClient) -> None:
    account = _open(client, initial_deposit="10.00")
    url = f"/accounts/{account['id']}"
    for path, amount in [("withdrawals", "10.01"), ("deposits", "-5"), ("deposits", "0.001")]:
        response = client.post(f"{url}/{path}", json={"amount": amount})
        assert response.status_code == 422, (path, amount)
        assert response.json()["error"] == "rejected"
    assert client.post(f"{url}/close").status_code == 422, "a balance of 10.00 remains"
    assert client.get(url).json()["version"] == 1


def test_unknown_account_is_404(client: TestClient) -> None:
    missing = uuid4()
    assert client.get(f"/accounts/{missing}").status_code == 404
    response = client.post(f"/accounts/{missing}/deposits", json={"amount": "1.00"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert client.get(f"/accounts/{missing}/events").status_code == 404
    assert client.get("/accounts/not-a-uuid").status_code == 404


def test_malformed_requests_are_rejected(client: TestClient) -> None:
    account = _open(client)
    url = f"/accounts/{account['id']}/deposits"
    assert client.post(url, content=b"{not json").status_code == 400
    assert client.post(url, json=[1, 2]).status_code == 400
    for body in [{}, {"amount": True}, {"amount": "ten"}, {"amount": None}]:
        response = client.post(url, json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "invalid_request"
    assert client.post("/accounts", json={"owner": "Bob"}).status_code == 422
    assert client.post("/accounts", json={"id": "nope", "account_number": "A",
                                          "owner": "B"}).status_code == 422


def test_if_match_with_an_old_version_changes_nothing(client: TestClient) -> None:
    account = _open(client)
    url = f"/accounts/{account['id']}"
    etag = client.get(url).headers["etag"]
    first = client.post(f"{url}/deposits", json={"amount": "1.00"}, headers={"If-Match": etag})
    assert first.status_code == 200
    stale = client.post(f"{url}/withdrawals", json={"amount": "1.00"},
                        headers={"If-Match": etag})
    assert stale.status_code == 412
    assert client.get(url).json() == {**first.json()}
    assert client.post(f"{url}/withdrawals", json={"amount": "1.00"},
                       headers={"If-Match": first.headers["etag"]}).status_code == 200


def test_every_event_records_the_request_that_caused_it(client: TestClient) -> None:
    response = client.post(
        "/accounts", json={"account_number": "A-9", "owner": "Zoë"},
        headers={"X-Request-ID": "req-42"},
    )
    account = response.json()
    assert account["balance"] == "0.00"
    store = client.app.state.store  # type: ignore[attr-defined]
    events = client.portal.call(store.read_stream, account["id"])  # type: ignore[union-attr]
    assert [e.metadata for e in events] == [{"request_id": "req-42", "source": "http-api"}]


def test_closing_an_emptied_account(client: TestClient) -> None:
    account = _open(client, initial_deposit="5.00")
    url = f"/accounts/{account['id']}"
    client.post(f"{url}/withdrawals", json={"amount": "5.00"})
    closed = client.post(f"{url}/close")
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert client.post(f"{url}/deposits", json={"amount": "1.00"}).status_code == 422
