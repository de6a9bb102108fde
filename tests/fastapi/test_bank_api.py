"""The bank HTTP API example (examples/bank_api), in-process, on SQLite and PostgreSQL."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from examples.bank_api.app import create_app
from tests.conftest import new_schema_name
from tests.fastapi.conftest import TestClient


@pytest.fixture(params=["sqlite", "postgres"])
def client(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/bank.db"
    else:
        url = request.getfixturevalue("postgres_dsn")
        monkeypatch.setenv("ESKIT_SCHEMA", new_schema_name())  # the store's and the read model's
    with TestClient(create_app(url)) as test_client:  # runs the lifespan in-process
        yield test_client


def _open(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"account_number": "ACC-1", "owner": "Alice", "initial_deposit": "100.00", **extra}
    response = client.post("/accounts", json=body)
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def test_commands_change_the_state_and_money_stays_exact(client: TestClient) -> None:
    account = _open(client)
    url = f"/accounts/{account['id']}"
    assert client.post(f"{url}/deposits", json={"amount": "25.50"}).json()["balance"] == "125.50"
    withdrawn = client.post(f"{url}/withdrawals", json={"amount": "0.10"})
    assert withdrawn.json()["balance"] == "125.40"
    loaded = client.get(url)
    assert loaded.json()["version"] == 3
    assert loaded.headers["etag"] == '"3"'
    history = client.get(f"{url}/events").json()
    assert [(e["version"], e["type"]) for e in history] == [
        (1, "AccountOpened"), (2, "MoneyDeposited"), (3, "MoneyWithdrawn"),
    ]


def test_the_read_model_follows_the_commands_in_the_background(client: TestClient) -> None:
    first = _open(client)
    _open(client, account_number="ACC-2", owner="Bob", initial_deposit="5.00")
    last = client.post(f"/accounts/{first['id']}/deposits", json={"amount": "0.01"}).json()
    rows = client.get("/balances", params={"after": last["position"], "timeout": 10}).json()
    assert rows == [
        {"account_number": "ACC-1", "owner": "Alice", "status": "open", "balance": "100.01"},
        {"account_number": "ACC-2", "owner": "Bob", "status": "open", "balance": "5.00"},
    ]


def test_errors_are_problem_details(client: TestClient) -> None:
    account = _open(client, id=str(uuid4()), initial_deposit="10.00")
    url = f"/accounts/{account['id']}"

    taken = client.post("/accounts", json={"id": account["id"], "account_number": "X",
                                           "owner": "Mallory"})
    assert taken.status_code == 409
    assert taken.headers["content-type"] == "application/problem+json"
    assert taken.json()["code"] == "conflict"

    broken = client.post(f"{url}/withdrawals", json={"amount": "10.01"})
    assert (broken.status_code, broken.json()["code"]) == (422, "rejected")

    missing = client.post(f"/accounts/{uuid4()}/deposits", json={"amount": "1.00"})
    assert (missing.status_code, missing.json()["code"]) == (404, "not-found")

    malformed = client.post(f"{url}/deposits", json={"amount": "ten"})
    assert (malformed.status_code, malformed.json()["code"]) == (422, "invalid-request")
    assert client.get(url).json()["version"] == 1, "nothing was recorded"


def test_a_stale_if_match_is_412_and_changes_nothing(client: TestClient) -> None:
    account = _open(client)
    url = f"/accounts/{account['id']}"
    etag = client.get(url).headers["etag"]
    first = client.post(f"{url}/deposits", json={"amount": "1.00"}, headers={"If-Match": etag})
    assert first.status_code == 200
    stale = client.post(f"{url}/withdrawals", json={"amount": "1.00"},
                        headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["code"] == "precondition-failed"
    assert client.get(url).json()["balance"] == "101.00"


def test_every_event_records_the_request_that_caused_it(client: TestClient) -> None:
    response = client.post("/accounts", json={"account_number": "A-9", "owner": "Zoë"},
                           headers={"X-Request-ID": "req-42"})
    store = client.app.state.eskit.store  # type: ignore[attr-defined]
    events = client.portal.call(store.read_stream, response.json()["id"])  # type: ignore[union-attr]
    assert [e.metadata for e in events] == [{"request_id": "req-42", "source": "bank-api"}]
