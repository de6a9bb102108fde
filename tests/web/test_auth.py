"""Bearer tokens: who may read, who may write, and that a token opens only its own server."""

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from eskit import SQLiteEventStore
from eskit.errors import InvalidInputError
from eskit.web import WebSettings, create_app
from eskit.web import auth as auth_module
from tests.web.conftest import READ, READER, TOKENS, WRITE, WRITER, TestClient

BATCH = {"events": [{"type": "T", "data": {}}]}


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[[WebSettings], TestClient]]:
    with ExitStack() as stack:
        def build(settings: WebSettings) -> TestClient:
            store = stack.enter_context(SQLiteEventStore(tmp_path / f"{id(settings)}.db"))
            return stack.enter_context(TestClient(create_app(store, settings=settings)))

        yield build


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_without_a_write_token_configured_the_api_is_read_only(make) -> None:
    client = make(WebSettings(read_tokens=(READER,)))
    for headers in ({}, READ, bearer("anything")):
        assert_problem(client.post("/api/streams/s", json=BATCH, headers=headers), 403,
                       "read-only")
    assert client.get("/api/events", headers=READ).json()["events"] == []


def test_read_only_refuses_even_the_write_token(make) -> None:
    client = make(WebSettings(write_tokens=(WRITER,), read_only=True))
    assert_problem(client.post("/api/streams/s", json=BATCH, headers=WRITE), 403, "read-only")


def test_writing_needs_the_write_token(make) -> None:
    client = make(TOKENS)
    missing = client.post("/api/streams/s", json=BATCH)
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.post("/api/streams/s", json=BATCH, headers=bearer("wrong")), 401,
                   "unauthorized")
    assert_problem(client.post("/api/streams/s", json=BATCH,
                               headers={"Authorization": f"Basic {WRITER}"}), 401, "unauthorized")
    assert_problem(client.post("/api/streams/s", json=BATCH, headers=READ), 403,
                   "insufficient-scope")
    assert client.get("/api/events", headers=READ).json()["events"] == [], "nothing was written"
    assert client.post("/api/streams/s", json=BATCH, headers=WRITE).status_code == 201


def test_with_read_tokens_configured_every_read_needs_one(make) -> None:
    client = make(TOKENS)
    client.post("/api/streams/s", json=BATCH, headers=WRITE)
    reads = ["/api/streams", "/api/streams/s", "/api/streams/s/metadata", "/api/events",
             "/api/subscribe"]
    for path in reads:
        assert_problem(client.get(path), 401, "unauthorized")
        assert_problem(client.get(path, headers=bearer("wrong")), 401, "unauthorized")
    for path in reads[:-1]:  # the subscription never ends: it is read in test_sse
        assert client.get(path, headers=READ).status_code == 200, path
        assert client.get(path, headers=WRITE).status_code == 200, "a write token reads too"


def test_reads_are_open_without_read_tokens_but_a_wrong_token_is_refused(make) -> None:
    client = make(WebSettings(write_tokens=(WRITER,)))
    assert client.get("/api/events").status_code == 200
    assert_problem(client.get("/api/events", headers=bearer("typo")), 401, "unauthorized")


def test_health_and_the_spec_need_no_token(make) -> None:
    client = make(TOKENS)
    assert client.get("/api/health").status_code == 200
    spec = client.get("/api/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_token_of_one_server_opens_nothing_on_another(make) -> None:
    shop = make(WebSettings(read_tokens=("shop-read",), write_tokens=("shop-write",)))
    bank = make(WebSettings(read_tokens=("bank-read",), write_tokens=("bank-write",)))
    assert shop.post("/api/streams/s", json=BATCH, headers=bearer("shop-write")).status_code == 201
    assert_problem(bank.get("/api/streams/s", headers=bearer("shop-read")), 401, "unauthorized")
    assert_problem(bank.get("/api/events", headers=bearer("shop-write")), 401, "unauthorized")
    assert_problem(bank.post("/api/streams/s", json=BATCH, headers=bearer("shop-write")), 401,
                   "unauthorized")
    assert bank.get("/api/events", headers=bearer("bank-read")).json()["events"] == []


def test_several_tokens_per_scope_each_work(make) -> None:
    client = make(WebSettings(read_tokens=("r1", "r2"), write_tokens=("w1", "w2")))
    for token in ("w1", "w2"):
        assert client.post("/api/streams/s", json=BATCH, headers=bearer(token)).status_code == 201
    for token in ("r1", "r2", "w1", "w2"):
        assert len(client.get("/api/events", headers=bearer(token)).json()["events"]) == 2


def test_tokens_are_compared_in_constant_time_against_every_one(make, monkeypatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    client = make(WebSettings(read_tokens=("r1", "r2"), write_tokens=("w1",)))
    assert client.get("/api/events", headers=bearer("r1")).status_code == 200
    assert compared == [(b"r1", b"r1"), (b"r1", b"r2"), (b"r1", b"w1")], "no early exit"


@pytest.mark.parametrize("bad", [
    {"read_tokens": ("",)}, {"write_tokens": ("has space",)}, {"read_tokens": ("ü",)},
    {"write_tokens": (" padded",)}, {"max_request_bytes": 0}, {"read_only": 1},
    {"heartbeat_seconds": 0},
])
def test_bad_settings_are_refused(bad) -> None:
    with pytest.raises(InvalidInputError):
        WebSettings(**bad)


def test_the_explorer_is_mounted_with_the_settings_that_guard_it(tmp_path: Path,
                                                                 monkeypatch) -> None:
    import importlib.machinery
    import sys
    import types

    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    calls: list[object] = []

    def explorer_routes(store, settings, **options):
        calls.append((settings.read_tokens, settings.write_token))
        return [Route("/", lambda request: PlainTextResponse("explorer"))]

    fake = types.ModuleType("eskit.web.explorer")
    fake.__spec__ = importlib.machinery.ModuleSpec("eskit.web.explorer", None)
    fake.explorer_routes = explorer_routes
    monkeypatch.setitem(sys.modules, "eskit.web.explorer", fake)
    with SQLiteEventStore(tmp_path / "e.db") as store:
        open_reads = TestClient(create_app(store, settings=WebSettings(write_tokens=(WRITER,))))
        assert open_reads.get("/").text == "explorer"
        assert calls == [((), WRITER)]
        # With read tokens the explorer gets them, and asks a browser to sign in with one
        # (tests/web/test_explorer_signin.py); the API still wants its bearer token.
        closed = TestClient(create_app(store, settings=TOKENS))
        assert closed.get("/api/events").status_code == 401
        assert closed.get("/api/events", headers=READ).status_code == 200
        assert calls == [((), WRITER), (TOKENS.read_tokens, WRITER)]


def test_the_real_explorer_is_served_beside_the_api_while_reads_are_open(make) -> None:
    client = make(WebSettings(write_tokens=(WRITER,)))
    assert client.post("/api/streams/s", json=BATCH, headers=WRITE).status_code == 201
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert client.get("/api/events").json()["events"][0]["stream_id"] == "s"
    closed = make(TOKENS).get("/", follow_redirects=False)
    assert closed.status_code == 303, "no page shows what the API would refuse"
    assert closed.headers["location"].startswith("/signin?next=")
