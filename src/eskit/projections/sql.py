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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
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


Params = Sequence[Any] | Mapping[str, Any]

# The positional marker each driver defines (sqlite3 "qmark", psycopg "format").
_PLACEHOLDERS: dict[Dialect, str] = {"sqlite": "?", "postgres": "%s", "memory": "?"}


def _driver_params(params: Params | None) -> Any:
    if params is None:
        return None
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
        self.connection = connection
        self.generation = generation
        self._tables = frozenset(tables)

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
        if self.connection is None:
            raise InvalidInputError("the in-memory projection target has no SQL connection")
        values = _driver_params(params)
        if values is None and self.dialect != "postgres":
            values = ()  # sqlite3 takes no None
        cursor = self.connection.execute(query, values)
        return list(cursor.fetchall()) if cursor.description else []

    def executemany(self, query: str, rows: Iterable[Params]) -> None:
        """Run one statement once per row of parameters (same placeholders as :meth:`execute`)."""
        if self.connection is None:
            raise InvalidInputError("the in-memory projection target has no SQL connection")
        values = [_driver_params(r) for r in rows]
        if self.dialect == "postgres":
            with self.connection.cursor() as cursor:
                cursor.executemany(query, values)
        else:
            self.connection.executemany(query, values)

    def table(self, name: str) -> str:
        """The quoted physical name of read-model table ``name`` for this generation.

        Tables the projection lists in ``Projection.tables`` live in one physical
        table per generation (``name_g1``, ``name_g2``, ...) behind a view called
        ``name``; any other name is returned quoted and unchanged.
        """
        if name in self._tables:
            return quote_identifier(generation_table(name, self.generation))
        return quote_identifier(name)
