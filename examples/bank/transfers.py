"""Transfers run by a process manager: debit, credit, and a refund when the credit fails.

:func:`transfer` in ``domain.py`` moves money with two saves made by the caller; if
the credit fails, the money is left in flight and the caller must act. Here a
transfer is requested as an event on its own stream (``transfer-<id>``), and
:class:`TransferProcess` carries it through, one command per step, reacting to
what each step recorded:

1. ``TransferRequested``  → debit the source (``MoneyTransferredOut``), or, if the
   source refuses (unknown, closed, insufficient funds), cancel the transfer;
2. ``MoneyTransferredOut`` → credit the target (``MoneyTransferredIn``), or, if the
   target refuses (unknown or closed), **compensate**: refund the source
   (``MoneyRefunded``);
3. ``MoneyTransferredIn`` → mark the transfer completed;
   ``MoneyRefunded`` → mark it cancelled, with the reason.

Each step's events get ids derived from the event that triggered it, so running
the process again over the same events (after a crash, or from a lost
checkpoint) writes nothing twice. Money is never created or lost: at every
moment it is in an account, or in flight between a debit and its credit or refund.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import eskit
from eskit.projections.process_manager import ProcessManager
from examples.bank.domain import (
    BankAccount,
    BankAccountError,
    MoneyRefunded,
    MoneyTransferredIn,
    MoneyTransferredOut,
    as_money,
)

__all__ = [
    "Transfer",
    "TransferCancelled",
    "TransferCompleted",
    "TransferProcess",
    "TransferRequested",
    "request_transfer",
    "transfer_stream",
]


@eskit.domain_event("TransferRequested")
@dataclass(frozen=True)
class TransferRequested:
    transfer_id: UUID
    source: eskit.StreamId
    target: eskit.StreamId
    amount: Decimal


@eskit.domain_event("TransferCompleted")
@dataclass(frozen=True)
class TransferCompleted:
    pass


@eskit.domain_event("TransferCancelled")
@dataclass(frozen=True)
class TransferCancelled:
    reason: str


def transfer_stream(transfer_id: UUID) -> str:
    return f"transfer-{transfer_id}"


class Transfer(eskit.Aggregate):
    """The process's own state: one stream per transfer."""

    def __init__(self, aggregate_id: eskit.StreamId) -> None:
        super().__init__(aggregate_id)
        self.status = "new"
        self.reason = ""
        self.amount = Decimal("0.00")

    def request(self, transfer_id: UUID, source: Any, target: Any, amount: Decimal) -> None:
        if self.version:
            raise BankAccountError(f"transfer {transfer_id} was requested already")
        if str(source) == str(target):
            raise BankAccountError("cannot transfer money from an account to itself")
        self.raise_event(TransferRequested(transfer_id, source, target, as_money(amount)))

    def complete(self) -> None:
        if self.status == "requested":
            self.raise_event(TransferCompleted())

    def cancel(self, reason: str) -> None:
        if self.status == "requested":
            self.raise_event(TransferCancelled(reason))

    @eskit.handles(TransferRequested)
    def _requested(self, event: TransferRequested) -> None:
        self.status, self.amount = "requested", event.amount

    @eskit.handles(TransferCompleted)
    def _completed(self, event: TransferCompleted) -> None:
        self.status = "completed"

    @eskit.handles(TransferCancelled)
    def _cancelled(self, event: TransferCancelled) -> None:
        self.status, self.reason = "cancelled", event.reason


def request_transfer(
    repository: eskit.Repository, source: eskit.StreamId, target: eskit.StreamId,
    amount: Decimal, *, transfer_id: UUID | None = None,
) -> UUID:
    """Record a transfer request; :class:`TransferProcess` carries it out."""
    transfer_id = transfer_id or uuid4()
    transfer = Transfer(transfer_stream(transfer_id))
    transfer.request(transfer_id, source, target, amount)
    repository.save(transfer)
    return transfer_id


_REFUSED = (BankAccountError, eskit.AggregateNotFound)


class TransferProcess(ProcessManager):
    """Carries requested transfers through debit, credit (or refund) and completion."""

    name = "bank.transfer_process"

    def _ours(self, event: eskit.Event) -> bool:
        # Transfers made directly with domain.transfer() are not this process's business.
        return event.metadata.get("process") == self.name

    @eskit.handles(TransferRequested)
    def _requested(self, event: eskit.Event, tx: Any) -> None:
        r: TransferRequested = event.to_domain()
        try:
            self.execute(event, "debit", BankAccount, r.source,
                         lambda a: a.transfer_out(r.transfer_id, r.target, r.amount))
        except _REFUSED as exc:
            reason = f"debit refused: {exc}"
            self.execute(event, "cancel", Transfer, event.aggregate_id,
                         lambda t: t.cancel(reason))

    @eskit.handles(MoneyTransferredOut)
    def _debited(self, event: eskit.Event, tx: Any) -> None:
        if not self._ours(event):
            return
        out: MoneyTransferredOut = event.to_domain()
        try:
            self.execute(event, "credit", BankAccount, out.to_account,
                         lambda a: a.transfer_in(out.transfer_id, event.aggregate_id, out.amount))
        except _REFUSED as exc:  # compensate: the money goes back where it came from
            reason = f"credit refused: {exc}"
            self.execute(event, "refund", BankAccount, event.aggregate_id,
                         lambda a: a.refund(out.transfer_id, reason))

    @eskit.handles(MoneyTransferredIn)
    def _credited(self, event: eskit.Event, tx: Any) -> None:
        if self._ours(event):
            credit: MoneyTransferredIn = event.to_domain()
            self.execute(event, "complete", Transfer, transfer_stream(credit.transfer_id),
                         lambda t: t.complete())

    @eskit.handles(MoneyRefunded)
    def _refunded(self, event: eskit.Event, tx: Any) -> None:
        if self._ours(event):
            refund: MoneyRefunded = event.to_domain()
            self.execute(event, "cancel", Transfer, transfer_stream(refund.transfer_id),
                         lambda t: t.cancel(refund.reason))
