"""The bank as an HTTP API on FastAPI, with a read model kept up to date in the background.

Commands load an account (replaying its events), run the command (the domain of
examples/bank checks its rules and raises an event) and save it, expecting the
version that was loaded. Queries of ``/balances`` read the ``AccountBalances``
read model, which a projection runner updates in a background thread.

Configuration: the store ``ESKIT_DSN`` names (default ``sqlite:///bank-api.db``);
``make serve-example`` runs it with uvicorn on http://127.0.0.1:8000 (``/docs``
for the OpenAPI page).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

import eskit
from eskit.config import parse_store_url
from eskit.fastapi import (
    IfMatchDep,
    RepositoryDep,
    StoreDep,
    add_exception_handlers,
    eskit_lifespan,
    etag,
    in_thread,
    problem,
)
from eskit.projections import PostgresTarget, ProjectionRunner, SQLiteTarget
from eskit.projections.checkpoints import ProjectionTarget
from examples.bank.domain import BankAccount, BankAccountError
from examples.bank.read_models import AccountBalances, balances

__all__ = ["DEFAULT_DSN", "BalancesReadModel", "app", "create_app"]

DEFAULT_DSN = "sqlite:///bank-api.db"

Money = Annotated[Decimal, Field(examples=["10.50"])]


class OpenAccount(BaseModel):
    account_number: str
    owner: str
    initial_deposit: Money = Decimal("0")
    id: UUID | None = Field(default=None, description="pass one to make the request retryable")


class Amount(BaseModel):
    amount: Money


class AccountView(BaseModel):
    id: UUID
    account_number: str | None
    owner: str | None
    balance: Decimal
    status: str
    version: int
    position: int | None = Field(default=None, description="where the last save went in the "
                                 "global order: pass it as ?after= to /balances")


class BalanceRow(BaseModel):
    account_number: str
    owner: str
    status: str
    balance: Decimal


class BalancesReadModel:
    """A :class:`~eskit.fastapi.BackgroundService`: the balances projection, run in a thread.

    It opens its own sync store and target (a sync runner needs sync ones) on
    start and closes them on stop, so it works the same on SQLite and PostgreSQL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.target: ProjectionTarget | None = None
        self._store: eskit.EventStore | None = None
        self._runner: Any = None

    def _open(self) -> None:
        spec = parse_store_url(self.url)
        self._store = eskit.open_store(self.url)
        self.target = (PostgresTarget(spec.target, schema=spec.schema)
                       if spec.kind == "postgres" else SQLiteTarget(spec.target))
        runner = ProjectionRunner(self._store, AccountBalances(), self.target,
                                  poll_interval=0.2)
        runner.setup()  # tables exist before the first request reads them
        self._runner = in_thread(runner)

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        await self._runner.start()

    async def stop(self) -> None:
        try:
            if self._runner is not None:
                await self._runner.stop()
        finally:
            for closable in (self.target, self._store):
                if closable is not None:
                    await asyncio.to_thread(closable.close)

    def caught_up_to(self, position: int, timeout: float) -> bool:
        assert self.target is not None
        return eskit.wait_for_projection(self.target, AccountBalances.name, position, timeout)

    def rows(self) -> list[BalanceRow]:
        assert self.target is not None
        with self.target.transaction() as conn:
            return [BalanceRow(**asdict(row)) for row in balances(conn)]


def _view(account: BankAccount, response: Response, position: int | None = None) -> AccountView:
    response.headers["ETag"] = etag(account.version)
    return AccountView(id=account.aggregate_id, account_number=account.account_number,
                       owner=account.owner, balance=account.balance, status=account.status,
                       version=account.version, position=position)


def _metadata(request: Request) -> dict[str, str]:
    # Recorded on every event the request causes: which request did this.
    return {"request_id": request.headers.get("x-request-id") or str(uuid4()),
            "source": "bank-api"}


def create_app(url: str | None = None) -> FastAPI:
    """The app on the store ``url`` names (else ``$ESKIT_DSN``, else :data:`DEFAULT_DSN`)."""
    dsn = url or os.environ.get("ESKIT_DSN") or DEFAULT_DSN
    read_model = BalancesReadModel(dsn)
    app = FastAPI(title="eskit bank", lifespan=eskit_lifespan(dsn, background=[read_model]))
    add_exception_handlers(app)

    @app.exception_handler(BankAccountError)
    async def rule_broken(request: Request, exc: BankAccountError) -> Response:
        return problem(422, str(exc), code="rejected")

    async def handle(account_id: UUID, repository: RepositoryDep, precondition: IfMatchDep,
                     request: Request, response: Response, command: Any) -> AccountView:
        """Load, check If-Match, decide, save: the shape of every command."""
        account = await repository.get(account_id, BankAccount)
        precondition.check(account_id, account.version)
        command(account)
        saved = await repository.save(account, metadata=_metadata(request))
        return _view(account, response, saved.position if saved else None)

    @app.post("/accounts", status_code=201)
    async def open_account(body: OpenAccount, repository: RepositoryDep, request: Request,
                           response: Response) -> AccountView:
        account = BankAccount(body.id or uuid4())
        account.open(body.account_number, body.owner, body.initial_deposit)
        # A new stream is expected: an id that is taken is a ConcurrencyError (409).
        saved = await repository.save(account, metadata=_metadata(request))
        response.headers["Location"] = f"/accounts/{account.aggregate_id}"
        return _view(account, response, saved.position if saved else None)

    @app.post("/accounts/{account_id}/deposits")
    async def deposit(account_id: UUID, body: Amount, repository: RepositoryDep,
                      precondition: IfMatchDep, request: Request,
                      response: Response) -> AccountView:
        return await handle(account_id, repository, precondition, request, response,
                            lambda account: account.deposit(body.amount))

    @app.post("/accounts/{account_id}/withdrawals")
    async def withdraw(account_id: UUID, body: Amount, repository: RepositoryDep,
                       precondition: IfMatchDep, request: Request,
                       response: Response) -> AccountView:
        return await handle(account_id, repository, precondition, request, response,
                            lambda account: account.withdraw(body.amount))

    @app.post("/accounts/{account_id}/close")
    async def close_account(account_id: UUID, repository: RepositoryDep,
                            precondition: IfMatchDep, request: Request,
                            response: Response) -> AccountView:
        return await handle(account_id, repository, precondition, request, response,
                            lambda account: account.close())

    @app.get("/accounts/{account_id}")
    async def get_account(account_id: UUID, repository: RepositoryDep,
                          response: Response) -> AccountView:
        return _view(await repository.get(account_id, BankAccount), response)

    @app.get("/accounts/{account_id}/events")
    async def history(account_id: UUID, store: StoreDep) -> list[dict[str, Any]]:
        events = await store.read_stream(account_id)
        if not events:
            raise eskit.AggregateNotFound(account_id, BankAccount)
        return [{"version": e.version, "type": e.event_type, "data": e.event_data,
                 "recorded_at": e.timestamp} for e in events]

    @app.get("/balances")
    async def list_balances(after: int = 0, timeout: float = 2.0) -> list[BalanceRow]:
        """Every account from the read model; ``after``: first wait until it has that position."""
        if after and not await asyncio.to_thread(read_model.caught_up_to, after,
                                                 min(timeout, 10.0)):
            raise eskit.StoreBusyError(f"the read model has not reached position {after} yet")
        return await asyncio.to_thread(read_model.rows)

    return app


app = create_app()
"""The app configured from the environment, for ``uvicorn examples.bank_api.app:app``."""
