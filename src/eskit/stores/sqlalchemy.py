"""SQLAlchemy glue for the PostgreSQL stores (``pip install 'eskit[sqlalchemy]'``).

eskit talks to PostgreSQL through psycopg 3; an application on SQLAlchemy 2
(``postgresql+psycopg://`` URLs) shares its engine or its connection with eskit
through the psycopg connection underneath (``driver_connection``). Nothing here
sends SQL: it only finds that connection and keeps SQLAlchemy's view of the
transaction in step with the server's.

Why :func:`begin_if_idle`: a SQLAlchemy ``Connection`` only sends ``COMMIT``
for a transaction it knows has begun. psycopg (not in autocommit mode) opens a
transaction at eskit's first statement; if SQLAlchemy had not begun one, a later
``conn.commit()`` would do nothing and the append would be rolled back when the
connection returns to the pool. So eskit begins the SQLAlchemy transaction
first, exactly as SQLAlchemy's own autobegin would for any statement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from eskit.errors import InvalidInputError, MissingExtraError

__all__ = [
    "async_driver_connection",
    "async_engine_connection",
    "begin_if_idle",
    "driver_connection",
    "engine_connection",
    "is_sqlalchemy",
]


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise MissingExtraError("sqlalchemy", "eskit's SQLAlchemy support", name=exc.name) from exc
    return sqlalchemy


def is_sqlalchemy(obj: object) -> bool:
    """Whether ``obj`` comes from SQLAlchemy (checked without importing it)."""
    return type(obj).__module__.startswith("sqlalchemy.")


def _check_psycopg(dialect: Any) -> None:
    if dialect.name != "postgresql" or dialect.driver not in ("psycopg", "psycopg_async"):
        raise InvalidInputError(
            f"eskit needs SQLAlchemy's psycopg 3 driver (a postgresql+psycopg:// URL), "
            f"not {dialect.name}+{dialect.driver}"
        )


def is_engine(bind: object) -> bool:
    return is_sqlalchemy(bind) and isinstance(bind, _sqlalchemy().engine.Engine)


def driver_connection(bind: object) -> Any:
    """The psycopg connection under a SQLAlchemy ``Connection`` (begun, see the module doc)."""
    sa = _sqlalchemy()
    if not isinstance(bind, sa.engine.Connection):
        raise InvalidInputError(
            f"expected a SQLAlchemy Engine or Connection (session.connection() for a "
            f"Session), got {type(bind).__name__}"
        )
    _check_psycopg(bind.dialect)
    begin_if_idle(bind)
    return bind.connection.driver_connection


def begin_if_idle(bind: Any) -> None:
    if not bind.in_transaction():
        bind.begin()


def check_engine(engine: Any) -> None:
    _check_psycopg(engine.dialect)


@contextmanager
def engine_connection(engine: Any) -> Iterator[Any]:
    """A psycopg connection from the engine's pool, in autocommit mode while eskit has it.

    eskit's own appends are one statement each, committed by the server: the
    connection is switched to autocommit for the loan (a client-side flag, no
    round trip) and switched back before it returns to the pool, so the next
    SQLAlchemy user finds it as it was. A connection that broke is invalidated
    (the pool then replaces it).
    """
    import psycopg
    from psycopg.pq import TransactionStatus

    proxied = engine.raw_connection()
    try:
        conn = proxied.driver_connection
        was = conn.autocommit
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                conn.autocommit = was
            else:
                proxied.invalidate()
    except psycopg.OperationalError:
        proxied.invalidate()
        raise
    finally:
        proxied.close()


# -- asyncio: AsyncEngine and AsyncConnection (sqlalchemy.ext.asyncio) -----------------


def is_async_engine(bind: object) -> bool:
    if not is_sqlalchemy(bind):
        return False
    from sqlalchemy.ext.asyncio import AsyncEngine

    return isinstance(bind, AsyncEngine)


async def async_driver_connection(bind: Any) -> Any:
    """The psycopg ``AsyncConnection`` under a SQLAlchemy ``AsyncConnection``, begun."""
    _sqlalchemy()
    from sqlalchemy.ext.asyncio import AsyncConnection

    if not isinstance(bind, AsyncConnection):
        raise InvalidInputError(
            f"expected a SQLAlchemy AsyncEngine or AsyncConnection (await "
            f"session.connection() for an AsyncSession), got {type(bind).__name__}"
        )
    _check_psycopg(bind.dialect)
    if not bind.in_transaction():
        await bind.begin()  # see the module docstring
    raw = await bind.get_raw_connection()
    return raw.driver_connection


@asynccontextmanager
async def async_engine_connection(engine: Any) -> AsyncIterator[Any]:
    """As :func:`engine_connection`, for an ``AsyncEngine``."""
    from psycopg.pq import TransactionStatus

    async with engine.connect() as bind:
        raw = await bind.get_raw_connection()
        conn = raw.driver_connection
        was = conn.autocommit
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                await conn.set_autocommit(was)
            else:
                await bind.invalidate()
