"""``eskit trace``: a conversation across streams, as a causation tree."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from eskit import Event, NewEvent, SQLiteEventStore, caused_by, event_context
from eskit.cli import make_app
from eskit.conversation import causation_tree


def _checkout(path: Path) -> tuple[Event, Event, Event]:
    with SQLiteEventStore(path) as store:
        store.append("noise-1", [NewEvent("Unrelated")])
        with event_context(actor="user:1", correlation_id="checkout-9"):
            store.append("order-1", [NewEvent("OrderPlaced")])
        [placed] = store.read_stream("order-1")
        with caused_by(placed):
            store.append("invoice-1", [NewEvent("InvoiceIssued")])
            store.append("stock-1", [NewEvent("StockReserved")])
        [issued] = store.read_stream("invoice-1")
        with caused_by(issued):
            store.append("mail-1", [NewEvent("InvoiceMailed")])
        with event_context(correlation_id="other"):
            store.append("order-2", [NewEvent("OrderPlaced")])
        [reserved] = store.read_stream("stock-1")
    return placed, issued, reserved


def test_trace_shows_the_conversation_as_a_tree(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _checkout(path)
    result = CliRunner().invoke(make_app(), ["trace", str(path), "checkout-9", "--json"])
    assert result.exit_code == 0, result.output
    rows = [(r["depth"], r["event_type"]) for r in json.loads(result.output)]
    assert rows == [(0, "OrderPlaced"), (1, "InvoiceIssued"), (2, "InvoiceMailed"),
                    (1, "StockReserved")]
    table = CliRunner().invoke(make_app(), ["trace", str(path), "checkout-9"],
                               env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "4 events" in table.output
    assert "user:1" in table.output
    assert "Unrelated" not in table.output


def test_the_first_events_id_finds_the_conversation_it_started(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    with SQLiteEventStore(path) as store:
        store.append("order-1", [NewEvent("OrderPlaced")])
        [placed] = store.read_stream("order-1")
        with caused_by(placed):
            store.append("invoice-1", [NewEvent("InvoiceIssued")])
    result = CliRunner().invoke(make_app(), ["trace", str(path), str(placed.event_id), "--json"])
    assert [r["event_type"] for r in json.loads(result.output)] == ["OrderPlaced",
                                                                   "InvoiceIssued"]


def test_an_unknown_conversation_says_so(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _checkout(path)
    result = CliRunner().invoke(make_app(), ["trace", str(path), "nope"])
    assert result.exit_code == 0
    assert "no events of conversation 'nope'" in result.output


def test_a_ten_thousand_step_chain_is_walked_without_recursion() -> None:
    import uuid
    from datetime import UTC, datetime

    events: list[Event] = []
    cause = None
    for i in range(10_000):
        meta = {"correlation_id": "c"} | ({"causation_id": cause} if cause else {})
        event = Event(uuid.uuid4(), f"s-{i}", "Step", {}, datetime.now(UTC), 1, i + 1, meta)
        events.append(event)
        cause = str(event.event_id)
    tree = causation_tree(events)
    assert [d for d, _ in tree] == list(range(10_000))
