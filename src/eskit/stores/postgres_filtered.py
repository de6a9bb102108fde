"""The PostgreSQL statements of filtered reads (see :mod:`eskit.stores.filtered`); no I/O.

Shared by the sync and async stores. As on SQLite, one branch per event type (on
``eskit_events_type (event_type, tx_id, seq)``) or, with prefixes only, one per
prefix (on ``eskit_events_category (stream_id COLLATE "C", tx_id, seq)``), each
stopping after ``limit`` rows; the union keeps the first ``limit`` in order.

**Visibility.** The plain ``read_all`` page is cut at the read horizon in the same
statement. A filtered page is instead bounded above by a head position taken
first (``head_position`` is itself computed below the horizon): every row at or
below it is committed or never will be, so the page sees each of them and never
skips an event that would become visible later at a lower position. Prefix
ranges compare under ``COLLATE "C"`` (code-point order, like Python and SQLite),
whatever the database's collation; never LIKE.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from eskit.stores.filtered import LAST_NAME, ReadFilter
from eskit.stores.partitions import partition_sql

__all__ = ["MAX_BRANCHES", "filtered_migration", "filtered_page_query"]

MAX_BRANCHES = 16
"""Beyond this many types (or prefixes), one scan in position order tests them all."""


def filtered_migration(schema: str) -> list[sql.Composed]:
    """6 -> 7: the indexes of filtered reads.

    Plain CREATE INDEX: it blocks appends while it builds (about a second per
    million events); CONCURRENTLY cannot run inside the migration's transaction.
    """
    events = sql.SQL("{}.eskit_events").format(sql.Identifier(schema))
    return [
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS eskit_events_type ON {} (event_type, tx_id, seq)"
        ).format(events),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS eskit_events_category"
            ' ON {} (stream_id COLLATE "C", tx_id, seq)'
        ).format(events),
    ]


_WINDOW = sql.SQL(
    "(tx_id, seq) > (%s::text::xid8, %s) AND (tx_id, seq) <= (%s::text::xid8, %s)"
)


def _ranges(wanted: ReadFilter, params: list[Any]) -> sql.Composable:
    tests: list[sql.Composable] = []
    for lo, hi in wanted.ranges:
        if hi is None:  # bounded all the same, so that the index range has an end
            tests.append(sql.SQL('(stream_id COLLATE "C" >= %s AND stream_id COLLATE "C" <= %s)'))
            params.extend((lo, LAST_NAME))
        else:
            tests.append(sql.SQL('(stream_id COLLATE "C" >= %s AND stream_id COLLATE "C" < %s)'))
            params.extend((lo, hi))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(tests))


def filtered_page_query(
    events: sql.Composable, cols: sql.Composable, shown: sql.Composable, wanted: ReadFilter,
    after: tuple[str, int], upto: tuple[str, int], limit: int,
) -> tuple[sql.Composed, list[Any]]:
    """The statement and parameters of one filtered page.

    ``events`` is the table, ``cols`` the column list decode_rows reads, ``shown``
    the test that hides deleted streams (empty before schema 6).
    """
    window = [*after, *upto]
    branches: list[tuple[sql.Composable, list[Any]]] = []
    types = sorted(wanted.types) if wanted.types is not None else None
    if types is not None and len(types) <= MAX_BRANCHES:
        for name in types:
            params: list[Any] = [name, *window]
            where: sql.Composable = sql.SQL("event_type = %s AND {}").format(_WINDOW)
            if wanted.prefixes is not None:
                where = sql.SQL("{} AND {}").format(where, _ranges(wanted, params))
            branches.append((where, params))
    elif types is None and wanted.prefixes is not None and len(wanted.prefixes) <= MAX_BRANCHES:
        for one in wanted.ranges:
            params = []
            where = _ranges(ReadFilter(None, (one[0],)), params)
            params.extend(window)
            branches.append((sql.SQL("{} AND {}").format(where, _WINDOW), params))
    else:  # many names: one scan in position order, every test per row
        params = [*window]
        where = _WINDOW
        if types is not None:
            where = sql.SQL("{} AND event_type = ANY(%s)").format(where)
            params.append(types)
        if wanted.prefixes is not None:
            where = sql.SQL("{} AND {}").format(where, _ranges(wanted, params))
        branches.append((where, params))
    if wanted.partitions is not None:  # the partitions' test ends every branch
        test, extra = partition_sql(wanted.partition_count, wanted.partitions, "%s", "%%")
        branches = [(sql.SQL("{} AND {}").format(where, sql.SQL(test)), [*params, *extra])
                    for where, params in branches]
    parts: list[sql.Composable] = []
    values: list[Any] = []
    for where, params in branches:
        parts.append(sql.SQL(
            "(SELECT * FROM {events} WHERE {where}{shown} ORDER BY tx_id, seq LIMIT %s)"
        ).format(events=events, where=where, shown=shown))
        values.extend((*params, limit))
    query = sql.SQL(
        "SELECT {cols} FROM ({union}) AS page ORDER BY tx_id, seq LIMIT %s"
    ).format(cols=cols, union=sql.SQL(" UNION ALL ").join(parts))
    return query, [*values, limit]
