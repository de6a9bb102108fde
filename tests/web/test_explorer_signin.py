"""Signing in to the explorer when reads need a token (``eskit.web.explorer._signin``)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from eskit import NewEvent, SQLiteEventStore
from eskit.web import WebSettings, create_app
from eskit.web.explorer._signin import COOKIE, safe_next
from tests.web.conftest import READ, READER, TOKENS, WRITER, TestClient


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    with SQLiteEventStore(tmp_path / "e.db") as store:
        store.append("cart-1", [NewEvent("ItemAdded", {"sku": "apple"})])
        yield store


@pytest.fixture
def client(store: SQLiteEventStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, settings=TOKENS), follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, token: str, next_page: str = "/streams"):
    return client.post("/signin", data={"token": token, "next": next_page})


def test_a_page_without_the_cookie_goes_to_the_sign_in_form_and_shows_nothing(
        client: TestClient) -> None:
    page = client.get("/stream", params={"stream": "cart-1"})
    assert page.status_code == 303
    assert page.headers["location"] == "/signin?next=%2Fstream%3Fstream%3Dcart-1"
    assert "ItemAdded" not in page.text
    form = client.get(page.headers["location"])
    assert form.status_code == 200
    assert 'name="next" value="/stream?stream=cart-1"' in form.text
    assert "Sign out" not in form.text


def test_a_wrong_token_is_refused_and_sets_no_cookie(client: TestClient) -> None:
    for wrong in ("nope", READER + "x", "", READER.upper()):
        answer = sign_in(client, wrong)
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "not valid" in answer.text
    # Bytes that are not UTF-8 (a lone surrogate's encoding) and a body over the limit.
    raw = client.post("/signin", content=b"token=%ED%B3%BF\xff&next=/streams",
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert raw.status_code == 401
    assert "set-cookie" not in raw.headers
    huge = client.post("/signin", data={"token": "x" * 20_000})
    assert huge.status_code == 413
    assert "set-cookie" not in huge.headers
    assert client.get("/streams").status_code == 303


def test_a_read_token_earns_a_cookie_that_opens_the_pages_and_the_live_tail(
        client: TestClient) -> None:
    answer = sign_in(client, READER, "/stream?stream=cart-1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/stream?stream=cart-1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict")
    assert READER not in cookie, "the cookie names no token"
    page = client.get("/stream", params={"stream": "cart-1"})
    assert page.status_code == 200
    assert "ItemAdded" in page.text
    assert "Sign out" in page.text
    with client.stream("GET", "/log/live", params={"after": 0}) as tail:
        assert tail.status_code == 200
        first = next(tail.iter_lines())
        assert first  # the first line of the event stream arrived
    # Signing out ends it.
    assert client.post("/signout").status_code == 303
    assert client.get("/streams").status_code == 303


def test_a_write_token_signs_in_too(client: TestClient) -> None:
    assert sign_in(client, WRITER).status_code == 303
    assert client.get("/streams").status_code == 200


def test_a_forged_or_stale_cookie_is_refused(store: SQLiteEventStore, client: TestClient) -> None:
    client.cookies.set(COOKIE, "0" * 64)
    assert client.get("/streams").status_code == 303
    client.cookies.set(COOKIE, READER)
    assert client.get("/streams").status_code == 303
    with client.stream("GET", "/log/live") as tail:
        assert tail.status_code == 401
    # A real cookie from one app is worth nothing to another (its secret is its own).
    client.cookies.clear()
    assert sign_in(client, READER).status_code == 303
    sealed = client.cookies[COOKIE]
    with TestClient(create_app(store, settings=TOKENS), follow_redirects=False) as other:
        other.cookies.set(COOKIE, sealed)
        assert other.get("/streams").status_code == 303


def test_a_posted_action_without_the_cookie_is_a_401(client: TestClient) -> None:
    answer = client.post("/projections/parked", data={"token": WRITER})
    assert answer.status_code == 401


@pytest.mark.parametrize("target", [
    "//evil.example/x", "https://evil.example", "/\\evil.example", "streams",
    "/a\r\nSet-Cookie: x=1",
])
def test_next_never_leaves_the_server(client: TestClient, target: str) -> None:
    answer = sign_in(client, READER, target)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/streams"
    assert safe_next(target, "/d") == "/d"
    assert safe_next("/stream?id=a%2Fb", "/d") == "/stream?id=a%2Fb"


def test_the_api_still_wants_its_bearer_token(client: TestClient) -> None:
    assert sign_in(client, READER).status_code == 303
    assert client.get("/api/events").status_code == 401, "the cookie is the explorer's only"
    assert client.get("/api/events", headers=READ).status_code == 200


def test_no_sign_in_while_reads_are_open(store: SQLiteEventStore) -> None:
    settings = WebSettings(write_tokens=(WRITER,))
    with TestClient(create_app(store, settings=settings), follow_redirects=False) as client:
        assert client.get("/streams").status_code == 200
        assert client.get("/signin").status_code == 404
        assert "Sign out" not in client.get("/streams").text
