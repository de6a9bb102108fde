"""The bank example behind HTTP: command handling with the async store and repository.

Each command request is one short story: load the account (replaying its
events), run the command (the domain checks its rules and raises an event),
save (append, expecting the version that was loaded). Errors map to statuses:

* :class:`~examples.bank.domain.BankAccountError` (a broken rule) → 422;
* :class:`eskit.ConcurrencyError` (another request saved the account between
  our load and our save, or the account already exists) → 409; the client
  reloads and decides whether to retry;
* ``If-Match`` naming an older version than the account's → 412, nothing done;
* :class:`eskit.AggregateNotFound` → 404; a malformed request → 400 or 422.

The store is chosen by environment variables when the app starts:
``BANK_POSTGRES_DSN`` (with ``BANK_POSTGRES_SCHEMA``, default ``bank``) for
PostgreSQL, otherwise the SQLite file ``BANK_SQLITE_PATH`` (default
``bank-events.db`` in the working directory). Run it with uvicorn::

    uvicorn examples.http_api.app:app
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eskit import AggregateNotFound, ConcurrencyError
from eskit.aio import AsyncEventStore, AsyncRepository, AsyncSQLiteEventStore
from examples.bank.domain import BankAccount, BankAccountError

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "POSTGRES_DSN_ENV",
    "POSTGRES_SCHEMA_ENV",
    "SQLITE_PATH_ENV",
    "app",
    "create_app",
]

SQLITE_PATH_ENV = "BANK_SQLITE_PATH"
POSTGRES_DSN_ENV = "BANK_POSTGRES_DSN"
POSTGRES_SCHEMA_ENV = "BANK_POSTGRES_SCHEMA"
DEFAULT_SQLITE_PATH = "bank-events.db"
DEFAULT_POSTGRES_SCHEMA = "bank"


class RequestError(Exception):
    """The request itself is unusable (not the domain saying no)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


# --------------------------------------------------------------------------- the store


async def open_store(
    *, sqlite_path: str | os.PathLike[str] | None = None, postgres_dsn: str | None = None,
    postgres_schema: str | None = None,
) -> AsyncEventStore:
    """The event store named by the arguments, else by the environment."""
    dsn = postgres_dsn or os.environ.get(POSTGRES_DSN_ENV)
    if dsn and sqlite_path is None:
        from eskit.aio import AsyncPostgresEventStore  # needs eskit[postgres]

        schema = postgres_schema or os.environ.get(POSTGRES_SCHEMA_ENV, DEFAULT_POSTGRES_SCHEMA)
        return await AsyncPostgresEventStore.open(dsn, schema=schema)
    path = sqlite_path or os.environ.get(SQLITE_PATH_ENV, DEFAULT_SQLITE_PATH)
    return await AsyncSQLiteEventStore.open(Path(path))


# --------------------------------------------------------------------------- requests


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        # parse_float=Decimal: 10.10 in JSON stays exactly 10.10, never a float.
        body = json.loads(raw or b"{}", parse_float=Decimal)
    except ValueError:
        raise RequestError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise RequestError(422, "invalid_request", f"{name!r} must be a string")
    return value


def _money(body: dict[str, Any], name: str, default: str | None = None) -> Decimal:
    """A sum of money from JSON: a string ("10.50") or a number (10.50), never a float."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise RequestError(422, "invalid_request",
                           f"{name!r} must be an amount such as \"10.50\"")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise RequestError(422, "invalid_request", f"{name!r} is not a number: {value!r}") from None


def _account_id(body: dict[str, Any]) -> UUID:
    value = body.get("id")
    if value is None:
        return uuid4()
    try:
        return UUID(str(value))
    except ValueError:
        raise RequestError(422, "invalid_request", "'id' must be a UUID") from None


def _metadata(request: Request) -> dict[str, Any]:
    # Recorded on every event the request causes: which request did this.
    return {"request_id": request.headers.get("x-request-id") or str(uuid4()),
            "source": "http-api"}


def _check_if_match(request: Request, account: BankAccount) -> None:
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    if str(account.version) not in tags:
        raise RequestError(
            412, "precondition_failed",
            f"account {account.aggregate_id} is at version {account.version}, not {header}",
        )


def _view(account: BankAccount, status_code: int = 200) -> JSONResponse:
    return JSONResponse(
        {
            "id": str(account.aggregate_id),
            "account_number": account.account_number,
            "owner": account.owner,
            "balance": str(account.balance),
            "status": account.status,
            "version": account.version,
        },
        status_code=status_code,
        headers={"ETag": f'"{account.version}"'},
    )


def _repository(request: Request) -> AsyncRepository:
    repository: AsyncRepository = request.app.state.repository
    return repository


# --------------------------------------------------------------------------- endpoints


async def open_account(request: Request) -> Response:
    """POST /accounts {"account_number", "owner", "initial_deposit"?, "id"?} → 201."""
    body = await _body(request)
    account = BankAccount(_account_id(body))
    account.open(_text(body, "account_number"), _text(body, "owner"),
                 _money(body, "initial_deposit", default="0"))
    # Expects a new stream: an "id" that is already taken is a ConcurrencyError (409).
    await _repository(request).save(account, metadata=_metadata(request))
    response = _view(account, status_code=201)
    response.headers["Location"] = f"/accounts/{account.aggregate_id}"
    return response


async def _handle(request: Request, command: Callable[[BankAccount], None]) -> Response:
    """Load, decide, save: the shape of every command on an existing account."""
    repository = _repository(request)
    account = await repository.get(request.path_params["account_id"], BankAccount)
    _check_if_match(request, account)
    command(account)
    await repository.save(account, metadata=_metadata(request))
    return _view(account)


async def deposit(request: Request) -> Response:
    """POST /accounts/{id}/deposits {"amount"}."""
    amount = _money(await _body(request), "amount")
    return await _handle(request, lambda account: account.deposit(amount))


async def withdraw(request: Request) -> Response:
    """POST /accounts/{id}/withdrawals {"amount"}."""
    amount = _money(await _body(request), "amount")
    return await _handle(request, lambda account: account.withdraw(amount))


async def close_account(request: Request) -> Response:
    """POST /accounts/{id}/close."""
    return await _handle(request, lambda account: account.close())


async def get_account(request: Request) -> Response:
    """GET /accounts/{id}: the state rebuilt from the account's events."""
    return _view(await _repository(request).get(request.path_params["account_id"], BankAccount))


async def account_history(request: Request) -> Response:
    """GET /accounts/{id}/events: what happened, oldest first."""
    store: AsyncEventStore = request.app.state.store
    events = await store.read_stream(request.path_params["account_id"])
    if not events:
        raise AggregateNotFound(request.path_params["account_id"], BankAccount)
    history = [
        {"version": e.version, "type": e.event_type, "data": e.event_data,
         "recorded_at": e.timestamp.isoformat()}
        for e in events
    ]
    # default=str: Decimal amounts and UUIDs go out as their exact text.
    return Response(json.dumps(history, default=str), media_type="application/json")


# --------------------------------------------------------------------------- errors


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return _error(exc.status, exc.error, exc.detail)


async def _rule_broken(request: Request, exc: Exception) -> Response:
    return _error(422, "rejected", str(exc))


async def _conflict(request: Request, exc: Exception) -> Response:
    return _error(409, "conflict", str(exc))


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, "not_found", str(exc))


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
EXCEPTION_HANDLERS: dict[Any, ErrorHandler] = {
    RequestError: _request_error,
    BankAccountError: _rule_broken,
    ConcurrencyError: _conflict,
    AggregateNotFound: _not_found,
}


# --------------------------------------------------------------------------- the app


def create_app(
    *, sqlite_path: str | os.PathLike[str] | None = None, postgres_dsn: str | None = None,
    postgres_schema: str | None = None,
) -> Starlette:
    """The app; its store opens when the app starts and closes when it stops.

    Arguments win over the environment variables (see the module docstring).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(sqlite_path=sqlite_path, postgres_dsn=postgres_dsn,
                                 postgres_schema=postgres_schema)
        app.state.store = store
        app.state.repository = AsyncRepository(store)
        try:
            yield
        finally:
            await store.close()

    routes = [
        Route("/accounts", open_account, methods=["POST"]),
        Route("/accounts/{account_id:uuid}", get_account, methods=["GET"]),
        Route("/accounts/{account_id:uuid}/events", account_history, methods=["GET"]),
        Route("/accounts/{account_id:uuid}/deposits", deposit, methods=["POST"]),
        Route("/accounts/{account_id:uuid}/withdrawals", withdraw, methods=["POST"]),
        Route("/accounts/{account_id:uuid}/close", close_account, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)


app = create_app()
"""The app configured from the environment, for ``uvicorn examples.http_api.app:app``."""
