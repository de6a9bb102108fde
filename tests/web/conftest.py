"""Fixtures for the HTTP API: an app over SQLite or PostgreSQL, and a real uvicorn server."""

import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from eskit import SQLiteEventStore
from eskit.web import WebSettings, create_app
from eskit.web.server import Server
from tests.conftest import new_schema_name

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; the dev extra
    # installs httpx, which still works. Drop this once the extra moves to httpx2.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

READER = "reader-token"
WRITER = "writer-token"
TOKENS = WebSettings(read_tokens=(READER,), write_tokens=(WRITER,))
READ = {"Authorization": f"Bearer {READER}"}
WRITE = {"Authorization": f"Bearer {WRITER}"}

ClientFactory = Callable[..., TestClient]


@pytest.fixture(params=["sqlite", "postgres"])
def make_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClientFactory]:
    """``make_client(settings)``: a TestClient on a fresh store of the parameter's kind.

    SQLite is served from a sync store (worker threads); PostgreSQL from its URL,
    which the app opens as an async store in its own lifespan.
    """
    with ExitStack() as stack:
        def make(settings: WebSettings = TOKENS) -> TestClient:
            if request.param == "sqlite":
                store = stack.enter_context(SQLiteEventStore(tmp_path / f"{time.time_ns()}.db"))
                app = create_app(store, settings=settings)
            else:
                from eskit.stores.postgres import PostgresEventStore

                dsn = request.getfixturevalue("postgres_dsn")
                schema = new_schema_name()
                PostgresEventStore(dsn, schema=schema).close()  # creates the tables
                app = create_app(dsn, schema=schema, settings=settings)
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


class RunningServer:
    """A uvicorn server in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.server = Server(app, log_level="warning")
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       daemon=True)

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.thread.join(timeout=15)
        self.socket.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], RunningServer]]:
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(RunningServer(app))
