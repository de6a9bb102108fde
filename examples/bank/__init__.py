"""The seed tutorial's bank account, done right: see README.md in this folder.

``from examples.bank import BankAccount, transfer`` gives the domain;
``examples.bank.demo.run`` is what ``eskit demo`` runs.
"""

from .domain import (
    AccountClosed,
    AccountOpened,
    BankAccount,
    BankAccountError,
    InsufficientFundsError,
    MoneyDeposited,
    MoneyTransferredIn,
    MoneyTransferredOut,
    MoneyWithdrawn,
    TransferIncompleteError,
    transfer,
)

__all__ = [
    "AccountClosed",
    "AccountOpened",
    "BankAccount",
    "BankAccountError",
    "InsufficientFundsError",
    "MoneyDeposited",
    "MoneyTransferredIn",
    "MoneyTransferredOut",
    "MoneyWithdrawn",
    "TransferIncompleteError",
    "transfer",
]
