"""OpenTelemetry spans of stores, repositories, projections and process managers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass

import pytest
from opentelemetry.trace import format_span_id, format_trace_id

from eskit import (
    Aggregate,
    InMemoryEventStore,
    InMemorySnapshotStore,
    NewEvent,
    Repository,
    SQLiteEventStore,
    domain_event,
    handles,
    observability,
)
from eskit.observability import TRACEPARENT_KEY
from eskit.projections import InMemoryTarget, Projection, ProjectionRunner
from eskit.projections.process_manager import ProcessManager

from .conftest import Otel


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = InMemoryEventStore() if request.param == "memory" else SQLiteEventStore(
        tmp_path / "events.db"
    )
    yield s
    s.close()


def traceparent_of(span) -> str:
    c = span.context
    return f"00-{format_trace_id(c.trace_id)}-{format_span_id(c.span_id)}-{c.trace_flags:02x}"


def test_append_span_follows_the_database_semantic_conventions(otel: Otel, store):
    store.append("order-1", [NewEvent("Placed", {}), NewEvent("Paid", {})])
    (span,) = otel.spans("append events")
    assert span.attributes["db.system.name"] == store.db_system
    assert span.attributes["db.operation.name"] == "append"
    assert span.attributes["db.collection.name"] == "events"
    assert span.attributes["db.operation.batch.size"] == 2
    assert span.attributes["eskit.stream_id"] == "order-1"
    assert store.db_system in ("memory", "sqlite")


def test_appended_events_carry_the_traceparent_of_their_append(otel: Otel, store):
    with otel.tracer.start_as_current_span("POST /orders") as request:
        store.append("order-1", [NewEvent("Placed", {"n": 1})])
    (append,) = otel.spans("append events")
    assert append.parent.span_id == request.get_span_context().span_id
    (event,) = store.read_stream("order-1")
    assert event.metadata[TRACEPARENT_KEY] == traceparent_of(append)
    assert event.event_data == {"n": 1}


def test_callers_own_traceparent_is_kept(otel: Otel, store):
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    store.append("s", [NewEvent("E", {}, metadata={TRACEPARENT_KEY: mine})])
    assert store.read_stream("s")[0].metadata[TRACEPARENT_KEY] == mine


def test_tracing_never_makes_an_append_fail_at_the_size_limit(otel: Otel, tmp_path):
    with SQLiteEventStore(tmp_path / "e.db", max_event_bytes=40) as store:
        data = {"x": "a" * (40 - 2 - len('{"x":""}'))}  # 2 bytes for the empty metadata {}
        store.append("s", [NewEvent("E", data)])
        (event,) = store.read_stream("s")
        assert event.event_data == data
        assert TRACEPARENT_KEY not in event.metadata  # no room: stored without it


def test_retried_append_with_another_trace_context_is_still_idempotent(otel: Otel, store):
    events = [NewEvent("E", {"n": 1})]
    with otel.tracer.start_as_current_span("first try"):
        store.append("s", events, 0)
    with otel.tracer.start_as_current_span("retry"):
        assert store.append("s", events, 0).duplicate
    assert len(store.read_stream("s")) == 1


def test_without_instrument_nothing_is_added_to_metadata(store):
    store.append("s", [NewEvent("E", {})])
    assert store.read_stream("s")[0].metadata == {}


def test_with_the_api_noop_provider_no_context_is_written(store):
    observability.instrument()  # the global provider: OpenTelemetry's no-op, no SDK
    try:
        store.append("s", [NewEvent("E", {})])
        assert next(iter(store.read_all())).metadata == {}
    finally:
        observability.uninstrument()


def test_conflicting_append_span_records_the_error(otel: Otel, store):
    from eskit import ConcurrencyError

    store.append("s", [NewEvent("E", {})])
    with pytest.raises(ConcurrencyError):
        store.append("s", [NewEvent("E", {})], 0)
    failed = otel.spans("append events")[-1]
    assert not failed.status.is_ok
    assert failed.events[0].name == "exception"
    assert store.read_stream("s")[0].version == 1
    assert len(store.read_stream("s")) == 1


def test_each_read_all_page_is_a_span_with_its_returned_rows(otel: Otel, store):
    from eskit.stores.model import READ_ALL_PAGE_SIZE

    store.append("s", [NewEvent("E", {}) for _ in range(3)])
    assert len(list(store.read_all())) == 3
    assert len(list(store.read_all(on_undecodable="yield"))) == 3
    pages = otel.spans("read_all events")
    assert [p.attributes["db.response.returned_rows"] for p in pages] == [3, 3]
    assert pages[0].attributes["eskit.limit"] == READ_ALL_PAGE_SIZE
    assert pages[0].attributes["db.operation.name"] == "read_all"


@domain_event("obs.Opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@domain_event("obs.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


class Account(Aggregate):
    def __init__(self, account_id):
        super().__init__(account_id)
        self.balance = 0

    @handles(Opened)
    def _opened(self, event):
        pass

    @handles(Deposited)
    def _deposited(self, event):
        self.balance += event.amount


def open_account(repo: Repository, deposits: int) -> object:
    from uuid import uuid4

    account = Account(uuid4())
    account.raise_event(Opened("ada"))
    for _ in range(deposits):
        account.raise_event(Deposited(1))
    repo.save(account)
    return account.aggregate_id


def test_load_span_says_how_many_events_were_replayed(otel: Otel, store):
    account_id = open_account(Repository(store), deposits=4)
    Repository(store).get(account_id, Account)
    (load,) = otel.spans("load Account")
    assert load.attributes["eskit.events_replayed"] == 5
    assert load.attributes["eskit.snapshot_used"] is False
    assert load.attributes["db.system.name"] == store.db_system
    assert [p.sum for p in otel.points("db.client.operation.duration")
            if p.attributes["db.operation.name"] == "load"]


def test_load_span_says_which_snapshot_was_used(otel: Otel, store):
    from eskit.snapshots import EveryNEvents

    snapshots = InMemorySnapshotStore(store)
    repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(3))
    account_id = open_account(repo, deposits=3)  # a snapshot at version 4
    account = repo.get(account_id, Account)
    account.raise_event(Deposited(1))
    repo.save(account)
    otel.exporter.clear()
    loaded = Repository(store, snapshots=snapshots).get(account_id, Account)
    assert loaded.balance == 4
    (load,) = otel.spans("load Account")
    assert load.attributes["eskit.snapshot_used"] is True
    assert load.attributes["eskit.snapshot_version"] == 4
    assert load.attributes["eskit.events_replayed"] == 1


class Totals(Projection):
    name = "totals"

    def __init__(self):
        super().__init__()
        self.seen = []

    def handle_Placed(self, event, tx):
        self.seen.append(event.event_id)


def test_projection_batch_links_to_the_request_that_appended_its_event(otel: Otel, store):
    with otel.tracer.start_as_current_span("POST /orders") as request:
        store.append("order-1", [NewEvent("Placed", {})])
    with otel.tracer.start_as_current_span("POST /orders") as other:
        store.append("order-2", [NewEvent("Placed", {}), NewEvent("Placed", {})])
    runner = ProjectionRunner(store, Totals(), InMemoryTarget())
    runner.run_until_caught_up()
    batch = otel.spans("projection totals")[0]
    appends = otel.spans("append events")
    assert [link.context.span_id for link in batch.links] == [
        a.context.span_id for a in appends
    ]
    assert [link.context.trace_id for link in batch.links] == [
        request.get_span_context().trace_id, other.get_span_context().trace_id
    ]
    assert batch.attributes["eskit.projection"] == "totals"
    # the batch's page read is a child of the batch span
    page = otel.spans("read_all events")[0]
    assert page.parent.span_id == batch.context.span_id


class Shipping(ProcessManager):
    name = "shipping"

    def handle_Placed(self, event, tx):
        self.execute(event, "ship", Account, event.event_data["account"],
                     lambda a: a.raise_event(Deposited(1)))


def test_process_manager_step_links_to_its_trigger_and_its_append_carries_on(
    otel: Otel, store
):
    repo = Repository(store)
    account_id = open_account(repo, deposits=0)
    with otel.tracer.start_as_current_span("POST /orders") as request:
        store.append("order-1", [NewEvent("Placed", {"account": str(account_id)})])
    ProjectionRunner(store, Shipping(store), InMemoryTarget()).run_until_caught_up()
    (step,) = otel.spans("process shipping ship")
    assert [link.context.trace_id for link in step.links] == [
        request.get_span_context().trace_id
    ]
    shipped = store.read_stream(account_id)[-1]
    command_append = [s for s in otel.spans("append events")
                      if s.attributes["eskit.stream_id"] == str(account_id)][-1]
    assert command_append.parent.span_id == step.context.span_id
    assert shipped.metadata[TRACEPARENT_KEY] == traceparent_of(command_append)


def test_async_postgres_append_is_traced_and_carries_its_context(otel: Otel, postgres_dsn):
    from eskit.aio import AsyncPostgresEventStore
    from tests.conftest import new_schema_name

    async def main():
        store = await AsyncPostgresEventStore.open(postgres_dsn, schema=new_schema_name())
        try:
            with otel.tracer.start_as_current_span("request"):
                await store.append("s", [NewEvent("E", {})])
            (append,) = otel.spans("append events")
            assert append.attributes["db.system.name"] == "postgresql"
            (event,) = await store.read_stream("s")
            assert event.metadata[TRACEPARENT_KEY] == traceparent_of(append)
            assert len([e async for e in store.read_all()]) == 1
            assert otel.spans("read_all events")[0].attributes[
                "db.response.returned_rows"] == 1
        finally:
            await store.close()

    asyncio.run(main())


def test_async_sqlite_append_is_traced_once_in_the_callers_trace(otel: Otel, tmp_path):
    from eskit.aio import AsyncSQLiteEventStore

    async def main():
        store = await AsyncSQLiteEventStore.open(tmp_path / "a.db")
        try:
            with otel.tracer.start_as_current_span("request") as request:
                await store.append("s", [NewEvent("E", {})])
            (append,) = otel.spans("append events")  # the worker thread got the context
            assert append.context.trace_id == request.get_span_context().trace_id
        finally:
            await store.close()

    asyncio.run(main())


def test_importing_eskit_imports_no_opentelemetry():
    code = ("import sys, eskit, eskit.observability; "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_async_repository_load_span_says_how_many_events_were_replayed(otel: Otel):
    from eskit.aio import AsyncInMemoryEventStore, AsyncRepository

    async def main():
        store = AsyncInMemoryEventStore()
        account_id = open_account(Repository(store.sync_store), deposits=2)
        loaded = await AsyncRepository(store).get(account_id, Account)
        assert loaded.balance == 2
        (load,) = otel.spans("load Account")
        assert load.attributes["eskit.events_replayed"] == 3
        assert load.attributes["eskit.snapshot_used"] is False
        assert load.attributes["db.system.name"] == "memory"

    asyncio.run(main())


def test_failed_load_is_recorded_on_its_span(otel: Otel, store):
    from uuid import uuid4

    from eskit import AggregateNotFound

    with pytest.raises(AggregateNotFound):
        Repository(store).get(uuid4(), Account)
    (load,) = otel.spans("load Account")
    assert not load.status.is_ok


def test_append_many_is_one_span_whose_context_every_event_carries(otel: Otel, store):
    from eskit import StreamAppend

    with otel.tracer.start_as_current_span("POST /transfers") as request:
        store.append_many([
            StreamAppend("acc-1", [NewEvent("Debited", {"n": 1})]),
            StreamAppend("acc-2", [NewEvent("Credited", {"n": 1}), NewEvent("Noted", {})]),
        ])
    (append,) = otel.spans("append events")
    assert append.parent.span_id == request.get_span_context().span_id
    assert append.attributes["eskit.stream_id"] == "acc-1,acc-2"
    assert append.attributes["db.operation.batch.size"] == 3
    stored = [*store.read_stream("acc-1"), *store.read_stream("acc-2")]
    assert [e.metadata[TRACEPARENT_KEY] for e in stored] == [traceparent_of(append)] * 3
