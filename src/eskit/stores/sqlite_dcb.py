"""DCB on SQLite: the tags table, query SQL and the condition check (see :mod:`eskit.dcb`).

Why the check is atomic: SQLite has one writer, and every append is one
``BEGIN IMMEDIATE`` transaction that holds the write lock *before* it looks; the
condition is checked inside it, just before the insert, so no other append can
come between the check and the insert. Positions follow commit order, so a read
that takes the head first and then the events up to it sees every event at or
before that head (nothing can later appear below it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from eskit.dcb import Query, QueryItem, set_tags
from eskit.events import Event
from eskit.stores.model import PendingEvent

__all__ = ["MIGRATION"]

# The tags of each event, one row per tag, in the append's transaction. Keyed by
# (tag, position): a tag's events after a position are one index range. ``ord`` keeps
# the order the tags were given in. Not append-only by trigger: a hard delete of a
# stream must take its events' tags with it (they may name people), which the
# trigger below does in the same statement. IF NOT EXISTS: a file taken back to an
# older schema by hand (the upgrade tests do) may still hold them.
MIGRATION = [
    """CREATE TABLE IF NOT EXISTS eskit_event_tags (
           tag      TEXT    NOT NULL,
           position INTEGER NOT NULL,
           ord      INTEGER NOT NULL,
           event_type TEXT  NOT NULL,  -- the event's, so that types filter without a join
           PRIMARY KEY (tag, position)
       ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS eskit_event_tags_position ON eskit_event_tags (position)",
    """CREATE TRIGGER IF NOT EXISTS eskit_event_tags_removed AFTER DELETE ON eskit_events
       BEGIN DELETE FROM eskit_event_tags WHERE position = OLD.position; END""",
]

_INSERT_TAGS = (
    "INSERT INTO eskit_event_tags (tag, position, ord, event_type) VALUES (?, ?, ?, ?)"
)


def insert_tags(conn: sqlite3.Connection, start: int, batch: Sequence[PendingEvent]) -> None:
    """Store the batch's tags; its events are at positions ``start + 1, ...``."""
    rows = [
        (tag, start + i + 1, n, p.event_type)
        for i, p in enumerate(batch) for n, tag in enumerate(p.tags)
    ]
    if rows:
        conn.executemany(_INSERT_TAGS, rows)


class _Params(dict[str, Any]):
    """Named parameters (sqlite3 refuses to mix ``?`` with ``:after``)."""

    def bind(self, value: Any) -> str:
        name = f"p{len(self)}"
        self[name] = value
        return f":{name}"


def _item_sql(item: QueryItem, params: _Params) -> str:
    """The positions after ``:after`` of the events ``item`` matches."""
    types = ""
    if item.types:
        alias = "t" if item.tags else "e"
        types = f" AND {alias}.event_type IN ({', '.join(params.bind(t) for t in item.types)})"
    if not item.tags:
        return f"SELECT e.position FROM eskit_events AS e WHERE e.position > :after{types}"
    first, *rest = item.tags
    sql = (
        "SELECT t.position FROM eskit_event_tags AS t "
        f"WHERE t.tag = {params.bind(first)} AND t.position > :after{types}"
    )
    if rest:
        # One count over the event's own tags (one index range), not one EXISTS a tag.
        marks = ", ".join(params.bind(tag) for tag in rest)
        sql += (
            " AND (SELECT count(*) FROM eskit_event_tags AS o"
            f" WHERE o.position = t.position AND o.tag IN ({marks})) = {len(rest)}"
        )
    return sql


def matching_sql(query: Query, visible: str) -> tuple[str, dict[str, Any]]:
    """``SELECT position`` of the visible events matching ``query`` after ``:after``
    (a parameter the caller adds), in no particular order."""
    params = _Params()
    union = " UNION ".join(_item_sql(item, params) for item in query.items)
    return f"SELECT position FROM eskit_events WHERE position IN ({union}){visible}", params


def condition_holds(
    conn: sqlite3.Connection, query: Query, after: int, visible: str,
    own: tuple[int, int] | None = None,
) -> bool:
    """Whether no visible event matching ``query`` lies after ``after`` (in the writer's
    open transaction), leaving out the positions ``own`` (first, last) if given."""
    sql, params = matching_sql(query, visible)
    if own is not None:
        sql += " AND position NOT BETWEEN :own_first AND :own_last"
        params.update(own_first=own[0], own_last=own[1])
    row = conn.execute(f"{sql} LIMIT 1", {**params, "after": after}).fetchone()
    return row is None


_RANGE_TAGS = (
    "SELECT position, tag FROM eskit_event_tags WHERE position BETWEEN ? AND ?"
    " ORDER BY position, ord"
)


_STREAM_TAGS = (
    "SELECT t.position, t.tag FROM eskit_event_tags AS t WHERE t.position BETWEEN ? AND ?"
    " AND (SELECT e.stream_id FROM eskit_events AS e WHERE e.position = t.position) = ?"
    " ORDER BY t.position, t.ord"
)


def attach_range_tags(
    conn: sqlite3.Connection, events: list[Event], stream: str | None = None,
    types: Collection[str] | None = None,
) -> None:
    """Fill in the tags of a page of events: ``read_all``'s (in position order), a
    stream's (``stream``: its key) or a filtered page's (``types``: the stored types).

    One range of the position index, however long the page: on a store (or a
    stretch of one) without tags it finds nothing and costs one index probe
    (measured: 4 us for 1,000 events, where looking up their positions took 130 us).
    ``stream`` and ``types`` narrow it so that the tags of other events in the
    range are mostly not read; any that are find no event of the page. Tags are
    written with their event and removed only with it, so a statement after the
    page's sees every tag of the page's events (or, after a hard delete in
    between, none: the event is gone too).
    """
    if not events:
        return
    # In order of position, or (a stream read backwards) the reverse: one writer gives
    # a stream's events increasing versions and positions together.
    lo, hi = sorted((events[0].position, events[-1].position))
    if stream is not None:
        rows = conn.execute(_STREAM_TAGS, (lo, hi, stream)).fetchall()
    elif types is not None:
        marks = ", ".join("?" * len(types))
        rows = conn.execute(
            "SELECT position, tag FROM eskit_event_tags WHERE position BETWEEN ? AND ?"
            f" AND event_type IN ({marks}) ORDER BY position, ord", (lo, hi, *types),
        ).fetchall()
    else:
        rows = conn.execute(_RANGE_TAGS, (lo, hi)).fetchall()
    if rows:
        _give(events, rows)


def _give(events: list[Event], rows: list[Any]) -> None:
    by_position: dict[int, list[str]] = {}
    for position, tag in rows:
        by_position.setdefault(position, []).append(tag)
    for event in events:
        tags = by_position.get(event.position)
        if tags:
            set_tags(event, tuple(tags))


def attach_tags(conn: sqlite3.Connection, events: list[Event]) -> None:
    """Fill in the tags of events just decoded (any positions, any order)."""
    positions = [e.position for e in events]
    rows: list[Any] = []
    for i in range(0, len(positions), 500):
        chunk = positions[i : i + 500]
        rows += conn.execute(
            "SELECT position, tag FROM eskit_event_tags "
            f"WHERE position IN ({', '.join('?' * len(chunk))}) ORDER BY position, ord",
            chunk,
        ).fetchall()
    if rows:
        _give(events, rows)
