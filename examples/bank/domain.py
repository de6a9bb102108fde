"""The seed tutorial's ``BankAccount``, done right.

What changes from the seed:

* **Money is ``Decimal``, never ``float``.** Amounts are checked to be positive,
  finite and whole cents; ``0.1 + 0.2`` never reaches a balance. The codec stores
  a ``Decimal`` exactly, so a balance rebuilt from stored events is the same
  ``Decimal`` to the last digit.
* **Typed events.** Each event is a frozen dataclass declared with
  :func:`eskit.domain_event` under a stable type name, applied by a method marked
  :func:`eskit.handles`. Renaming a class does not orphan stored events.
* **Every rule is checked by a command.** Commands raise
  :class:`BankAccountError` (a ``ValueError``) *before* raising an event; event
  handlers only change state and never fail, so replaying history always works.
* **Transfers** between two accounts are two aggregates and two saves, in that
  order, and are **not atomic**: see :func:`transfer`.

Rules (invariants) of an account:

* it is opened once, with an account number, an owner and an initial deposit
  (zero allowed);
* deposits, withdrawals and transfers need a positive amount in whole cents;
* the balance never goes below zero (no overdraft);
* nothing happens to a closed account, and an account can be closed only when
  its balance is zero: the owner withdraws or transfers the rest first, so
  closing never makes money disappear.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID, uuid4

import eskit

__all__ = [
    "CENT",
    "AccountClosed",
    "AccountOpened",
    "BankAccount",
    "BankAccountError",
    "InsufficientFundsError",
    "MoneyDeposited",
    "MoneyRefunded",
    "MoneyTransferredIn",
    "MoneyTransferredOut",
    "MoneyWithdrawn",
    "TransferIncompleteError",
    "as_money",
    "transfer",
]

CENT = Decimal("0.01")


# --------------------------------------------------------------------------- errors


class BankAccountError(ValueError):
    """A command would break a rule of the account. Nothing was recorded."""


class InsufficientFundsError(BankAccountError):
    """A withdrawal or transfer would overdraw the account."""


class TransferIncompleteError(BankAccountError):
    """The source account was debited but the target could not be credited.

    The money is *in flight*: recorded as leaving ``source_id`` but not as
    arriving anywhere. Calling :func:`transfer` again with the same
    ``transfer_id`` completes it once the cause is fixed; a later version of
    this example will let a process manager refund or complete it on its own.
    """

    def __init__(
        self, message: str, *, transfer_id: UUID, source_id: eskit.StreamId,
        target_id: eskit.StreamId, amount: Decimal,
    ) -> None:
        super().__init__(message)
        self.transfer_id = transfer_id
        self.source_id = source_id
        self.target_id = target_id
        self.amount = amount


# --------------------------------------------------------------------------- events


@eskit.domain_event("AccountOpened")
@dataclass(frozen=True)
class AccountOpened:
    account_number: str
    owner: str
    initial_deposit: Decimal


@eskit.domain_event("MoneyDeposited")
@dataclass(frozen=True)
class MoneyDeposited:
    amount: Decimal


@eskit.domain_event("MoneyWithdrawn")
@dataclass(frozen=True)
class MoneyWithdrawn:
    amount: Decimal


@eskit.domain_event("MoneyTransferredOut")
@dataclass(frozen=True)
class MoneyTransferredOut:
    transfer_id: UUID
    to_account: eskit.StreamId
    amount: Decimal


@eskit.domain_event("MoneyTransferredIn")
@dataclass(frozen=True)
class MoneyTransferredIn:
    transfer_id: UUID
    from_account: eskit.StreamId
    amount: Decimal


@eskit.domain_event("MoneyRefunded")
@dataclass(frozen=True)
class MoneyRefunded:
    """Money that left in a transfer comes back: the credit side failed (a compensation)."""

    transfer_id: UUID
    amount: Decimal
    reason: str


@eskit.domain_event("AccountClosed")
@dataclass(frozen=True)
class AccountClosed:
    pass


# --------------------------------------------------------------------------- money


def as_money(amount: object, what: str = "amount", *, allow_zero: bool = False) -> Decimal:
    """Check that ``amount`` is a usable sum of money and return it in cents.

    Accepts only a finite ``Decimal`` in whole cents, positive (or zero if
    ``allow_zero``); returns it with exactly two decimal places, so
    ``Decimal("5")`` becomes ``Decimal("5.00")``. Raises :class:`BankAccountError`.
    """
    if isinstance(amount, float):
        raise BankAccountError(
            f"{what} must be a Decimal, not a float: a float cannot hold most amounts "
            f"of money exactly (write Decimal({str(amount)!r}))"
        )
    if not isinstance(amount, Decimal):
        raise BankAccountError(f"{what} must be a Decimal, got {type(amount).__name__}")
    if not amount.is_finite():
        raise BankAccountError(f"{what} must be a finite number, got {amount}")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise BankAccountError(
            f"{what} must be {'zero or more' if allow_zero else 'positive'}, got {amount}"
        )
    try:
        cents = Decimal(amount).quantize(CENT)
    except InvalidOperation:
        raise BankAccountError(f"{what} is too large: {amount}") from None
    if cents != amount:
        raise BankAccountError(f"{what} must be in whole cents, got {amount}")
    return cents if cents else Decimal("0.00")  # never "-0.00"


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BankAccountError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def _same_stream(a: eskit.StreamId, b: eskit.StreamId) -> bool:
    # Stream ids are stored as text (a UUID as its canonical form), so compare that.
    return str(a) == str(b)


# --------------------------------------------------------------------------- the aggregate


class BankAccount(eskit.Aggregate):
    """A bank account whose state is rebuilt from its events.

    Create a blank one with its id, then call :meth:`open`; load an existing
    one with ``repository.get(account_id, BankAccount)``.
    """

    def __init__(self, aggregate_id: eskit.StreamId) -> None:
        super().__init__(aggregate_id)
        self.account_number = ""
        self.owner = ""
        self.balance = Decimal("0.00")
        self.is_open = False
        self.is_closed = False
        # Transfers recorded on this account, by id: makes retrying a transfer safe.
        self.transfers: dict[UUID, MoneyTransferredOut | MoneyTransferredIn] = {}
        self.refunded: set[UUID] = set()

    @property
    def status(self) -> str:
        """``"new"`` before it is opened, then ``"open"``, then ``"closed"``."""
        return "closed" if self.is_closed else "open" if self.is_open else "new"

    def __repr__(self) -> str:
        return (
            f"<BankAccount {self.account_number or self.aggregate_id} {self.status} "
            f"balance={self.balance} version={self.version}>"
        )

    # -- commands: check the rules, then raise an event ---------------------------------

    def open(self, account_number: str, owner: str, initial_deposit: Decimal) -> None:
        """Open the account. An account is opened once, even after it is closed."""
        if self.version > 0:
            raise BankAccountError(
                f"account {self.account_number} already exists ({self.status}); "
                "an account is opened only once"
            )
        number = _text(account_number, "account number")
        name = _text(owner, "owner")
        deposit = as_money(initial_deposit, "initial deposit", allow_zero=True)
        self.raise_event(AccountOpened(account_number=number, owner=name, initial_deposit=deposit))

    def deposit(self, amount: Decimal) -> None:
        """Put money in."""
        self._require_open("deposit to")
        self.raise_event(MoneyDeposited(amount=as_money(amount)))

    def withdraw(self, amount: Decimal) -> None:
        """Take money out; never more than the balance."""
        self._require_open("withdraw from")
        money = as_money(amount)
        self._require_funds(money, "withdraw")
        self.raise_event(MoneyWithdrawn(amount=money))

    def close(self) -> None:
        """Close the account; its balance must be zero."""
        self._require_open("close")
        if self.balance != 0:
            raise BankAccountError(
                f"account {self.account_number} still holds {self.balance}: withdraw or "
                "transfer it before closing the account"
            )
        self.raise_event(AccountClosed())

    def transfer_out(
        self, transfer_id: UUID, to_account: eskit.StreamId, amount: Decimal
    ) -> bool:
        """Record money leaving for ``to_account``; the first half of :func:`transfer`.

        Returns ``False``, recording nothing, if this very transfer is already
        recorded (a retry). Reusing a transfer id for a different transfer is an error.
        """
        money = as_money(amount)
        event = MoneyTransferredOut(transfer_id=transfer_id, to_account=to_account, amount=money)
        if self._already_recorded(event):
            return False
        self._require_open("transfer from")
        if _same_stream(to_account, self.aggregate_id):
            raise BankAccountError("cannot transfer money from an account to itself")
        self._require_funds(money, "transfer")
        self.raise_event(event)
        return True

    def transfer_in(
        self, transfer_id: UUID, from_account: eskit.StreamId, amount: Decimal
    ) -> bool:
        """Record money arriving from ``from_account``; the second half of :func:`transfer`.

        Returns ``False``, recording nothing, if this very transfer is already recorded.
        """
        money = as_money(amount)
        event = MoneyTransferredIn(transfer_id=transfer_id, from_account=from_account, amount=money)
        if self._already_recorded(event):
            return False
        self._require_open("transfer to")
        if _same_stream(from_account, self.aggregate_id):
            raise BankAccountError("cannot transfer money from an account to itself")
        self.raise_event(event)
        return True

    def refund(self, transfer_id: UUID, reason: str) -> bool:
        """Give back the money of an outgoing transfer whose credit failed (compensation).

        Allowed on a closed account too: the money must come back somewhere. Returns
        ``False``, recording nothing, if this transfer was refunded already.
        """
        if transfer_id in self.refunded:
            return False
        sent = self.transfers.get(transfer_id)
        if not isinstance(sent, MoneyTransferredOut):
            raise BankAccountError(
                f"account {self.account_number} sent no transfer {transfer_id} to refund"
            )
        self.raise_event(MoneyRefunded(transfer_id=transfer_id, amount=sent.amount,
                                       reason=_text(reason, "reason")))
        return True

    def _require_open(self, action: str) -> None:
        if not self.is_open and not self.is_closed:
            raise BankAccountError(
                f"cannot {action} account {str(self.aggregate_id)!r}: it has not been opened"
            )
        if self.is_closed:
            raise BankAccountError(f"cannot {action} account {self.account_number}: it is closed")

    def _require_funds(self, amount: Decimal, action: str) -> None:
        if amount > self.balance:
            raise InsufficientFundsError(
                f"cannot {action} {amount} from account {self.account_number}: "
                f"insufficient funds (balance {self.balance}, no overdraft allowed)"
            )

    def _already_recorded(self, event: MoneyTransferredOut | MoneyTransferredIn) -> bool:
        known = self.transfers.get(event.transfer_id)
        if known is None:
            return False
        if known != event:
            raise BankAccountError(
                f"transfer {event.transfer_id} is already recorded on account "
                f"{self.account_number} as a different transfer: {known}"
            )
        return True

    # -- event handlers: change state, never fail --------------------------------------

    @eskit.handles(AccountOpened)
    def _on_opened(self, event: AccountOpened) -> None:
        self.account_number = event.account_number
        self.owner = event.owner
        self.balance = event.initial_deposit
        self.is_open = True

    @eskit.handles(MoneyDeposited)
    def _on_deposited(self, event: MoneyDeposited) -> None:
        self.balance += event.amount

    @eskit.handles(MoneyWithdrawn)
    def _on_withdrawn(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount

    @eskit.handles(MoneyTransferredOut)
    def _on_transferred_out(self, event: MoneyTransferredOut) -> None:
        self.balance -= event.amount
        self.transfers[event.transfer_id] = event

    @eskit.handles(MoneyTransferredIn)
    def _on_transferred_in(self, event: MoneyTransferredIn) -> None:
        self.balance += event.amount
        self.transfers[event.transfer_id] = event

    @eskit.handles(MoneyRefunded)
    def _on_refunded(self, event: MoneyRefunded) -> None:
        self.balance += event.amount
        self.refunded.add(event.transfer_id)

    @eskit.handles(AccountClosed)
    def _on_closed(self, event: AccountClosed) -> None:
        self.is_open = False
        self.is_closed = True


# --------------------------------------------------------------------------- transfers


def transfer(
    repository: eskit.Repository,
    source_id: eskit.StreamId,
    target_id: eskit.StreamId,
    amount: Decimal,
    *,
    transfer_id: UUID | None = None,
    metadata: dict[str, Any] | None = None,
    attempts: int = 3,
) -> UUID:
    """Move ``amount`` from one account to another; return the transfer id.

    Both accounts are loaded and both halves are checked in memory first, so a
    transfer that breaks a rule (unknown or closed account, insufficient funds,
    bad amount) raises before anything is written. Then come **two saves, to two
    streams**: the debit of the source, then the credit of the target.

    **Not atomic across the two streams.** eskit guarantees atomic appends to
    *one* stream. If the process stops, or the credit fails, between the two
    saves, the money has left the source and not yet reached the target: it is
    in flight, never created or lost twice, because the debit is always saved
    first. To finish such a transfer, call ``transfer`` again with the same
    ``transfer_id``: each account records a transfer id once, so a retry writes
    only the half that is missing. If another writer changes the target
    between the two saves, the credit is run again on a fresh copy
    (:meth:`eskit.Repository.execute`), ``attempts`` saves in all (at least two);
    if the target can no longer accept it (it was closed),
    :class:`TransferIncompleteError` is raised. A later issue adds process
    managers, which complete or refund such transfers without a caller.

    A :class:`~eskit.ConcurrencyError` raised while saving the debit means
    nothing was written; the whole call can simply be retried.
    """
    transfer_id = transfer_id or uuid4()
    money = as_money(amount)
    if _same_stream(source_id, target_id):
        raise BankAccountError("cannot transfer money from an account to itself")
    source = repository.get(source_id, BankAccount)
    target = repository.get(target_id, BankAccount)
    source.transfer_out(transfer_id, target_id, money)
    target.transfer_in(transfer_id, source_id, money)

    repository.save(source, metadata=metadata)  # 1. the debit: all or nothing
    try:  # 2. the credit, on the target loaded above
        repository.save(target, metadata=metadata)
        return transfer_id
    except eskit.ConcurrencyError:
        pass
    # The target moved on: credit a freshly loaded copy, retried while it keeps moving.
    try:
        repository.execute(
            target_id, BankAccount,
            lambda fresh: fresh.transfer_in(transfer_id, source_id, money),
            retry=eskit.Retry(max_attempts=max(attempts - 1, 1)), metadata=metadata,
        )
    except BankAccountError as exc:
        raise TransferIncompleteError(
            f"transfer {transfer_id}: {money} left account {source.account_number} "
            f"but cannot reach account {target.account_number}: {exc}",
            transfer_id=transfer_id, source_id=source_id, target_id=target_id,
            amount=money,
        ) from exc
    except eskit.CommandRetriesExhausted as exc:
        raise TransferIncompleteError(
            f"transfer {transfer_id}: {money} left account {source.account_number} but "
            f"account {target.account_number} kept changing; retry with the same transfer id",
            transfer_id=transfer_id, source_id=source_id, target_id=target_id, amount=money,
        ) from exc
    return transfer_id
