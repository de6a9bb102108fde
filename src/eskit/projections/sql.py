"""The transaction handle a projection's handlers write through.

A :class:`Tx` wraps one open database transaction: a ``sqlite3`` connection
after ``BEGIN IMMEDIATE``, or a psycopg connection inside ``conn.transaction()``.
The runner stores the projection's checkpoint through the same handle, in the
same transaction, so a read-model write and the checkpoint commit together or
not at all.

Handlers write SQL with ``?`` placeholders on both backends; the handle turns
them into psycopg's ``%s`` (and doubles a literal ``%``). Pass every value as a
parameter: a ``?`` inside a quoted SQL literal would be taken for a placeholder.
``tx.table("balances")`` is the physical name of a read-model table in the
generation being written (see blue/green rebuilds in ``docs/projections.md``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from eskit.errors import InvalidInputError

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


def to_pyformat(query: str) -> str:
    """``?`` placeholders as psycopg's ``%s``; a literal ``%`` doubled."""
    return query.replace("%", "%%").replace("?", "%s")


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
        self.connection = connection
        self.generation = generation
        self._tables = frozenset(tables)

    def execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; return its rows (empty for statements without rows)."""
        if self.connection is None:
            raise InvalidInputError("the in-memory projection target has no SQL connection")
        if self.dialect == "postgres":
            cursor = self.connection.execute(to_pyformat(query), tuple(params))
            return list(cursor.fetchall()) if cursor.description else []
        cursor = self.connection.execute(query, tuple(params))
        return list(cursor.fetchall()) if cursor.description else []

    def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters."""
        if self.connection is None:
            raise InvalidInputError("the in-memory projection target has no SQL connection")
        if self.dialect == "postgres":
            with self.connection.cursor() as cursor:
                cursor.executemany(to_pyformat(query), [tuple(r) for r in rows])
        else:
            self.connection.executemany(query, [tuple(r) for r in rows])

    def table(self, name: str) -> str:
        """The quoted physical name of read-model table ``name`` for this generation.

        Tables the projection lists in ``Projection.tables`` live in one physical
        table per generation (``name_g1``, ``name_g2``, ...) behind a view called
        ``name``; any other name is returned quoted and unchanged.
        """
        if name in self._tables:
            return quote_identifier(generation_table(name, self.generation))
        return quote_identifier(name)
