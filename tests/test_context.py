"""Who did what: the event context's actor, correlation and causation ids in metadata."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from decimal import Decimal as D
from pathlib import Path

import pytest

import eskit
from eskit import InvalidInputError, NewEvent, Repository, SQLiteEventStore
from eskit.aio import AsyncInMemoryEventStore
from eskit.context import caused_by, current_context, event_context
from examples.bank.domain import BankAccount


def test_events_appended_in_a_context_carry_its_fields() -> None:
    store = eskit.InMemoryEventStore()
    request = uuid.uuid4()
    with event_context(actor="user:42", correlation_id=request):
        store.append("s-1", [NewEvent("A"), NewEvent("B", metadata={"actor": "admin"})])
    outside = store.append("s-1", [NewEvent("C")])
    a, b, c = store.read_stream("s-1")
    assert a.metadata == {"actor": "user:42", "correlation_id": str(request)}
    assert b.metadata == {"actor": "admin", "correlation_id": str(request)}  # explicit wins
    assert c.metadata == {}
    assert outside.position is not None


def test_contexts_nest_and_none_clears_a_field() -> None:
    with event_context(actor="a", correlation_id="c-1"):
        with event_context(causation_id="cmd-1"):
            assert current_context() == eskit.context.EventContext("a", "c-1", "cmd-1")
            with event_context(actor=None):
                assert current_context() == eskit.context.EventContext(None, "c-1", "cmd-1")
        assert current_context() == eskit.context.EventContext("a", "c-1", None)
    assert current_context() is None


@pytest.mark.parametrize("bad", ["", "\ud800", "x" * 5000, 7, b"id", "a\x00b"])
def test_a_bad_value_is_refused_when_the_context_is_entered(bad: object) -> None:
    with pytest.raises(InvalidInputError), event_context(actor=bad):  # type: ignore[arg-type]
        pass


def test_the_repository_saves_aggregate_events_with_the_context(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "bank.db")
    repo = Repository(store)
    with event_context(actor="teller:7", correlation_id="req-1"):
        account = BankAccount("acct-1")
        account.open("NL01", "Ann", D("10"))
        account.deposit(D("5"))
        repo.save(account, metadata={"channel": "branch"})
    for event in store.read_stream("acct-1"):
        assert event.metadata == {"channel": "branch", "actor": "teller:7",
                                  "correlation_id": "req-1"}
    store.close()


def test_the_context_stays_in_its_thread_unless_copied() -> None:
    store = eskit.InMemoryEventStore()
    with event_context(actor="main"):
        plain = threading.Thread(target=lambda: store.append("t", [NewEvent("Plain")]))
        plain.start()
        plain.join()
        copied = contextvars.copy_context()
        worker = threading.Thread(
            target=lambda: copied.run(store.append, "t", [NewEvent("Copied")]))
        worker.start()
        worker.join()
    assert [e.metadata for e in store.read_stream("t")] == [{}, {"actor": "main"}]


def test_each_asyncio_task_keeps_its_own_context() -> None:
    async def scenario() -> list[dict[str, object]]:
        store = AsyncInMemoryEventStore()

        async def request(n: int) -> None:
            with event_context(actor=f"user:{n}", correlation_id=f"req-{n}"):
                await asyncio.sleep(0.001 * (5 - n))  # interleave the tasks
                await store.append(f"r-{n}", [NewEvent("Handled")])

        await asyncio.gather(*(request(n) for n in range(5)))
        return [(await store.read_stream(f"r-{n}"))[0].metadata for n in range(5)]

    assert asyncio.run(scenario()) == [
        {"actor": f"user:{n}", "correlation_id": f"req-{n}"} for n in range(5)]


def test_caused_by_an_event_carries_the_conversation_on() -> None:
    store = eskit.InMemoryEventStore()
    with event_context(actor="user:1"):
        store.append("order-1", [NewEvent("Placed")])
    [placed] = store.read_stream("order-1")
    with caused_by(placed):
        store.append("invoice-1", [NewEvent("Issued")])
    [issued] = store.read_stream("invoice-1")
    # The first event started the conversation: its id is the correlation id.
    assert issued.metadata == {"actor": "user:1", "correlation_id": str(placed.event_id),
                               "causation_id": str(placed.event_id)}
    with caused_by(issued):
        store.append("mail-1", [NewEvent("Sent")])
    [sent] = store.read_stream("mail-1")
    assert sent.metadata == {"actor": "user:1", "correlation_id": str(placed.event_id),
                             "causation_id": str(issued.event_id)}


def test_events_a_projection_handler_writes_are_caused_by_the_handled_event() -> None:
    from eskit.projections import InMemoryTarget, Projection, ProjectionRunner

    store = eskit.InMemoryEventStore()

    class Invoicing(Projection):
        name = "test.invoicing"

        def handle_OrderPlaced(self, event: eskit.Event, tx: object) -> None:
            store.append(f"invoice-{event.aggregate_id}", [NewEvent("InvoiceIssued")])

    with event_context(actor="shop:web", correlation_id="checkout-9"):
        store.append("order-1", [NewEvent("OrderPlaced")])
    assert ProjectionRunner(store, Invoicing(), InMemoryTarget()).run_until_caught_up() == 1
    [placed] = store.read_stream("order-1")
    [issued] = store.read_stream("invoice-order-1")
    assert issued.metadata == {"actor": "shop:web", "correlation_id": "checkout-9",
                               "causation_id": str(placed.event_id)}
