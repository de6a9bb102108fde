"""eskit.fastapi: the lifespan, the dependencies and the problem-details handlers."""

import asyncio
import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastapi import FastAPI

import eskit
from eskit import NewEvent
from eskit.aio import AsyncInMemoryEventStore
from eskit.fastapi import (
    PROBLEM_JSON,
    IfMatch,
    IfMatchDep,
    PreconditionFailed,
    RepositoryDep,
    StoreDep,
    add_exception_handlers,
    background_service,
    eskit_lifespan,
    etag,
)
from tests.fastapi.conftest import TestClient


class Recorder:
    """A BackgroundService that writes what happens to it into a shared log."""

    def __init__(self, name: str, log: list[str], *, fail_start: bool = False,
                 fail_stop: bool = False) -> None:
        self.name, self.log = name, log
        self.fail_start, self.fail_stop = fail_start, fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} failed")


class ClosingStore(AsyncInMemoryEventStore):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def close(self) -> None:
        self.log.append("close store")
        await super().close()


def test_lifespan_opens_the_store_from_eskit_dsn_and_closes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESKIT_DSN", f"sqlite:///{tmp_path}/app.db")
    app = FastAPI(lifespan=eskit_lifespan())

    @app.post("/things/{thing}")
    async def add(thing: str, store: StoreDep) -> dict[str, int]:
        result = await store.append(thing, [NewEvent("Added")])
        return {"version": result.version}

    with TestClient(app) as client:
        assert client.post("/things/a").json() == {"version": 1}
        store = app.state.eskit.store
    assert app.state.eskit is None
    with pytest.raises(eskit.StoreError, match="closed"):
        store.sync_store.head_version("a")
    reopened = eskit.open_store(tmp_path / "app.db")
    assert reopened.head_version("a") == 1
    reopened.close()


def test_services_start_in_order_and_stop_in_reverse_before_the_store_closes() -> None:
    log: list[str] = []
    app = FastAPI(lifespan=eskit_lifespan(
        store=ClosingStore(log),
        background=[Recorder("a", log), Recorder("b", log)],
    ))
    with TestClient(app):
        log.append("serving")
    assert log == ["start a", "start b", "serving", "stop b", "stop a"]


def test_the_lifespan_closes_the_store_it_opened_after_the_services(tmp_path: Path) -> None:
    log: list[str] = []

    def services(store: Any) -> list[object]:
        original = store.close

        async def close() -> None:
            log.append("close store")
            await original()

        store.close = close
        return [Recorder("a", log)]

    app = FastAPI(lifespan=eskit_lifespan(tmp_path / "x.db", background=services))
    with TestClient(app):
        pass
    assert log == ["start a", "stop a", "close store"]


def test_a_service_that_cannot_start_stops_the_started_ones_and_startup_fails(
        tmp_path: Path) -> None:
    log: list[str] = []

    def services(store: Any) -> list[object]:
        original = store.close

        async def close() -> None:
            log.append("close store")
            await original()

        store.close = close
        return [Recorder("a", log), Recorder("b", log, fail_start=True), Recorder("c", log)]

    app = FastAPI(lifespan=eskit_lifespan(tmp_path / "x.db", background=services))
    with pytest.raises(RuntimeError, match="b cannot start"), TestClient(app):
        pass
    assert log == ["start a", "stop a", "close store"]


def test_every_service_is_stopped_even_when_one_fails_and_the_failure_is_raised() -> None:
    log: list[str] = []
    app = FastAPI(lifespan=eskit_lifespan(
        store=ClosingStore(log),
        background=[Recorder("a", log), Recorder("b", log, fail_stop=True)],
    ))
    with pytest.raises(RuntimeError, match="b failed"), TestClient(app):
        pass
    assert log == ["start a", "start b", "stop b", "stop a"]


class SyncRunner:
    """Shaped like ProjectionRunner: run() until stop(), from another thread."""

    def __init__(self, *, fail: bool = False) -> None:
        self.stopped = threading.Event()
        self.running = threading.Event()
        self.thread: threading.Thread | None = None
        self.fail = fail

    def run(self) -> None:
        self.thread = threading.current_thread()
        self.running.set()
        if self.fail:
            raise eskit.StoreError("target gone")
        self.stopped.wait(10)

    def stop(self) -> None:
        self.stopped.set()


class AsyncRunner:
    """Shaped like an async runner: await run() until stop()."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.ran = False

    async def run(self) -> None:
        self.ran = True
        await self.stopped.wait()

    async def stop(self) -> None:
        self.stopped.set()


def test_a_sync_runner_runs_in_a_thread_and_an_async_one_as_a_task() -> None:
    sync_runner, async_runner = SyncRunner(), AsyncRunner()
    app = FastAPI(lifespan=eskit_lifespan(store=AsyncInMemoryEventStore(),
                                          background=[sync_runner, async_runner]))
    with TestClient(app):
        assert sync_runner.running.wait(5)
        assert sync_runner.thread is not threading.main_thread()
    assert sync_runner.stopped.is_set()
    assert not sync_runner.thread.is_alive()
    assert async_runner.ran
    assert async_runner.stopped.is_set()


def test_a_runner_that_died_while_serving_is_reported_at_shutdown() -> None:
    runner = SyncRunner(fail=True)
    app = FastAPI(lifespan=eskit_lifespan(store=AsyncInMemoryEventStore(), background=[runner]))
    with pytest.raises(eskit.StoreError, match="target gone"), TestClient(app):
        assert runner.running.wait(5)


def test_an_object_that_is_no_service_is_refused() -> None:
    with pytest.raises(eskit.InvalidInputError, match="not a background service"):
        background_service(object())
    with pytest.raises(eskit.InvalidInputError):
        eskit_lifespan("memory://", store=AsyncInMemoryEventStore())


# --------------------------------------------------------------------------- errors


def _app_raising(error: Exception) -> TestClient:
    app = FastAPI(lifespan=eskit_lifespan(store=AsyncInMemoryEventStore()))
    add_exception_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return TestClient(app)


@pytest.mark.parametrize(("error", "status", "code"), [
    (eskit.ConcurrencyError("acc-1", 2, 3), 409, "conflict"),
    (eskit.CommandRetriesExhausted(3, eskit.ConcurrencyError("acc-1", 2, 3)), 409, "conflict"),
    (PreconditionFailed("acc-1", '"2"', 3), 412, "precondition-failed"),
    (eskit.AppendConditionFailed("acc-1", eskit.AppendCondition(eskit.Query.all(), 7)), 409,
     "condition-failed"),
    (eskit.DuplicateEventError("id reused"), 409, "duplicate-event"),
    (eskit.AggregateNotFound("acc-1"), 404, "not-found"),
    (eskit.VersionNotFound("acc-1", 9, 3), 404, "version-not-found"),
    (eskit.InvalidInputError("bad amount"), 422, "invalid-input"),
    (eskit.EncodingError("cannot encode", path="event_data.x"), 422, "invalid-input"),
    (eskit.StoreUnavailableError("password=hunter2 host down"), 503, "store-unavailable"),
    (eskit.StoreBusyError("locked"), 503, "store-unavailable"),
])
def test_eskit_errors_are_problem_details_with_their_status(
        error: Exception, status: int, code: str) -> None:
    with _app_raising(error) as client:
        response = client.get("/boom")
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert body["title"]
    if status == 503:
        assert "hunter2" not in response.text, "a driver's message is not shown"
        assert response.headers["retry-after"] == "1"
    else:
        assert body["detail"] == str(error)


def test_a_conflict_names_the_stream_and_both_versions() -> None:
    with _app_raising(eskit.ConcurrencyError("acc-1", eskit.NO_STREAM, 3)) as client:
        body = client.get("/boom").json()
    assert body["stream_id"] == "acc-1"
    assert (body["expected_version"], body["actual_version"]) == ("NO_STREAM", 3)


def test_a_command_out_of_retries_names_its_attempts_and_last_conflict() -> None:
    exhausted = eskit.CommandRetriesExhausted(5, eskit.ConcurrencyError("acc-1", 4, 6))
    with _app_raising(exhausted) as client:
        body = client.get("/boom").json()
    assert body["stream_id"] == "acc-1"
    assert (body["expected_version"], body["actual_version"], body["attempts"]) == (4, 6, 5)


def test_a_request_that_does_not_fit_the_model_is_a_problem_too() -> None:
    app = FastAPI()
    add_exception_handlers(app, type_base="https://example.com/problems/")

    @app.get("/items/{n}")
    async def item(n: int) -> int:
        return n

    with TestClient(app) as client:
        response = client.get("/items/ten")
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "https://example.com/problems/invalid-request"
    assert body["errors"][0]["loc"] == ["path", "n"]


def test_an_undecodable_event_is_left_to_the_500_handler() -> None:
    with _app_raising(eskit.DecodingError("bad row")) as client, \
            pytest.raises(eskit.DecodingError):
        client.get("/boom")


# --------------------------------------------------------------------------- If-Match


@pytest.mark.parametrize(("header", "version", "matches"), [
    (None, 7, True),
    ('"7"', 7, True),
    ('"6"', 7, False),
    ('"5", "7"', 7, True),
    ("*", 7, True),
    ('W/"7"', 7, False),  # strong comparison: a weak tag never matches
    ("7", 7, False),  # not an entity tag
    ("", 7, False),
])
def test_if_match_compares_strong_entity_tags(header: str | None, version: int,
                                             matches: bool) -> None:
    assert IfMatch(header).matches(version) is matches


def test_a_stale_if_match_is_412_and_nothing_is_written() -> None:
    app = FastAPI(lifespan=eskit_lifespan(store=AsyncInMemoryEventStore()))
    add_exception_handlers(app)

    @app.post("/streams/{stream}")
    async def append(stream: str, store: StoreDep, precondition: IfMatchDep,
                     repository: RepositoryDep) -> dict[str, str]:
        assert repository is app.state.eskit.repository
        head = await store.head_version(stream)
        precondition.check(stream, head)
        result = await store.append(stream, [NewEvent("Happened")], expected_version=head)
        return {"etag": etag(result.version)}

    stream = str(uuid4())
    with TestClient(app) as client:
        first = client.post(f"/streams/{stream}")
        assert first.json() == {"etag": '"1"'}
        assert client.post(f"/streams/{stream}", headers={"If-Match": '"1"'}).status_code == 200
        stale = client.post(f"/streams/{stream}", headers={"If-Match": '"1"'})
        assert stale.status_code == 412
        assert stale.json()["actual_version"] == 2
        head = client.portal.call(app.state.eskit.store.head_version, stream)
    assert head == 2


def test_a_handler_without_the_lifespan_gets_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(store: StoreDep) -> None:
        return None

    with pytest.raises(RuntimeError, match="eskit_lifespan"):
        TestClient(app).get("/x")


def test_a_startup_failure_is_the_error_raised_even_if_cleaning_up_fails_too() -> None:
    log: list[str] = []
    app = FastAPI(lifespan=eskit_lifespan(store=ClosingStore(log), background=[
        Recorder("a", log, fail_stop=True), Recorder("b", log, fail_start=True),
    ]))
    with pytest.raises(RuntimeError, match="b cannot start"), TestClient(app):
        pass
    assert log == ["start a", "stop a"]
