"""The bank example's read models agree with the aggregates, on SQLite and PostgreSQL."""

import io
from decimal import Decimal

from rich.console import Console

import eskit
from eskit.projections import ProjectionRunner, Tx
from examples.bank import demo as bank_demo
from examples.bank.domain import BankAccount, transfer
from examples.bank.read_models import AccountBalances, DailySummary, balances, daily_summary


def test_bank_read_models_match_the_aggregates_and_count_each_transfer_once(backend) -> None:
    repo = eskit.Repository(backend.store)
    ids = []
    for number, owner in (("N-1", "Ann"), ("N-2", "Ben")):
        account = BankAccount(f"acct-{number}")
        account.open(number, owner, Decimal("10.00"))
        account.deposit(Decimal("5.55"))
        repo.save(account)
        ids.append(account.aggregate_id)
    transfer(repo, ids[0], ids[1], Decimal("3.00"))
    for projection in (AccountBalances(), DailySummary()):
        ProjectionRunner(backend.store, projection, backend.target).run_until_caught_up()
    with backend.target.transaction() as conn:
        tx = Tx(backend.target.dialect, conn)
        got = {row.account_number: row.balance for row in balances(tx)}
        summary = {(row.kind): (row.count, row.total) for row in daily_summary(tx)}
    assert got == {
        repo.get(i, BankAccount).account_number: repo.get(i, BankAccount).balance for i in ids
    }
    assert got == {"N-1": Decimal("12.55"), "N-2": Decimal("18.55")}
    assert summary == {
        "opening deposit": (2, Decimal("20.00")),
        "deposit": (2, Decimal("11.10")),
        "transfer": (1, Decimal("3.00")),
    }


def test_the_demo_prints_the_read_models_queried_with_plain_sql(tmp_path) -> None:
    out = io.StringIO()
    bank_demo.run(tmp_path / "demo.db", Console(file=out, width=120))
    text = out.getvalue()
    assert "bank_account_balances" in text
    assert "bank_daily_summary" in text
    assert "224.25" in text.split("Read models")[1]
