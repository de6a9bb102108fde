"""The bank example (examples/bank): its rules, its exact money, its replay, its transfers."""

from __future__ import annotations

import io
from decimal import Decimal
from uuid import uuid4

import pytest
from rich.console import Console

import eskit
from eskit.testing import given, given_projection
from examples.bank import (
    AccountOpened,
    BankAccount,
    BankAccountError,
    InsufficientFundsError,
    MoneyDeposited,
    TransferIncompleteError,
    transfer,
)
from examples.bank import demo as bank_demo
from examples.bank.domain import (
    AccountClosed,
    MoneyTransferredIn,
    MoneyWithdrawn,
    as_money,
)
from examples.bank.read_models import AccountBalances

D = Decimal


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        s = eskit.InMemoryEventStore()
    else:
        s = eskit.SQLiteEventStore(tmp_path / "bank.db")
    yield s
    s.close()


@pytest.fixture
def repo(store):
    return eskit.Repository(store)


def open_account(repo, number="ACC-1", owner="Ann", initial="100.00", account_id=None):
    account = BankAccount(account_id or uuid4())
    account.open(number, owner, D(initial))
    repo.save(account)
    return account.aggregate_id


def state(account):
    return (account.account_number, account.owner, account.balance, account.status,
            account.version, dict(account.transfers))


# --------------------------------------------------------------------------- the rules


def test_an_opened_account_holds_its_owner_number_and_exact_initial_deposit():
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("100.5"))
    assert (account.account_number, account.owner, account.status) == ("ACC-1", "Ann", "open")
    assert account.balance == D("100.50")
    assert str(account.balance) == "100.50"
    assert [e.event_type for e in account.get_uncommitted_events()] == ["AccountOpened"]


def test_an_account_may_be_opened_with_nothing_in_it():
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("0"))
    assert account.balance == 0
    assert str(account.balance) == "0.00"


def test_valid_deposits_and_withdrawals_raise_nothing_and_keep_cents_exact():
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("0.00"))
    for _ in range(10):
        account.deposit(D("0.10"))
    account.deposit(D("0.20"))
    account.withdraw(D("0.30"))
    assert str(account.balance) == "0.90"  # ten times 0.10, plus 0.20, minus 0.30: exactly
    assert sum([0.1] * 10) + 0.2 - 0.3 != 0.9  # what floats would have made of it
    assert isinstance(account.balance, Decimal)
    assert account.version == 13


def test_withdrawing_the_whole_balance_is_allowed():
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("25.00"))
    account.withdraw(D("25.00"))
    assert account.balance == 0


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (0.1, "not a float"),
        (10, "must be a Decimal"),
        ("10.00", "must be a Decimal"),
        (D("0"), "positive"),
        (D("-5.00"), "positive"),
        (D("0.001"), "whole cents"),
        (D("NaN"), "finite"),
        (D("Infinity"), "finite"),
        (D("1E+40"), "too large"),
    ],
)
def test_deposits_of_anything_but_a_positive_decimal_in_cents_are_refused(amount, reason):
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("10.00"))
    with pytest.raises(BankAccountError, match=reason):
        account.deposit(amount)
    with pytest.raises(BankAccountError, match=reason):
        account.withdraw(amount)
    assert account.balance == D("10.00")
    assert account.version == 1


def test_the_domain_error_is_a_value_error():
    assert issubclass(BankAccountError, ValueError)
    assert issubclass(InsufficientFundsError, BankAccountError)


def test_withdrawing_more_than_the_balance_is_refused_and_records_nothing():
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("10.00"))
    with pytest.raises(InsufficientFundsError, match="insufficient funds"):
        account.withdraw(D("10.01"))
    assert account.balance == D("10.00")
    assert len(account.get_uncommitted_events()) == 1


def test_an_account_cannot_be_opened_twice_even_after_a_reload(repo):
    account_id = open_account(repo)
    account = repo.get(account_id, BankAccount)
    with pytest.raises(BankAccountError, match="already exists"):
        account.open("ACC-1", "Ann", D("1.00"))


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_an_account_needs_a_number_and_an_owner(bad):
    with pytest.raises(BankAccountError, match="account number"):
        BankAccount(uuid4()).open(bad, "Ann", D("1.00"))
    with pytest.raises(BankAccountError, match="owner"):
        BankAccount(uuid4()).open("ACC-1", bad, D("1.00"))


def test_commands_on_an_account_that_was_never_opened_are_refused():
    account = BankAccount(uuid4())
    for command in (lambda: account.deposit(D("1.00")), lambda: account.withdraw(D("1.00")),
                    account.close):
        with pytest.raises(BankAccountError, match="not been opened"):
            command()
    assert account.version == 0


def test_an_account_holding_money_cannot_be_closed():
    account = BankAccount(uuid4())
    account.open("ACC-1", "Ann", D("0.01"))
    with pytest.raises(BankAccountError, match=r"still holds 0\.01"):
        account.close()
    assert account.status == "open"


def test_a_closed_account_refuses_every_command(repo):
    account_id = open_account(repo, initial=D("0.00"))
    other_id = open_account(repo, number="ACC-2", initial=D("5.00"))
    account = repo.get(account_id, BankAccount)
    account.close()
    repo.save(account)
    account = repo.get(account_id, BankAccount)
    assert account.status == "closed"
    for command in (lambda: account.deposit(D("1.00")), lambda: account.withdraw(D("1.00")),
                    account.close, lambda: account.open("ACC-1", "Ann", D("0"))):
        with pytest.raises(BankAccountError):
            command()
    with pytest.raises(BankAccountError, match="closed"):
        transfer(repo, other_id, account_id, D("1.00"))
    assert repo.get(other_id, BankAccount).balance == D("5.00")
    assert account.version == 2


# --------------------------------------------------------------------------- given / when / then

OPENED = AccountOpened(account_number="ACC-1", owner="Ann", initial_deposit=D("10.00"))


def test_given_an_open_account_a_deposit_records_exactly_that_amount():
    given(BankAccount, [OPENED]).when(lambda a: a.deposit(D("2.50"))).then(
        [MoneyDeposited(amount=D("2.50"))]
    ).then_state(lambda a: a.balance == D("12.50"))


def test_given_a_balance_a_withdrawal_beyond_it_is_refused():
    given(BankAccount, [OPENED, MoneyWithdrawn(amount=D("4.00"))]).when(
        lambda a: a.withdraw(D("6.01"))
    ).then_raises(InsufficientFundsError, match="insufficient funds")


def test_given_a_closed_account_a_deposit_is_refused():
    emptied = [OPENED, MoneyWithdrawn(amount=D("10.00")), AccountClosed()]
    given(BankAccount, emptied).when(lambda a: a.deposit(D("1.00"))).then_raises(
        BankAccountError, match="closed"
    )


def test_given_a_credited_transfer_crediting_it_again_records_nothing():
    transfer_id, source = uuid4(), uuid4()
    credited = MoneyTransferredIn(transfer_id=transfer_id, from_account=source, amount=D("3.00"))
    given(BankAccount, [OPENED, credited]).when(
        lambda a: a.transfer_in(transfer_id, source, D("3.00"))
    ).then([])


def test_given_account_events_the_balances_read_model_holds_each_balance_in_cents():
    events = [
        ("acc-1", OPENED), ("acc-2", AccountOpened("ACC-2", "Bob", D("0.00"))),
        ("acc-1", MoneyWithdrawn(amount=D("0.01"))), ("acc-2", MoneyDeposited(amount=D("7.00"))),
    ]
    with given_projection(AccountBalances, events, target="sqlite") as view:
        rows = view.query("SELECT account_number, owner, balance_cents, status "
                          "FROM bank_account_balances ORDER BY account_number")
    assert rows == [("ACC-1", "Ann", 999, "open"), ("ACC-2", "Bob", 700, "open")]


def test_given_account_events_the_balances_read_model_is_the_same_on_postgres(postgres_dsn):
    from tests.conftest import new_schema_name

    target = eskit.PostgresTarget(postgres_dsn, schema=new_schema_name())
    events = [("acc-1", OPENED), ("acc-1", MoneyDeposited(amount=D("0.05")))]
    with given_projection(AccountBalances, events, target=target) as view:
        rows = view.query("SELECT balance_cents, version FROM bank_account_balances "
                          "WHERE account_number = %s", ["ACC-1"])
    assert rows == [(1005, 2)]
    target.close()  # a target passed in is the caller's to close


# --------------------------------------------------------------------------- replay


ANN, BOB, TRANSFER = uuid4(), uuid4(), uuid4()


def run_history(repo):
    a = open_account(repo, "ACC-1", "Ann", D("100.00"), ANN)
    b = open_account(repo, "ACC-2", "Bob", D("0.00"), BOB)
    account = repo.get(a, BankAccount)
    account.deposit(D("0.10"))
    account.deposit(D("0.20"))
    account.withdraw(D("33.33"))
    repo.save(account)
    transfer(repo, a, b, D("50.00"), transfer_id=TRANSFER)
    account = repo.get(b, BankAccount)
    account.withdraw(D("50.00"))
    account.close()
    repo.save(account)
    return a, b


def test_replaying_from_sqlite_and_from_memory_gives_the_same_state(tmp_path):
    states = []
    for store in (eskit.InMemoryEventStore(), eskit.SQLiteEventStore(tmp_path / "bank.db")):
        repo = eskit.Repository(store)
        a, b = run_history(repo)
        states.append([state(repo.get(a, BankAccount)), state(repo.get(b, BankAccount))])
        store.close()
    assert states[0] == states[1]
    ann, bob = states[0]
    assert ann[:5] == ("ACC-1", "Ann", D("16.97"), "open", 5)
    assert bob[:5] == ("ACC-2", "Bob", D("0.00"), "closed", 4)
    assert set(ann[5]) == set(bob[5]) == {TRANSFER}


def test_a_balance_rebuilt_from_a_reopened_sqlite_file_is_the_same_decimal(tmp_path):
    path = tmp_path / "bank.db"
    with eskit.SQLiteEventStore(path) as store:
        repo = eskit.Repository(store)
        a, _ = run_history(repo)
        before = state(repo.get(a, BankAccount))
    with eskit.SQLiteEventStore(path, create=False) as store:
        after = state(eskit.Repository(store).get(a, BankAccount))
        amounts = [e.event_data.get("amount") for e in store.read_stream(a)]
    assert after == before
    assert str(after[2]) == "16.97"
    assert all(isinstance(x, Decimal) for x in amounts if x is not None)


def test_events_are_stored_under_their_declared_names_and_read_back_as_typed_events(repo):
    account_id = open_account(repo, initial=D("1.00"))
    account = repo.get(account_id, BankAccount)
    account.deposit(D("2.00"))
    repo.save(account)
    stored = repo.event_store.read_stream(account_id)
    assert [e.event_type for e in stored] == ["AccountOpened", "MoneyDeposited"]
    assert stored[0].to_domain() == AccountOpened("ACC-1", "Ann", D("1.00"))
    assert stored[1].to_domain() == MoneyDeposited(D("2.00"))


# --------------------------------------------------------------------------- transfers


def test_a_transfer_moves_money_and_keeps_the_total(repo):
    a = open_account(repo, "ACC-1", "Ann", D("100.00"))
    b = open_account(repo, "ACC-2", "Bob", D("5.00"))
    transfer_id = transfer(repo, a, b, D("42.42"))
    ann, bob = repo.get(a, BankAccount), repo.get(b, BankAccount)
    assert (ann.balance, bob.balance) == (D("57.58"), D("47.42"))
    assert ann.balance + bob.balance == D("105.00")
    out = repo.event_store.read_stream(a)[-1]
    arrived = repo.event_store.read_stream(b)[-1]
    assert (out.event_type, arrived.event_type) == ("MoneyTransferredOut", "MoneyTransferredIn")
    assert out.event_data == {"transfer_id": transfer_id, "to_account": b, "amount": D("42.42")}
    assert arrived.event_data == {
        "transfer_id": transfer_id, "from_account": a, "amount": D("42.42"),
    }


def test_a_transfer_that_would_overdraw_writes_nothing_to_either_account(repo):
    a = open_account(repo, "ACC-1", "Ann", D("10.00"))
    b = open_account(repo, "ACC-2", "Bob", D("0.00"))
    with pytest.raises(InsufficientFundsError):
        transfer(repo, a, b, D("10.01"))
    assert repo.event_store.head_version(a) == 1
    assert repo.event_store.head_version(b) == 1


def test_a_transfer_to_an_unknown_account_writes_nothing(repo):
    a = open_account(repo)
    with pytest.raises(eskit.AggregateNotFound):
        transfer(repo, a, uuid4(), D("1.00"))
    assert repo.get(a, BankAccount).balance == D("100.00")


def test_a_transfer_to_the_same_account_is_refused(repo):
    a = open_account(repo)
    with pytest.raises(BankAccountError, match="itself"):
        transfer(repo, a, a, D("1.00"))
    with pytest.raises(BankAccountError, match="itself"):
        transfer(repo, a, str(a), D("1.00"))


def test_retrying_a_transfer_with_the_same_id_moves_the_money_once(repo):
    a = open_account(repo, "ACC-1", "Ann", D("100.00"))
    b = open_account(repo, "ACC-2", "Bob", D("0.00"))
    transfer_id = uuid4()
    assert transfer(repo, a, b, D("30.00"), transfer_id=transfer_id) == transfer_id
    transfer(repo, a, b, D("30.00"), transfer_id=transfer_id)
    assert repo.get(a, BankAccount).balance == D("70.00")
    assert repo.get(b, BankAccount).balance == D("30.00")
    assert repo.event_store.head_version(a) == 2


def test_a_transfer_id_reused_for_a_different_transfer_is_refused(repo):
    a = open_account(repo, "ACC-1", "Ann", D("100.00"))
    b = open_account(repo, "ACC-2", "Bob", D("0.00"))
    transfer_id = transfer(repo, a, b, D("30.00"))
    with pytest.raises(BankAccountError, match="different transfer"):
        transfer(repo, a, b, D("31.00"), transfer_id=transfer_id)
    assert repo.get(a, BankAccount).balance == D("70.00")


def test_a_transfer_stopped_after_the_debit_is_completed_by_a_retry_with_its_id(repo):
    a = open_account(repo, "ACC-1", "Ann", D("100.00"))
    b = open_account(repo, "ACC-2", "Bob", D("0.00"))
    transfer_id = uuid4()
    source = repo.get(a, BankAccount)  # only the first save happens: money in flight
    source.transfer_out(transfer_id, b, D("60.00"))
    repo.save(source)
    assert repo.get(b, BankAccount).balance == 0

    transfer(repo, a, b, D("60.00"), transfer_id=transfer_id)
    assert repo.get(a, BankAccount).balance == D("40.00")
    assert repo.get(b, BankAccount).balance == D("60.00")


class MeddlingRepository(eskit.Repository):
    """Runs ``meddle`` once, just before the first save of ``target``."""

    def __init__(self, store, target, meddle):
        super().__init__(store)
        self.target, self.meddle = target, meddle

    def save(self, aggregate, *, metadata=None):
        if aggregate.aggregate_id == self.target and self.meddle:
            meddle, self.meddle = self.meddle, None
            meddle(eskit.Repository(self.event_store))
        return super().save(aggregate, metadata=metadata)


def test_a_transfer_whose_target_changed_between_the_saves_credits_it_after_a_reload(store):
    setup = eskit.Repository(store)
    a = open_account(setup, "ACC-1", "Ann", D("100.00"))
    b = open_account(setup, "ACC-2", "Bob", D("1.00"))

    def deposit_to_b(other):
        account = other.get(b, BankAccount)
        account.deposit(D("9.00"))
        other.save(account)

    repo = MeddlingRepository(store, b, deposit_to_b)
    transfer(repo, a, b, D("20.00"))
    assert repo.get(a, BankAccount).balance == D("80.00")
    assert repo.get(b, BankAccount).balance == D("30.00")  # 1 + 9 + 20: nothing lost


def test_a_transfer_whose_target_closed_between_the_saves_reports_the_money_in_flight(store):
    setup = eskit.Repository(store)
    a = open_account(setup, "ACC-1", "Ann", D("100.00"))
    b = open_account(setup, "ACC-2", "Bob", D("0.00"))

    def close_b(other):
        account = other.get(b, BankAccount)
        account.close()
        other.save(account)

    repo = MeddlingRepository(store, b, close_b)
    with pytest.raises(TransferIncompleteError) as caught:
        transfer(repo, a, b, D("20.00"))
    assert caught.value.amount == D("20.00")
    assert (caught.value.source_id, caught.value.target_id) == (a, b)
    assert repo.get(a, BankAccount).balance == D("80.00")  # debited: the money is in flight
    assert repo.get(b, BankAccount).status == "closed"


def test_as_money_returns_whole_cents_and_never_negative_zero():
    assert str(as_money(D("5"))) == "5.00"
    assert str(as_money(D("1.500"))) == "1.50"
    assert str(as_money(D("-0"), allow_zero=True)) == "0.00"


# --------------------------------------------------------------------------- the demo


def test_the_demo_rebuilds_the_balances_it_computed(tmp_path):
    out = io.StringIO()
    balances = bank_demo.run(tmp_path / "demo.db", Console(file=out, width=120))
    assert balances == {"ACC-001": D("224.25"), "ACC-002": D("0.00"), "ACC-003": D("145.50")}
    assert "ConcurrencyError" in out.getvalue()


def test_the_demo_replaces_its_own_earlier_file_but_no_other(tmp_path):
    path = tmp_path / "demo.db"
    quiet = Console(file=io.StringIO())
    bank_demo.run(path, quiet)
    bank_demo.run(path, quiet)
    with eskit.SQLiteEventStore(path, create=False) as store:
        assert store.head_position() == 12
    other = tmp_path / "mine.db"
    with eskit.SQLiteEventStore(other) as store:
        store.append("orders", [eskit.NewEvent("OrderPlaced")])
    with pytest.raises(FileExistsError, match="not written by eskit demo"):
        bank_demo.run(other, quiet)
    with eskit.SQLiteEventStore(other, create=False) as store:
        assert [s.stream_id for s in store.list_streams()] == ["orders"]
