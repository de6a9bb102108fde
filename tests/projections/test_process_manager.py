"""The transfer process manager: completes, compensates, and never writes twice."""

from decimal import Decimal

import pytest

import eskit
import eskit.projections.process_manager
from eskit.projections import ProjectionRunner
from eskit.projections.process_manager import command_event_id
from examples.bank.domain import BankAccount
from examples.bank.transfers import Transfer, TransferProcess, request_transfer, transfer_stream

D = Decimal


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


def _run(backend) -> None:
    ProjectionRunner(backend.store, TransferProcess(backend.store), backend.target,
                     batch_size=3).run_until_caught_up()


def _balance(repo, account_id) -> Decimal:
    return repo.get(account_id, BankAccount).balance


def test_a_requested_transfer_is_debited_credited_and_completed(bank) -> None:
    backend, repo = bank
    tid = request_transfer(repo, "acct-P-1", "acct-P-2", D("30.00"))
    _run(backend)
    assert (_balance(repo, "acct-P-1"), _balance(repo, "acct-P-2")) == (D("70.00"), D("35.00"))
    assert repo.get(transfer_stream(tid), Transfer).status == "completed"


def test_a_transfer_whose_credit_fails_is_refunded_and_cancelled(bank) -> None:
    backend, repo = bank
    tid = request_transfer(repo, "acct-P-1", "acct-P-3", D("30.00"))  # P-3 is closed
    _run(backend)
    assert _balance(repo, "acct-P-1") == D("100.00")
    types = [e.event_type for e in backend.store.read_stream("acct-P-1")]
    assert types[-2:] == ["MoneyTransferredOut", "MoneyRefunded"]
    transfer = repo.get(transfer_stream(tid), Transfer)
    assert transfer.status == "cancelled"
    assert "closed" in transfer.reason


def test_a_transfer_the_source_cannot_pay_is_cancelled_without_moving_money(bank) -> None:
    backend, repo = bank
    tid = request_transfer(repo, "acct-P-2", "acct-P-1", D("500.00"))
    _run(backend)
    assert (_balance(repo, "acct-P-1"), _balance(repo, "acct-P-2")) == (D("100.00"), D("5.00"))
    assert "insufficient funds" in repo.get(transfer_stream(tid), Transfer).reason


def test_rerunning_the_process_from_a_lost_checkpoint_writes_nothing_twice(bank) -> None:
    backend, repo = bank
    request_transfer(repo, "acct-P-1", "acct-P-2", D("10.00"))
    request_transfer(repo, "acct-P-1", "acct-P-3", D("20.00"))
    _run(backend)
    before = [e.event_id for e in backend.store.read_all()]
    with backend.target.transaction() as conn:  # as if the checkpoint had never committed
        backend.target.reset(conn, TransferProcess.name)
    _run(backend)
    _run(backend)
    assert [e.event_id for e in backend.store.read_all()] == before
    assert _balance(repo, "acct-P-1") == D("90.00")


def test_the_events_a_step_causes_carry_ids_derived_from_the_trigger(bank) -> None:
    backend, repo = bank
    tid = request_transfer(repo, "acct-P-1", "acct-P-2", D("1.00"))
    _run(backend)
    (requested,) = backend.store.read_stream(transfer_stream(tid), limit=1)
    debit = backend.store.read_stream("acct-P-1")[-1]
    assert debit.event_id == command_event_id(TransferProcess.name, requested, "debit", 0)
    assert debit.metadata["causation_id"] == str(requested.event_id)


class WelcomeBonus(eskit.projections.process_manager.ProcessManager):
    """A non-idempotent command (a deposit): only the derived event ids keep it once."""

    name = "test.welcome_bonus"

    def handle_AccountOpened(self, event, tx) -> None:
        self.execute(event, "bonus", BankAccount, event.aggregate_id,
                     lambda a: a.deposit(D("1.00")) if a.is_open else None)


def test_a_non_idempotent_command_rerun_after_a_lost_checkpoint_is_stored_once(bank) -> None:
    backend, repo = bank
    runner = ProjectionRunner(backend.store, WelcomeBonus(backend.store), backend.target)
    runner.run_until_caught_up()
    assert _balance(repo, "acct-P-1") == D("101.00")
    account = repo.get("acct-P-1", BankAccount)
    account.deposit(D("2.00"))  # the stream moves on: a rerun's append lands elsewhere
    repo.save(account)
    with backend.target.transaction() as conn:
        backend.target.reset(conn, WelcomeBonus.name)
    again = ProjectionRunner(backend.store, WelcomeBonus(backend.store), backend.target)
    again.run_until_caught_up()
    assert _balance(repo, "acct-P-1") == D("103.00")
    assert _balance(repo, "acct-P-2") == D("6.00")
