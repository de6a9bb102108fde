"""DCB on PostgreSQL: the tags table, the locking append and the condition check.

SQL only, no I/O (shared by the sync and async front ends); see :mod:`eskit.dcb`
for the semantics and docs/consistency.md for the proof.

**Why a conditional append cannot miss a concurrent event, without serialising
writers.** Every append takes, shared, a transaction-scoped advisory lock on each
*lock key* of its events (:func:`eskit.dcb.event_lock_keys`: the (type, tag),
(type, any), (any, tag) and (any, any) keys), in the statement that inserts them
and before the insert (``keys`` feeds ``head``, which feeds the insert). A
conditional append first takes, exclusive, the key each item of its query names
(:func:`eskit.dcb.query_lock_keys`): every event the query can match holds one of
them. That waits for every append in flight whose events the query could match,
and holds new ones back until it commits. Only then, in a later statement (READ
COMMITTED: a newer snapshot, which sees every one of them committed), does it look
for a matching event after ``after``, and then it inserts. Two plain appends never
wait for each other (shared with shared); two conditional appends wait only when a
key is shared, which means their queries or events may overlap (or, rarely, two
keys' 64-bit hashes collide: a wait, never a wrong answer). Keys are taken in one
sorted order, after the stream's lock, as every append takes them: no deadlock.

**Why ``after`` is sound with the (transaction id, sequence) order.** A read
returns every matching event at or before its position P; any event it did not
see lies after P, where the check looks without any horizon (it must see every
committed row). P is found in up to three statements, each with a newer snapshot:

1. P = the newest position the snapshot sees, and whether a transaction then in
   progress has a lower transaction id than P's. If none has, every event at or
   before P is committed already.
2. Else: does any transaction hold (or await) a lock key of the query? A
   transaction that can still add a matching event below P got its id before
   statement 1, so it has held its events' keys (taken before the id) since then,
   and holds them until it ends. If nobody holds the query's keys, every such
   transaction has ended before this statement, and statement 3 sees its events.
   If somebody does, P falls back to the head below the read horizon (see
   :mod:`eskit.stores.postgres_schema`): no event can later become visible at or
   before it.
3. The matching events at or before P.

So a read is not held back by appends in flight that its query cannot match
(the horizon alone would hold it back behind any of them, and the condition would
then fail on events it never needed to see).

Not covered: an append through ``in_transaction`` that is a *late* append (its
transaction wrote elsewhere first) is stamped with a position computed before it
waits for the keys; a conditional append there must be its transaction's first write
(:mod:`eskit.stores.postgres_tx_conditions`).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any

try:
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the postgres extra is checked by its users
    from eskit.errors import MissingExtraError

    raise MissingExtraError("postgres", "eskit's PostgreSQL support", name=exc.name) from exc

from eskit.dcb import (
    AppendCondition,
    Query,
    QueryItem,
    event_lock_keys,
    lock_plan,
    query_lock_keys,
    set_tags,
)
from eskit.events import Event, StreamId
from eskit.stores import postgres_chain
from eskit.stores.model import PendingEvent
from eskit.stores.postgres_insert import insert_batch
from eskit.stores.rows import decode_tagged

__all__ = ["DCB_SCHEMA_VERSION", "dcb_migration"]

DCB_SCHEMA_VERSION = 9
"""The first PostgreSQL schema version with the tags table (its migration is 8 -> 9)."""


def dcb_migration(schema: str) -> list[sql.Composed]:
    """The statements of migration 8 -> 9 for ``schema`` (already validated).

    Idempotent, like the migrations before it, so a schema whose recorded version
    was set back (by hand, or by a test) migrates again cleanly."""
    s = sql.Identifier(schema)
    events = sql.SQL("{}.eskit_events").format(s)
    tags = sql.SQL("{}.eskit_event_tags").format(s)
    return [
        # One row per tag of an event; (tag, tx_id, seq) makes a tag's events after a
        # position one index range. ``ord`` keeps the order the tags were given in; the
        # event's type is copied so that an item's types filter without a join (a join
        # to the events table was planned as a scan of every event: 60 ms at 20,000).
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {tags} (
                   tag        text   NOT NULL,
                   tx_id      xid8   NOT NULL,
                   seq        bigint NOT NULL,
                   ord        int    NOT NULL,
                   event_type text   NOT NULL,
                   CONSTRAINT eskit_event_tags_key PRIMARY KEY (tag, tx_id, seq)
               )"""
        ).format(tags=tags),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS eskit_event_tags_event ON {} (tx_id, seq)"
        ).format(tags),
        # A hard delete of a stream takes its events' tags (they may name people).
        sql.SQL(
            """CREATE OR REPLACE FUNCTION {schema}.eskit_remove_tags() RETURNS trigger
               LANGUAGE plpgsql AS $$
               BEGIN
                   DELETE FROM {tags} WHERE tx_id = OLD.tx_id AND seq = OLD.seq;
                   RETURN NULL;
               END $$"""
        ).format(schema=s, tags=tags),
        sql.SQL("DROP TRIGGER IF EXISTS eskit_events_remove_tags ON {}").format(events),
        sql.SQL(
            """CREATE TRIGGER eskit_events_remove_tags AFTER DELETE ON {events}
               FOR EACH ROW EXECUTE FUNCTION {schema}.eskit_remove_tags()"""
        ).format(events=events, schema=s),
    ]


def append_statement(
    schema: str, stream_lock: sql.Composable, check: sql.Composable | None = None,
    *, chained: bool = False, hashed: bool = False,
) -> sql.Composed:
    """Schema 9's append: schema 6's, plus the event keys' shared locks (before the
    insert) and the tags (in the same statement: one round trip, still idempotent).

    With ``check`` (a ``SELECT 1 ... LIMIT 1`` of the events a condition forbids),
    a conditional append's insert: nothing is inserted if ``check`` finds a row, and
    every row returned starts with that finding. Its snapshot is the statement's,
    taken after the locks of the statement before (see the module docstring).
    ``chained`` (schema 11 on): each event's chain hash too (eskit.stores.postgres_chain);
    ``hashed`` (schema 12 on): the ``stream_hash`` (eskit.stores.partitions).
    """
    s = sql.Identifier(schema)
    events = sql.SQL("{}.eskit_events").format(s)
    blocked: sql.Composable = sql.SQL("")
    where, first, source = sql.SQL(""), sql.SQL(""), sql.SQL("head")
    if check is not None:
        blocked = sql.SQL("blocked AS (SELECT EXISTS ({}) AS b), ").format(check)
        where = sql.SQL(", blocked WHERE NOT blocked.b")
        first = sql.SQL("blocked.b, ")
        source = sql.SQL("blocked LEFT JOIN head ON true")
    return sql.SQL(
        """WITH {recursive}{blocked}turn AS (
               SELECT pg_advisory_xact_lock_shared({stream_lock})
           ), keys AS (
               -- The stream's lock first, then the keys in sorted order: the order
               -- every append and conditional append takes them in.
               SELECT (SELECT count(*) FROM (
                   SELECT pg_advisory_xact_lock_shared(k.hi, k.lo)
                   FROM unnest(%(key_hi)b::int[], %(key_lo)b::int[]) WITH ORDINALITY
                        AS k(hi, lo, ord)
                   ORDER BY k.ord) AS locked) AS n
               FROM turn
           ), head AS (
               SELECT (SELECT coalesce(max(version), 0) FROM {events}
                       WHERE stream_id = %(stream)s) AS v{head_hash}
               FROM keys{where}
           ), {chain}ins AS (
               {insert}
           ), tagged AS (
               INSERT INTO {tags} (tag, tx_id, seq, ord, event_type)
               SELECT g.tag, ins.tx_id, ins.seq, g.n, ins.event_type
               FROM head
               JOIN unnest(%(tag_event)b::int[], %(tag_name)b::text[], %(tag_ord)b::int[])
                    AS g(ev, tag, n) ON true
               JOIN ins ON ins.version = head.v + g.ev
           )
           SELECT {first}head.v, ins.version, ins.tx_id::text AS tx, ins.seq
           FROM {source} LEFT JOIN ins ON true
           ORDER BY ins.version"""
    ).format(
        blocked=blocked, where=where, first=first, source=source, stream_lock=stream_lock,
        insert=insert_batch(
            events, sql.SQL(" AND NOT EXISTS (SELECT FROM {} WHERE stream_id = %(stream)s)")
            .format(sql.SQL("{}.eskit_deleted_streams").format(s)),
            sql.SQL("version, tx_id, seq, event_type"), chained=chained, hashed=hashed,
        ),
        recursive=sql.SQL("RECURSIVE " if chained else ""),
        head_hash=postgres_chain.head_hash(events) if chained else sql.SQL(""),
        chain=postgres_chain.CHAIN_CTE if chained else sql.SQL(""),
        events=events,
        tags=sql.SQL("{}.eskit_event_tags").format(s),
    )


def stream_lock_key(schema: str) -> sql.Composed:
    """The stream's advisory lock key (as ``Statements.lock_stream`` takes it)."""
    return sql.SQL("hashtextextended({} || %(stream)s, 0)").format(
        sql.Literal(f"eskit-append:{schema}:")
    )


def lock_statement(stream_lock: sql.Composable) -> sql.Composed:
    """A conditional append's first statement: the stream's lock exclusive (no race
    for its next version), then every key, sorted, each in its mode."""
    return sql.SQL(
        """SELECT pg_advisory_xact_lock({stream_lock}),
                  (SELECT count(*) FROM (
                       SELECT CASE WHEN k.x THEN pg_advisory_xact_lock(k.hi, k.lo)::text
                                   ELSE pg_advisory_xact_lock_shared(k.hi, k.lo)::text END
                       FROM unnest(%(lock_hi)b::int[], %(lock_lo)b::int[], %(lock_x)b::bool[])
                            WITH ORDINALITY AS k(hi, lo, x, ord)
                       ORDER BY k.ord) AS locked)"""
    ).format(stream_lock=stream_lock)


def dcb_params(batch: Sequence[PendingEvent]) -> dict[str, Any]:
    """The append statement's DCB parameters: the events' keys and their tags."""
    hi, lo, _ = lock_plan(event_lock_keys((p.event_type, p.tags) for p in batch), set())
    tag_event: list[int] = []
    tag_name: list[str] = []
    tag_ord: list[int] = []
    for i, p in enumerate(batch):
        for n, tag in enumerate(p.tags):
            tag_event.append(i + 1)
            tag_name.append(tag)
            tag_ord.append(n)
    return {"key_hi": hi, "key_lo": lo, "tag_event": tag_event, "tag_name": tag_name,
            "tag_ord": tag_ord}


def condition_params(
    batch: Sequence[PendingEvent], condition: AppendCondition
) -> dict[str, Any]:
    hi, lo, x = lock_plan(
        event_lock_keys((p.event_type, p.tags) for p in batch),
        query_lock_keys(condition.fail_if_events_match),
    )
    return {"lock_hi": hi, "lock_lo": lo, "lock_x": x}


class _Params(dict[str, Any]):
    def bind(self, value: Any) -> sql.Placeholder:
        name = f"q{len(self)}"
        self[name] = value
        return sql.Placeholder(name)


def _item_sql(schema: str, item: QueryItem, params: _Params) -> sql.Composed:
    """``(tx_id, seq)`` of the events ``item`` matches after ``%(after_tx)s, %(after_seq)s``."""
    s = sql.Identifier(schema)
    types: sql.Composable = sql.SQL("")
    if item.types:
        types = sql.SQL(" AND {}.event_type = ANY({}::text[])").format(
            sql.Identifier("e" if not item.tags else "t"), params.bind(list(item.types))
        )
    after = sql.SQL("(%(after_tx)s::text::xid8, %(after_seq)s)")
    if not item.tags:
        return sql.SQL(
            "SELECT e.tx_id, e.seq FROM {}.eskit_events AS e WHERE (e.tx_id, e.seq) > {}{}"
        ).format(s, after, types)
    first, *rest = item.tags
    query = sql.SQL(
        "SELECT t.tx_id, t.seq FROM {s}.eskit_event_tags AS t"
        " WHERE t.tag = {first} AND (t.tx_id, t.seq) > {after}{types}"
    ).format(s=s, first=params.bind(first), after=after, types=types)
    if rest:
        # One correlated count over the event's own tags, not one EXISTS per tag: with
        # 31 EXISTS the planner alone took seconds (measured: 12 s for 32 tags).
        query = sql.SQL(
            "{} AND (SELECT count(*) FROM {}.eskit_event_tags AS o"
            " WHERE o.tx_id = t.tx_id AND o.seq = t.seq AND o.tag = ANY({}::text[])) = {}"
        ).format(query, s, params.bind(list(rest)), sql.Literal(len(rest)))
    return query


def matching(schema: str, query: Query, visible: sql.Composable) -> tuple[sql.Composed, _Params]:
    """``WHERE`` text selecting the visible events (alias ``eskit_events``) matching
    ``query`` after ``%(after_tx)s, %(after_seq)s`` (parameters the caller adds)."""
    params = _Params()
    union = sql.SQL(" UNION ").join(_item_sql(schema, i, params) for i in query.items)
    return sql.SQL("(tx_id, seq) IN ({}){}").format(union, visible), params


def check_statement(schema: str, query: Query, visible: sql.Composable
                    ) -> tuple[sql.Composed, _Params]:
    where, params = matching(schema, query, visible)
    return sql.SQL("SELECT 1 FROM {}.eskit_events WHERE {} LIMIT 1").format(
        sql.Identifier(schema), where
    ), params


def read_statement(
    schema: str, query: Query, visible: sql.Composable, columns: sql.Composable,
    limit: int | None,
) -> tuple[sql.Composed, _Params]:
    where, params = matching(schema, query, visible)
    statement = sql.SQL(
        "SELECT {cols} FROM {s}.eskit_events WHERE {where}"
        " AND (tx_id, seq) <= (%(head_tx)s::text::xid8, %(head_seq)s) ORDER BY tx_id, seq"
    ).format(cols=columns, s=sql.Identifier(schema), where=where)
    if limit is not None:
        statement = sql.SQL("{} LIMIT %(limit)s").format(statement)
    return statement, params


@functools.lru_cache(maxsize=256)
def range_tags_statement(schema: str, stream: bool, types: bool) -> sql.Composed:
    """The tags of the events from one position to another: one range of the
    ``(tx_id, seq)`` index, empty and cheap where nothing has tags. ``stream``: only
    the events of one stream (a probe of the events' key per tag found); ``types``:
    only events of those types (the tags table holds each event's type)."""
    s = sql.Identifier(schema)
    statement = sql.SQL(
        "SELECT t.tx_id::text::bigint, t.seq, t.tag FROM {}.eskit_event_tags AS t"
        " WHERE (t.tx_id, t.seq) >= (%(lo_tx)s::text::xid8, %(lo_seq)s)"
        " AND (t.tx_id, t.seq) <= (%(hi_tx)s::text::xid8, %(hi_seq)s)"
    ).format(s)
    if stream:
        # A scalar subquery, run per tag found (none where nothing has tags): as an
        # EXISTS the planner could hash the stream's events first (measured: 1.5 ms).
        statement = sql.SQL(
            "{} AND (SELECT e.stream_id FROM {}.eskit_events AS e"
            " WHERE e.tx_id = t.tx_id AND e.seq = t.seq) = %(stream)s"
        ).format(statement, s)
    if types:
        statement = sql.SQL("{} AND t.event_type = ANY(%(types)s::text[])").format(statement)
    return sql.SQL("{} ORDER BY t.tx_id, t.seq, t.ord").format(statement)


def page_tags(
    schema: str, rows: Sequence[Any], *, stream: str | None = None,
    types: Collection[str] | None = None,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement and parameters that read the tags of event rows (EVENT_COLUMNS).

    The rows' position range, narrowed to ``stream`` (a ``read_stream`` page) or to
    ``types`` (a filtered page) so that tags of other events in the range are
    mostly not fetched; any that are find no event of the page and are ignored. A
    range costs about a tenth of a millisecond where nothing has tags (measured:
    0.13 ms for 1,000 rows), where sending the rows' 1,000 positions cost 1.6 ms.
    Tags are written with their event and removed only with it: a later statement
    sees every tag of the rows' events (or none, of an event hard-deleted since).
    """
    if stream is None:  # in position order
        lo, hi = rows[0], rows[-1]
    else:  # a stream's: no order of positions is assumed (rows start (tx, seq), unique)
        lo, hi = min(rows), max(rows)
    params: dict[str, Any] = {"lo_tx": str(lo[0]), "lo_seq": lo[1], "hi_tx": str(hi[0]),
                              "hi_seq": hi[1], "stream": stream}
    if types is not None:
        params["types"] = list(types)
    return range_tags_statement(schema, stream is not None, types is not None), params


@functools.lru_cache(maxsize=256)
def tags_statement(schema: str) -> sql.Composed:
    return sql.SQL(
        "SELECT tx_id::text::bigint, seq, tag FROM {}.eskit_event_tags"
        " WHERE (tx_id, seq) IN (SELECT * FROM unnest(%s::text[]::xid8[], %s::bigint[]))"
        " ORDER BY tx_id, seq, ord"
    ).format(sql.Identifier(schema))


def decoded_tagged_rows(rows: Sequence[Any], stream_id: StreamId | None = None) -> list[Event]:
    """Events from rows that end with their tags (``read_stream(..., tagged=True)``)."""
    tags = {int(row[0]) << 64 | row[1]: row[-1] for row in rows if row[-1]}

    def attach(events: Sequence[Any]) -> None:
        for event in events:
            if found := tags.get(event.position):
                set_tags(event, tuple(found))

    return decode_tagged([row[:-1] for row in rows], stream_id, attach if tags else None)


def attach_tag_rows(events: Sequence[Event], tag_rows: Sequence[Any]) -> None:
    """Give events just decoded their tags from ``tags_statement`` rows (tx, seq, tag)."""
    by_position: dict[int, list[str]] = {}
    for tx, seq, tag in tag_rows:
        by_position.setdefault(int(tx) << 64 | seq, []).append(tag)
    for event in events:
        if tags := by_position.get(event.position):
            set_tags(event, tuple(tags))


def decoded(
    rows_and_tags: tuple[Sequence[Any], Sequence[Any]], stream_id: StreamId | None = None
) -> list[Event]:
    """Events from event rows, with their tags from ``page_tags`` rows."""
    rows, tag_rows = rows_and_tags
    return decode_tagged(
        rows, stream_id, (lambda events: attach_tag_rows(events, tag_rows)) if tag_rows else None)


def tag_lookup_params(rows: Sequence[Any]) -> tuple[list[str], list[int]]:
    """``tags_statement``'s parameters for event rows (EVENT_COLUMNS: tx number, seq)."""
    return [str(r[0]) for r in rows], [r[1] for r in rows]


def snapshot_head_statement(schema: str) -> sql.Composed:
    """A read's first statement: the newest position its snapshot sees (no horizon),
    and whether a transaction still in progress then could have a lower position."""
    return sql.SQL(
        """SELECT top.tx_id::text, top.seq,
                  EXISTS (SELECT FROM pg_snapshot_xip(pg_current_snapshot()) AS x
                          WHERE x < top.tx_id) AS open
           FROM (SELECT tx_id, seq FROM {}.eskit_events
                 ORDER BY tx_id DESC, seq DESC LIMIT 1) AS top"""
    ).format(sql.Identifier(schema))


# Whether any transaction holds (or awaits) one of the keys: the two-int4 advisory locks
# show in pg_locks as classid, objid (as oids, so unsigned) with objsubid 2.
KEY_HOLDERS = sql.SQL(
    """SELECT EXISTS (
           SELECT FROM pg_locks AS l
           JOIN unnest(%(hi)s::int[], %(lo)s::int[]) AS k(hi, lo)
             ON l.classid = (k.hi::bigint & 4294967295)::oid
            AND l.objid = (k.lo::bigint & 4294967295)::oid
           WHERE l.locktype = 'advisory' AND l.objsubid = 2
             AND l.database = (SELECT oid FROM pg_database
                               WHERE datname = current_database()))"""
)


def key_holder_params(query: Query) -> dict[str, Any]:
    hi, lo, _ = lock_plan(set(), query_lock_keys(query))
    return {"hi": hi, "lo": lo}
