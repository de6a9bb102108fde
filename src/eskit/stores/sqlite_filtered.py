"""The SQLite statements of filtered reads (see :mod:`eskit.stores.filtered`); no I/O.

One branch per event type (``event_type = ? AND position in (after, upto]``,
ordered by position, on the index :data:`MIGRATION` adds), or, with prefixes
only, one branch per prefix (a range of ``stream_id`` on the ``(stream_id,
version)`` key, then the top ``limit`` by position: that sorts the category's
rows in the window, cheap for a category that is a small part of the log). Each branch stops after
``limit`` rows, and the union keeps the first ``limit`` by position: a page reads
at most ``limit`` rows per branch, however large the log. Prefix ranges are
compared as BINARY text (UTF-8 bytes, in code-point order), never with LIKE,
whose ``%`` and ``_`` in ids and case folding would widen the match.
"""

from __future__ import annotations

from typing import Any

from eskit.stores.filtered import LAST_NAME, ReadFilter
from eskit.stores.partitions import partition_sql
from eskit.stores.sqlite_chain import add_column

__all__ = ["MIGRATION", "PARTITION_MIGRATION", "filtered_page_query"]

MIGRATION = [
    # 5 -> 6: filtered reads. The position (the rowid) ends every SQLite index entry,
    # so this serves "event_type = ? AND position > ? ORDER BY position" as one range.
    "CREATE INDEX IF NOT EXISTS eskit_events_type ON eskit_events (event_type, position)",
]

PARTITION_MIGRATION = [
    # 9 -> 10: each event's stream_hash (eskit.stores.partitions), so that a partitioned
    # projection reads only its partitions' rows. Old rows keep NULL (read by everyone,
    # sorted out in Python). No index: a partition is a share of every position range,
    # so the scan in position order tests it per row, without fetching other rows.
    add_column("eskit_events", "stream_hash", "INTEGER"),
]

MAX_BRANCHES = 16
"""Beyond this many types (or prefixes) one scan in position order tests them all:
a branch each would read ``limit`` rows per branch."""


def _ranges(wanted: ReadFilter, params: list[Any]) -> str:
    tests = []
    for lo, hi in wanted.ranges:
        if hi is None:
            tests.append("(stream_id >= ? AND stream_id <= ?)")
            params.extend((lo, LAST_NAME))
        else:
            tests.append("(stream_id >= ? AND stream_id < ?)")
            params.extend((lo, hi))
    return "(" + " OR ".join(tests) + ")"


def _in_partitions(wanted: ReadFilter, where: str, params: list[Any]) -> tuple[str, list[Any]]:
    """``where`` also testing the partitions (the test last, its parameters last)."""
    if wanted.partitions is None:
        return where, params
    test, extra = partition_sql(wanted.partition_count, wanted.partitions, "?")
    return f"{where} AND {test}", [*params, *extra]


def filtered_page_query(
    select: str, visible: str, wanted: ReadFilter, after: int, upto: int, limit: int
) -> tuple[str, list[Any]]:
    """The statement and parameters of one filtered page (``select`` gives the columns)."""
    branches: list[tuple[str, list[Any]]] = []
    types = sorted(wanted.types) if wanted.types is not None else None
    window = "position > ? AND position <= ?"
    if types is not None and len(types) <= MAX_BRANCHES:
        for name in types:
            params: list[Any] = [name, after, upto]
            where = f"event_type = ? AND {window}"
            if wanted.prefixes is not None:
                where += " AND " + _ranges(wanted, params)
            branches.append((where, params))
    elif types is None and wanted.prefixes is not None and len(wanted.prefixes) <= MAX_BRANCHES:
        for lo, hi in wanted.ranges:
            where = "stream_id >= ? AND stream_id " + ("<= ?" if hi is None else "< ?")
            params = [lo, LAST_NAME if hi is None else hi, after, upto]
            # Unary + keeps the planner off the rowid range, which (without ANALYZE
            # statistics) it prefers, and which would read every row of the window.
            branches.append((f"{where} AND +position > ? AND +position <= ?", params))
    else:  # many names: one scan in position order, every test per row
        params = [after, upto]
        where = window
        if types is not None:
            where += f" AND event_type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        if wanted.prefixes is not None:
            where += " AND " + _ranges(wanted, params)
        where, params = _in_partitions(wanted, where, params)
        params.append(limit)
        return f"{select} WHERE {where}{visible} ORDER BY position LIMIT ?", params
    branches = [_in_partitions(wanted, where, params) for where, params in branches]
    # LIMIT inside each branch (a subquery) bounds what each reads; a bare compound
    # SELECT would apply one LIMIT to the whole union only.
    parts: list[str] = []
    values: list[Any] = []
    for where, params in branches:
        parts.append(f"SELECT * FROM ({select} WHERE {where}{visible} ORDER BY position LIMIT ?)")
        values.extend((*params, limit))
    if len(parts) == 1:
        return parts[0], values
    # Column 2 of decode_rows's row is the position (column 1 is the tx part, 0).
    return " UNION ALL ".join(parts) + " ORDER BY 2 LIMIT ?", [*values, limit]
