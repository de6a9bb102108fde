"""A store worth exploring, and the explorer as a Starlette app, for tests/web's explorer tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette

from eskit import EventStore, NewEvent, Repository
from eskit.projections import InMemoryTarget, Projection, ProjectionRunner, RetryPolicy
from eskit.web.explorer import explorer_routes
from examples.bank.domain import BankAccount

WRITE_TOKEN = "s3cret-write-token"
HOSTILE_ID = "<script>alert('id')</script>"
HOSTILE_TEXT = "<script>alert('payload')</script><img src=x onerror=alert(1)>"
ACCOUNTS = 12


@dataclass(frozen=True)
class Settings:
    write_token: str | None = WRITE_TOKEN


class Invoicing(Projection):
    """Counts invoices; its handler fails while ``broken`` (an event gets parked)."""

    name = "invoicing"

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.invoices: list[str] = []

    def handle_InvoiceIssued(self, event, tx) -> None:
        if self.broken and event.event_data.get("poison"):
            raise RuntimeError("the invoice printer is out of paper")
        self.invoices.append(str(event.aggregate_id))


@dataclass
class World:
    """What ``populate`` stored, for the tests to look for."""

    store: EventStore
    order_event_id: uuid.UUID
    invoice_event_id: uuid.UUID
    poison_event_id: uuid.UUID
    projection: Invoicing
    target: InMemoryTarget
    extra: dict[str, Any] = field(default_factory=dict)


def populate(store: EventStore) -> World:
    repository = Repository(store)
    for n in range(1, ACCOUNTS + 1):
        account = BankAccount(f"account-{n:03d}")
        account.open(f"ACC-{n:03d}", f"Owner {n}", Decimal("10.00"))
        account.deposit(Decimal(n))
        if n % 3 == 0:
            account.withdraw(Decimal("5.00"))
        repository.save(account)
    store.append(HOSTILE_ID, [NewEvent("Note", {"text": HOSTILE_TEXT}, {"by": HOSTILE_TEXT})])
    order = store.append("order-1", [NewEvent("OrderPlaced", {"total": "25.00"})]).events[0]
    invoice = store.append("invoice-1", [NewEvent(
        "InvoiceIssued", {"order": "order-1"},
        {"causation_id": str(order.event_id), "correlation_id": str(order.event_id)},
    )]).events[0]
    poison = store.append("invoice-2", [NewEvent("InvoiceIssued", {"poison": True})]).events[0]
    assert store.wait_for(poison.position)  # PostgreSQL readers may trail a commit briefly
    projection, target = Invoicing(), InMemoryTarget()
    ProjectionRunner(store, projection, target, retry=RetryPolicy(max_attempts=1, backoff=0.001),
                     on_failure="park").run_until_caught_up()
    return World(store, order.event_id, invoice.event_id, poison.event_id, projection, target)


def explorer_app(world: World, settings: object = None) -> Starlette:
    return Starlette(routes=explorer_routes(
        world.store, settings or Settings(), aggregates=[BankAccount],
        projections=[world.projection], target=world.target,
    ))
