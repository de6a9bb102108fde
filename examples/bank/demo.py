"""What ``eskit demo`` runs: the bank example, end to end, on a SQLite file.

Read it top to bottom; each step prints what it does. ``run(db_path, console)``
writes a fresh event store to ``db_path`` (replacing a file that an earlier
demo wrote, refusing to touch any other file) and returns the balances it
rebuilt from the stored events, by account number.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

import eskit
from eskit.projections import ProjectionRunner, SQLiteTarget

from .domain import BankAccount, BankAccountError, transfer

__all__ = ["ACCOUNTS", "DEMO_APP", "account_id", "run"]

DEMO_APP = "eskit demo"
"""Stored in the metadata of every demo event; marks a file as safe to overwrite."""

ACCOUNTS = (
    ("ACC-001", "Alice", Decimal("100.00")),
    ("ACC-002", "Bob", Decimal("50.00")),
    ("ACC-003", "Carol", Decimal("20.00")),
)
"""The demo's accounts: number, owner, initial deposit."""

# Fixed, so the demo's stream ids are the same on every run (and in the docs).
_NAMESPACE = UUID("5b0e3c1a-8d6f-4e2b-9a7c-0d1e2f3a4b5c")


def account_id(account_number: str) -> UUID:
    """The stream id the demo uses for an account number."""
    return uuid5(_NAMESPACE, account_number)


ALICE, BOB, CAROL = (account_id(number) for number, _, _ in ACCOUNTS)
_META: dict[str, Any] = {"app": DEMO_APP}


def run(db_path: str | os.PathLike[str], console: Console) -> dict[str, Decimal]:
    """Run the demo against a new SQLite event store at ``db_path``."""
    path = Path(db_path)
    _remove_previous_demo(path)
    with eskit.SQLiteEventStore(path) as store:
        console.print(Panel.fit(
            "[bold]eskit demo[/]: a bank account, event-sourced\n"
            "Every change is stored as an immutable event; an account's balance is never\n"
            "stored, it is rebuilt by replaying the account's events.\n"
            f"Event store: SQLite file [cyan]{escape(str(path))}[/]",
        ))
        repo = eskit.Repository(store)
        _open_accounts(repo, console)
        _everyday_banking(repo, console)
        _rules(repo, console)
        _close_an_account(repo, console)
        _conflict(repo, console)
        expected = {number: repo.get(account_id(number), BankAccount).balance
                    for number, _, _ in ACCOUNTS}

    balances = _rebuild(path, console)
    if balances != expected:  # pragma: no cover - replay would be broken
        raise AssertionError(f"rebuilt balances {balances} differ from {expected}")
    console.print("  [green]✓[/] Each balance equals the one computed while the commands "
                  "ran, to the cent (Decimal, never float).")
    with eskit.SQLiteEventStore(path, create=False) as store:
        _step(console, 8, "The event history")
        console.print(_history(store))
    _read_models(path, console)

    console.print(
        "\nThe file stays for you to explore:\n"
        f"  [bold]eskit streams {escape(str(path))}[/]\n"
        f"  [bold]eskit events {escape(str(path))} {account_id('ACC-001')}[/]\n"
        "or in a browser, with the accounts' state at every version:\n"
        f"  [bold]eskit serve {escape(str(path))} --app {__package__}.domain[/]"
        "  then open http://127.0.0.1:8000/"
    )
    return balances


def _open_accounts(repo: eskit.Repository, console: Console) -> None:
    _step(console, 1, "Open three accounts")
    for number, owner, initial in ACCOUNTS:
        account = BankAccount(account_id(number))
        account.open(number, owner, initial)
        repo.save(account, metadata=_META)
        console.print(f"  {owner} opens {number} with {_money(initial)}  "
                      f"[dim]→ event AccountOpened, stream {_short(account.aggregate_id)}…[/]")


def _everyday_banking(repo: eskit.Repository, console: Console) -> None:
    _step(console, 2, "Deposit and withdraw")
    account = repo.get(ALICE, BankAccount)
    account.deposit(Decimal("250.00"))
    account.withdraw(Decimal("40.25"))
    repo.save(account, metadata=_META)  # two events, appended together or not at all
    console.print("  Alice deposits 250.00 and withdraws 40.25: "
                  f"balance {_money(account.balance)}  [dim](version {account.version})[/]")

    _step(console, 3, "Transfer money between accounts")
    transfer(repo, ALICE, BOB, Decimal("75.50"), metadata=_META)
    console.print("  Alice sends 75.50 to Bob")
    console.print("  [dim]→ MoneyTransferredOut on ACC-001, then MoneyTransferredIn on "
                  "ACC-002: two streams, two saves[/]")
    console.print(f"  Balances: Alice {_money(repo.get(ALICE, BankAccount).balance)}, "
                  f"Bob {_money(repo.get(BOB, BankAccount).balance)}")


def _rules(repo: eskit.Repository, console: Console) -> None:
    _step(console, 4, "Commands enforce the rules")
    refused: list[tuple[str, Any]] = [
        ("Carol withdraws 1,000.00", lambda a: a.withdraw(Decimal("1000.00"))),
        ("Carol deposits -5.00", lambda a: a.deposit(Decimal("-5.00"))),
        ("Carol deposits the float 0.1", lambda a: a.deposit(0.1)),
        ("Carol opens her account again", lambda a: a.open("ACC-003", "Carol", Decimal(0))),
    ]
    for what, command in refused:
        account = repo.get(CAROL, BankAccount)
        try:
            command(account)
        except BankAccountError as exc:
            console.print(f"  [red]✗[/] {what}: [red]{escape(str(exc))}[/]")
        else:  # pragma: no cover - the domain would be broken
            raise AssertionError(f"{what} should have been refused")
        assert not account.get_uncommitted_events()
    console.print("  [dim]A refused command raises before any event exists: "
                  "nothing is stored.[/]")


def _close_an_account(repo: eskit.Repository, console: Console) -> None:
    _step(console, 5, "Close an account")
    account = repo.get(BOB, BankAccount)
    console.print(f"  Bob moves his whole balance, {_money(account.balance)}, to Carol and "
                  "closes ACC-002 [dim](only an empty account can be closed)[/]")
    transfer(repo, BOB, CAROL, account.balance, metadata=_META)
    account = repo.get(BOB, BankAccount)
    account.close()
    repo.save(account, metadata=_META)


def _conflict(repo: eskit.Repository, console: Console) -> None:
    _step(console, 6, "Two tellers change one account at once")
    teller_1 = repo.get(ALICE, BankAccount)
    teller_2 = repo.get(ALICE, BankAccount)
    console.print(f"  Teller 1 and teller 2 both load ACC-001: version {teller_1.version}, "
                  f"balance {_money(teller_1.balance)}")
    teller_1.deposit(Decimal("10.00"))
    repo.save(teller_1, metadata={**_META, "teller": "teller-1"})
    console.print(f"  Teller 1 deposits 10.00 and saves: version {teller_1.version}")
    teller_2.withdraw(Decimal("20.00"))
    console.print("  Teller 2 withdraws 20.00 from the copy loaded at version "
                  f"{teller_2.version - 1} and saves…")
    try:
        repo.save(teller_2, metadata={**_META, "teller": "teller-2"})
    except eskit.ConcurrencyError as exc:
        console.print(Panel(
            f"[bold]{type(exc).__name__}[/]: {escape(str(exc))}\n\n"
            f"Teller 2 expected ACC-001 at version {exc.expected_version}, but teller 1 "
            f"had moved it to version {exc.actual_version}. Nothing was written: "
            "teller 2's withdrawal never saw teller 1's deposit, so it must not "
            "silently overwrite it.",
            title="conflict detected", border_style="yellow", expand=False,
        ))
    else:  # pragma: no cover - the store would be broken
        raise AssertionError("the second save should have raised eskit.ConcurrencyError")
    teller_2 = repo.get(ALICE, BankAccount)
    console.print(f"  Teller 2 reloads ACC-001: version {teller_2.version}, "
                  f"balance {_money(teller_2.balance)}")
    teller_2.withdraw(Decimal("20.00"))  # the command runs again, on fresh state
    repo.save(teller_2, metadata={**_META, "teller": "teller-2"})
    console.print("  Teller 2 withdraws 20.00 again and saves: [green]✓ saved[/], "
                  f"version {teller_2.version}, balance {_money(teller_2.balance)}")


def _rebuild(path: Path, console: Console) -> dict[str, Decimal]:
    _step(console, 7, "Rebuild every account from its events")
    console.print("  The store is closed; a new SQLiteEventStore reopens the file and a new "
                  "Repository replays each account's events.")
    with eskit.SQLiteEventStore(path, create=False) as store:
        repo = eskit.Repository(store)
        accounts = [repo.get(account_id(number), BankAccount) for number, _, _ in ACCOUNTS]
    table = Table(title="Accounts rebuilt from events")
    table.add_column("account")
    table.add_column("owner")
    table.add_column("status")
    table.add_column("events", justify="right")
    table.add_column("balance", justify="right")
    for account in accounts:
        table.add_row(account.account_number, account.owner, account.status,
                      str(account.version), _money(account.balance))
    table.add_section()
    table.add_row("total", "", "", "", _money(sum((a.balance for a in accounts), Decimal(0))))
    console.print(table)
    return {a.account_number: a.balance for a in accounts}


def _read_models(path: Path, console: Console) -> None:
    from .read_models import AccountBalances, DailySummary, balances, daily_summary

    _step(console, 9, "Read models: queries that never touch the event store")
    console.print("  Two projections turn the events into SQL tables in the same file; each "
                  "batch of\n  read-model writes commits together with the projection's "
                  "checkpoint.")
    with eskit.SQLiteEventStore(path) as store, SQLiteTarget(path) as target:
        for projection in (AccountBalances(), DailySummary()):
            handled = ProjectionRunner(store, projection, target).run_until_caught_up()
            console.print(f"  [cyan]{projection.name}[/]: {handled} events handled")
    with closing(sqlite3.connect(path)) as conn:  # plain SQL from here on
        table = Table(title="SELECT ... FROM bank_account_balances")
        for column in ("owner", "account", "status", "balance"):
            table.add_column(column, justify="right" if column == "balance" else "left")
        for row in balances(conn):
            table.add_row(row.owner, row.account_number, row.status, _money(row.balance))
        console.print(table)
        table = Table(title="SELECT ... FROM bank_daily_summary")
        for column in ("day (UTC)", "kind", "count", "total"):
            table.add_column(column, justify="right" if column in ("count", "total") else "left")
        for summary in daily_summary(conn):
            table.add_row(summary.day, summary.kind, str(summary.count), _money(summary.total))
        console.print(table)


def _remove_previous_demo(path: Path) -> None:
    """Delete an earlier demo's file; refuse to delete anything else."""
    if not path.exists():
        return
    if not path.is_file():
        raise FileExistsError(f"refusing to overwrite {str(path)!r}: it is not a file")
    try:
        with eskit.SQLiteEventStore(path, create=False) as old:
            ours = all(event.metadata.get("app") == DEMO_APP for event in old.read_all())
    except eskit.EskitError:
        ours = False
    if not ours:
        raise FileExistsError(
            f"refusing to overwrite {str(path)!r}: it was not written by eskit demo; "
            "choose another file with --db"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _history(store: eskit.EventStore) -> Table:
    names = {account_id(number): number for number, _, _ in ACCOUNTS}
    # No vertical lines: six columns still fit an 80-column terminal.
    table = Table(title="Every event, in global order (store.read_all())",
                  box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("position", justify="right", no_wrap=True)
    table.add_column("stream", no_wrap=True)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("data", overflow="fold")
    table.add_column("time (UTC)", no_wrap=True)
    for event in store.read_all():
        stream = event.stream_id
        label = names.get(stream, str(stream)) if isinstance(stream, UUID) else stream
        table.add_row(
            str(event.position), escape(label), str(event.version), escape(event.event_type),
            escape(_describe(event.event_data, names)),
            event.timestamp.strftime("%H:%M:%S.%f")[:-3],
        )
    return table


def _describe(data: dict[str, Any], names: dict[UUID, str]) -> str:
    parts = []
    for key, value in data.items():
        if isinstance(value, UUID):
            shown = names[value] if value in names else f"{_short(value)}…"
        elif isinstance(value, Decimal):
            shown = _money(value)
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return "\n".join(parts) or "-"


def _step(console: Console, number: int, title: str) -> None:
    console.print()
    console.rule(f"[bold]{number}. {title}", align="left")


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _short(value: object) -> str:
    return str(value)[:8]
