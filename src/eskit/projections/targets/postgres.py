"""PostgresTarget: read models, checkpoints and parked events in a PostgreSQL schema."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from eskit.errors import StoreUnavailableError
from eskit.projections.checkpoints import (
    ProjectionTarget,
)
from eskit.projections.sql import Dialect

__all__ = ["PostgresTarget"]


class PostgresTarget(ProjectionTarget):
    """Read models, checkpoints and parked events in a PostgreSQL schema.

    The target's connection uses ``search_path = schema, public``, so handlers'
    unqualified table names land in ``schema`` (eskit's default ``"eskit"``, where
    the events are). Needs the ``postgres`` extra. Handlers' ``tx.execute`` takes
    psycopg's placeholders (``%s``, ``%(name)s``).

    Reconnects: when its connection has dropped (the server terminated it or
    restarted), the next :meth:`transaction` opens a new one before it begins.
    A transaction whose connection drops while it runs, or at its ``COMMIT``, is
    never replayed (it may have committed): it raises
    :class:`~eskit.StoreUnavailableError` and the caller's next transaction
    starts afresh. For a projection that is exact: the batch and its checkpoint
    committed together or not at all, and the next batch starts from the stored
    checkpoint. In a child process after ``fork()`` the target connects afresh
    and leaves the parent's connection alone.
    """

    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, *, schema: str = "eskit") -> None:
        from eskit.stores.postgres_schema import check_schema_name

        self.schema = check_schema_name(schema)
        self._dsn = dsn
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self.connection = self._connect()
        self.setup()

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        from eskit.stores.postgres_connection import translate

        try:
            conn = psycopg.connect(self._dsn, autocommit=True)
        except psycopg.Error as exc:
            raise translate(exc, "cannot connect to PostgreSQL") from exc
        try:
            schema = sql.Identifier(self.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL("SET search_path TO {}, public").format(schema))
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc, "cannot connect to PostgreSQL") from exc
        return conn

    def _usable_connection(self) -> Any:
        """The connection, replaced first if it is closed, broken or the parent's."""
        if self._pid != os.getpid():
            # A forked child: never send on (or close) the parent's socket.
            self._pid = os.getpid()
            self.connection = self._connect()
        elif self.connection.closed or self.connection.broken:
            self.connection = self._connect()
        return self.connection

    def _own_sql(self, query: str) -> str:
        return query.replace("?", "%s")

    def lost_connection(self, error: BaseException) -> bool:
        from eskit.stores.postgres_connection import connection_lost

        # A handler may wrap the driver's error in its own: the connection tells.
        return (
            super().lost_connection(error) or connection_lost(error) or self.connection.broken
        )

    def _lock_suffix(self) -> str:
        # Why: two runners of one projection partition must not both handle a batch.
        # The row lock makes the second wait for the first's commit; it then reads
        # the moved checkpoint (READ COMMITTED re-reads the locked row).
        return " FOR UPDATE"

    def lock_setup(self, conn: Any, key: str) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog
        # (unique violation on pg_type): runners starting together take turns.
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"eskit-projection-setup:{self.schema}:{key}",),
        )

    def setup(self) -> None:
        with self.transaction() as conn:
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"eskit-projections-setup:{self.schema}",),
            )
            for statement in self._tables_sql("DOUBLE PRECISION"):
                conn.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        import psycopg

        from eskit.stores.postgres_connection import connection_lost, translate

        with self._lock, ExitStack() as stack:
            for attempt in (1, 2):
                conn = self._usable_connection()
                try:
                    # BEGIN is sent here: a connection found dead now has run nothing
                    # of this transaction, so one retry on a new connection is safe.
                    stack.enter_context(conn.transaction())
                    break
                except psycopg.Error as exc:
                    if attempt == 2 or not connection_lost(exc):
                        raise translate(exc) from exc
            try:
                with stack:
                    yield conn
            except psycopg.OperationalError as exc:
                # Not retried: the transaction may have committed before the drop.
                raise translate(exc) from exc
            except psycopg.Error as exc:
                if not conn.broken:
                    raise
                # The server ended the session with another class of error, e.g.
                # idle_in_transaction_session_timeout (25P03, a consumer group's guard).
                raise StoreUnavailableError(f"PostgreSQL ended the session: {exc}") from exc

    def close(self) -> None:
        if self._pid == os.getpid():  # a forked child leaves the parent's connection alone
            self.connection.close()
