"""AsyncProcessManager: the transfer process with async handlers, exactly once."""

import asyncio
from decimal import Decimal
from typing import Any

import pytest

import eskit
from eskit.aio import AsyncEventStore, AsyncProcessManager, AsyncProjectionRunner
from eskit.projections import InMemoryTarget, ProjectionRunner
from eskit.projections.process_manager import command_event_id
from examples.bank.domain import BankAccount
from examples.bank.transfers import (
    _REFUSED,
    MoneyRefunded,
    MoneyTransferredIn,
    MoneyTransferredOut,
    Transfer,
    TransferRequested,
    request_transfer,
    transfer_stream,
)
from tests.projections.test_async_runner import _run

D = Decimal


class AsyncTransferProcess(AsyncProcessManager):
    """examples.bank.transfers.TransferProcess, with async handlers."""

    name = "test.async_transfer_process"

    def _ours(self, event: eskit.Event) -> bool:
        return event.metadata.get("process") == self.name

    @eskit.handles(TransferRequested)
    async def _requested(self, event: eskit.Event, tx: Any) -> None:
        r: TransferRequested = event.to_domain()
        try:
            await self.execute(event, "debit", BankAccount, r.source,
                               lambda a: a.transfer_out(r.transfer_id, r.target, r.amount))
        except _REFUSED as exc:
            reason = f"debit refused: {exc}"
            await self.execute(event, "cancel", Transfer, event.aggregate_id,
                               lambda t: t.cancel(reason))

    @eskit.handles(MoneyTransferredOut)
    async def _debited(self, event: eskit.Event, tx: Any) -> None:
        if not self._ours(event):
            return
        out: MoneyTransferredOut = event.to_domain()
        try:
            await self.execute(event, "credit", BankAccount, out.to_account,
                               lambda a: a.transfer_in(out.transfer_id, event.aggregate_id,
                                                       out.amount))
        except _REFUSED as exc:
            reason = f"credit refused: {exc}"
            await self.execute(event, "refund", BankAccount, event.aggregate_id,
                               lambda a: a.refund(out.transfer_id, reason))

    @eskit.handles(MoneyTransferredIn)
    async def _credited(self, event: eskit.Event, tx: Any) -> None:
        if self._ours(event):
            credit: MoneyTransferredIn = event.to_domain()
            await self.execute(event, "complete", Transfer, transfer_stream(credit.transfer_id),
                               lambda t: t.complete())

    @eskit.handles(MoneyRefunded)
    async def _refunded(self, event: eskit.Event, tx: Any) -> None:
        if self._ours(event):
            refund: MoneyRefunded = event.to_domain()
            await self.execute(event, "cancel", Transfer, transfer_stream(refund.transfer_id),
                               lambda t: t.cancel(refund.reason))


@pytest.fixture
def bank(backend):
    repo = eskit.Repository(backend.store)
    for number, deposit in (("P-1", "100.00"), ("P-2", "5.00"), ("P-3", "0.00")):
        account = BankAccount(f"acct-{number}")
        account.open(number, "owner", D(deposit))
        repo.save(account)
    closed = repo.get("acct-P-3", BankAccount)
    closed.close()
    repo.save(closed)
    return backend, repo


def _process(backend) -> None:
    async def body(store: AsyncEventStore) -> int:
        runner = AsyncProjectionRunner(store, AsyncTransferProcess(store), backend.target,
                                       batch_size=3)
        return await runner.run_until_caught_up()

    _run(backend, body)


def _balance(repo, account_id) -> Decimal:
    return repo.get(account_id, BankAccount).balance


def test_an_async_process_debits_credits_and_completes_a_transfer(bank) -> None:
    backend, repo = bank
    tid = request_transfer(repo, "acct-P-1", "acct-P-2", D("30.00"))
    _process(backend)
    assert (_balance(repo, "acct-P-1"), _balance(repo, "acct-P-2")) == (D("70.00"), D("35.00"))
    assert repo.get(transfer_stream(tid), Transfer).status == "completed"
    (requested,) = backend.store.read_stream(transfer_stream(tid), limit=1)
    debit = backend.store.read_stream("acct-P-1")[-1]
    assert debit.event_id == command_event_id(AsyncTransferProcess.name, requested, "debit", 0)
    assert debit.metadata["causation_id"] == str(requested.event_id)


def test_an_async_process_refunds_and_cancels_a_transfer_whose_credit_fails(bank) -> None:
    backend, repo = bank
    tid = request_transfer(repo, "acct-P-1", "acct-P-3", D("30.00"))  # P-3 is closed
    _process(backend)
    assert _balance(repo, "acct-P-1") == D("100.00")
    types = [e.event_type for e in backend.store.read_stream("acct-P-1")]
    assert types[-2:] == ["MoneyTransferredOut", "MoneyRefunded"]
    assert repo.get(transfer_stream(tid), Transfer).status == "cancelled"


def test_rerunning_an_async_process_from_a_lost_checkpoint_writes_nothing_twice(bank) -> None:
    backend, repo = bank
    request_transfer(repo, "acct-P-1", "acct-P-2", D("10.00"))
    request_transfer(repo, "acct-P-1", "acct-P-3", D("20.00"))
    _process(backend)
    before = [e.event_id for e in backend.store.read_all()]
    with backend.target.transaction() as conn:  # as if the checkpoint had never committed
        backend.target.reset(conn, AsyncTransferProcess.name)
    _process(backend)
    _process(backend)
    assert [e.event_id for e in backend.store.read_all()] == before
    assert _balance(repo, "acct-P-1") == D("90.00")


def test_the_sync_runner_refuses_an_async_process_manager_instead_of_dropping_its_work() -> None:
    store = eskit.InMemoryEventStore()
    repo = eskit.Repository(store)
    request_transfer(repo, "a", "b", D("1.00"))
    from eskit.aio import AsyncInMemoryEventStore

    process = AsyncTransferProcess(AsyncInMemoryEventStore.from_sync(store))
    runner = ProjectionRunner(store, process, InMemoryTarget(), retry=None, on_failure="stop")
    runner.retry = runner.retry.__class__(max_attempts=1)
    with pytest.raises(eskit.projections.ProjectionFailed) as failed:
        runner.run_until_caught_up()
    assert isinstance(failed.value.__cause__, TypeError)
    assert "AsyncProjectionRunner" in str(failed.value.__cause__)
    assert asyncio.iscoroutinefunction(AsyncTransferProcess._requested)
