"""The transaction handle a projection's handlers write through.

A :class:`Tx` wraps one open database transaction: a ``sqlite3`` connection
after ``BEGIN IMMEDIATE``, or a psycopg connection inside ``conn.transaction()``.
The runner stores the projection's checkpoint through the same handle, in the
same transaction, so a read-model write and the checkpoint commit together or
not at all.

SQL goes to the driver unchanged, so each target takes its driver's own
placeholders (DB-API ``paramstyle``):

* SQLite (``sqlite3``): ``?`` positional, ``:name`` with a mapping.
* PostgreSQL (psycopg): ``%s`` positional, ``%(name)s`` with a mapping; when
  parameters are passed, a literal ``%`` is written ``%%``. A ``?`` is plain text,
  so ``'why?'`` literals and jsonb's ``?``, ``?|`` and ``?&`` operators work.

SQL meant for both targets builds its markers from :attr:`Tx.placeholder`.
``tx.table("balances")`` is the physical name of a read-model table in the
generation being written (see blue/green rebuilds in ``docs/projections.md``).

**Deferred writes.** :meth:`Tx.write` is :meth:`Tx.execute` for a statement whose
rows the handler does not need. In a runner's batch on PostgreSQL it is queued and
sent in psycopg's pipeline mode (see :mod:`eskit.projections.write_queue`): a chunk
at a time without waiting for results, then one ``Sync`` before the checkpoint, so
the writes of a batch of 500 events cost about one round trip instead of 500.
Guaranteed: queued writes reach the server in the order they were written, and
before anything that could observe them (the next :meth:`Tx.execute` or
:meth:`Tx.executemany`, any use of :attr:`Tx.connection`, the checkpoint), so a
handler reads its own writes and the batch's earlier ones; they commit with the
checkpoint or not at all; a failing one fails the batch even if a handler catches
its error (PostgreSQL has aborted the transaction by then anyway). Not guaranteed:
*where* the error is raised. A queued write that fails
raises at the next flush, possibly inside a later event's handler, so a handler
cannot catch its own statement's error (use :meth:`Tx.execute` for a statement
whose failure it handles). The runner blames the events whose writes that flush
carried and goes one event at a time up to them, as after any handler failure,
so the event retried, parked or named is the one whose write failed. Everywhere
else (SQLite, where a statement costs no round trip; a ``Tx`` you make yourself)
:meth:`Tx.write` runs at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from eskit.errors import InvalidInputError
from eskit.projections.write_queue import WriteFailure, WriteQueue

__all__ = ["Dialect", "Tx", "quote_identifier"]

Dialect = Literal["sqlite", "postgres", "memory"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}\Z")


def quote_identifier(name: str) -> str:
    """``name`` checked (letters, digits, underscores) and double-quoted for SQL."""
    if type(name) is not str or not _IDENTIFIER.match(name):
        raise InvalidInputError(
            f"table names must be 1-51 letters, digits or underscores, not {name!r}"
        )
    return f'"{name}"'


def generation_table(name: str, generation: int) -> str:
    """The physical table behind the read-model table ``name`` in one generation."""
    quote_identifier(name)
    return f"{name}_g{generation}"


Params = Sequence[Any] | Mapping[str, Any]

# The positional marker each driver defines (sqlite3 "qmark", psycopg "format").
_PLACEHOLDERS: dict[Dialect, str] = {"sqlite": "?", "postgres": "%s", "memory": "?"}


def _driver_params(params: Params | None) -> Any:
    if params is None or type(params) is tuple or type(params) is dict:
        return params  # the common cases first: a handler's write costs this per event
    if isinstance(params, Mapping):
        return params
    if isinstance(params, (str, bytes)):
        raise InvalidInputError("params must be a sequence or a mapping, not a string")
    return tuple(params)


class Tx:
    """One open transaction, shared by the handlers and the checkpoint.

    ``connection`` is the raw driver connection (``None`` for the in-memory
    target) for anything the handle does not cover. Never commit or roll back
    through it: the runner owns the transaction.
    """

    def __init__(
        self,
        dialect: Dialect,
        connection: Any,
        *,
        generation: int = 1,
        tables: Iterable[str] = (),
    ) -> None:
        self.dialect: Dialect = dialect
        self._connection = connection
        self.generation = generation
        self._tables = frozenset(tables)
        self._queue: WriteQueue | None = None
        self._writer = 0
        """Index in its batch of the event being handled (whom a failed write blames)."""

    @contextmanager
    def _deferring(self) -> Iterator[Tx]:
        """Queue :meth:`write` inside the block (PostgreSQL only; internal, for the runner).

        The block should end with :meth:`flush` (to blame a failure on the right
        event); if it does not, leaving it flushes. Leaving it by an exception drops
        what is queued and leaves pipeline mode, so the transaction can roll back.
        """
        if self.dialect != "postgres" or self._connection is None:
            yield self
            return
        self._queue = WriteQueue(self._connection)
        try:
            yield self
            self._queue.flush()
        except BaseException:
            self._queue.abandon()
            raise
        finally:
            self._queue = None

    @property
    def failure(self) -> WriteFailure | None:
        """Set when sending queued writes failed: the transaction is lost (internal)."""
        return None if self._queue is None else self._queue.failure

    @property
    def connection(self) -> Any:
        """The raw driver connection; queued writes are sent first, so it sees them."""
        if self._queue is not None and self._queue.open:
            self.flush()
        return self._connection

    @property
    def placeholder(self) -> str:
        """The driver's positional marker: ``"?"`` on SQLite, ``"%s"`` on PostgreSQL."""
        return _PLACEHOLDERS[self.dialect]

    def execute(self, query: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; return its rows (empty for statements without rows).

        ``query`` and ``params`` reach the driver unchanged: use the target's own
        placeholders (see the module docstring). With ``params=None`` psycopg sends
        the text as it is, so a ``%`` needs no doubling.
        """
        values = self._checked(params)
        if values is None and self.dialect != "postgres":
            values = ()  # sqlite3 takes no None
        if self._queue is not None and self._queue.open:
            self.flush()
        cursor = self._connection.execute(query, values)
        return list(cursor.fetchall()) if cursor.description else []

    def executemany(self, query: str, rows: Iterable[Params]) -> None:
        """Run one statement once per row of parameters (same placeholders as :meth:`execute`)."""
        self._checked(None)
        values = [_driver_params(r) for r in rows]
        if self._queue is not None and self._queue.open:
            self.flush()
        if self.dialect == "postgres":
            with self._connection.cursor() as cursor:
                cursor.executemany(query, values)
        else:
            self._connection.executemany(query, values)

    def write(self, query: str, params: Params | None = None) -> None:
        """Run a statement whose rows are not needed (an insert, an update, an upsert).

        In a runner's batch on PostgreSQL it is queued and sent with the batch's other
        writes in one pipeline: same placeholders and the same effect as
        :meth:`execute`, in the same order, committed with the checkpoint or not at
        all, but an error it causes is raised when the queue is sent (at the next
        :meth:`execute`, :meth:`executemany`, use of :attr:`connection`, or before the
        checkpoint), not here. Elsewhere it runs at once. Bad ``params`` are refused
        here either way. See the module docstring.
        """
        values = self._checked(params)
        if self._queue is None:
            self.execute(query, params)
        else:
            self._queue.add(self._writer, query, values)

    def flush(self) -> None:
        """Send the queued :meth:`write` statements now, in order, and wait for them.

        Raises the first error among them; the transaction is then lost (PostgreSQL
        aborts it) and rolls back. Nothing to do outside a runner's batch.
        """
        if self._queue is not None:
            self._queue.flush()

    def _checked(self, params: Params | None) -> Any:
        if self._connection is None:
            raise InvalidInputError("the in-memory projection target has no SQL connection")
        return _driver_params(params)

    def table(self, name: str) -> str:
        """The quoted physical name of read-model table ``name`` for this generation.

        Tables the projection lists in ``Projection.tables`` live in one physical
        table per generation (``name_g1``, ``name_g2``, ...) behind a view called
        ``name``; any other name is returned quoted and unchanged.
        """
        if name in self._tables:
            return quote_identifier(generation_table(name, self.generation))
        return quote_identifier(name)


def create_views(tx: Tx, tables: Iterable[str], generation: int) -> None:
    """Point the view of each of a projection's ``tables`` at the given generation's table."""
    if tx.dialect == "memory":
        return
    for table in tables:
        physical = generation_table(table, generation)
        tx.execute(f'DROP VIEW IF EXISTS "{table}"')
        tx.execute(f'CREATE VIEW "{table}" AS SELECT * FROM "{physical}"')
