"""Partitioning a PostgreSQL store's events table (``eskit partitions``).

:func:`partition_events` turns an unpartitioned store (empty or not) into the
partitioned layout of :mod:`eskit.stores.postgres_partitioning`, in one
transaction that holds the events table's ``ACCESS EXCLUSIVE`` lock: appends and
reads wait until it commits (about the time of copying the table once and indexing
it; see docs/postgres.md for a measured figure), and nothing is changed if it
fails or is interrupted. Every event keeps its id, stream, version, position,
payload bytes, hash and tags.

:func:`ensure_partitions` makes the partitions ahead of the sequence (run it from
cron: appends beyond the last partition go to the default partition, correct but
never dropped); :func:`drop_empty_partitions` drops partitions that retention,
deletion or archiving emptied. Both are safe to run from several places at once
(an advisory lock) and beside live appends.

Sync stores only (from asyncio, run them in a thread); the async store works on a
partitioned schema unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eskit.errors import InvalidInputError, StoreError

__all__ = [
    "MAX_PARTITION_SIZE",
    "Partition",
    "drop_empty_partitions",
    "ensure_partitions",
    "list_partitions",
    "partition_events",
    "partition_size",
]

_log = logging.getLogger("eskit.maintenance.partitioning")

MAX_PARTITION_SIZE = 1 << 40
_STAGING = "eskit_events_partitioned"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its table, the ``seq`` range (``None`` for the default), its size."""

    name: str
    first_seq: int | None
    end_seq: int | None
    """Exclusive."""
    estimated_rows: int
    """PostgreSQL's estimate (``reltuples``, as of the last ANALYZE or VACUUM)."""
    bytes: int


def _postgres(store: Any) -> Any:
    from eskit.stores.postgres import PostgresEventStore

    if not isinstance(store, PostgresEventStore):
        raise InvalidInputError(
            f"partitioning is for PostgreSQL stores, not {type(store).__name__}")
    if store._conn is not None and store._in_caller_transaction():
        raise InvalidInputError("partitioning runs in transactions of its own: not on a "
                                "connection with an open transaction")
    return store


def _statements(store: Any) -> Any:
    from eskit.stores.postgres_partitioning import PartitionStatements

    return PartitionStatements(store.schema)


def _check_count(label: str, value: object, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidInputError(f"{label} must be an int in {lo}..{hi}, got {value!r}")
    return value


def partition_size(store: Any) -> int | None:
    """The store's partition size (events per partition), or ``None`` if unpartitioned."""
    store = _postgres(store)
    sql = _statements(store)
    with store._connection() as conn:
        row = conn.execute(sql.read_size).fetchone()
    return None if row is None else int(row[0])


def partition_events(
    store: Any, *, size: int = 1_000_000, ahead: int = 4,
    progress: Callable[[str], object] | None = None,
) -> int:
    """Partition ``store``'s events table by ranges of ``size`` positions; events copied.

    Raises :class:`~eskit.InvalidInputError` (before any I/O) for a bad size or a
    store that is not PostgreSQL, and :class:`~eskit.StoreError` if the table is
    partitioned already. ``progress`` is called with each step's name.
    """
    size = _check_count("size", size, 1, MAX_PARTITION_SIZE)
    ahead = _check_count("ahead", ahead, 0, 1000)
    store = _postgres(store)
    sql = _statements(store)
    say = progress or (lambda _: None)
    with store._connection() as conn, conn.transaction():
        # setup()'s lock: no migration meanwhile.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (store.sql.lock_key,))
        conn.execute(sql.lock)
        if conn.execute(sql.read_size).fetchone() is not None or (
            conn.execute(sql.kind).fetchone() or ("",)
        )[0] == "p":
            raise StoreError(f"schema {store.schema!r}: the events table is partitioned already")
        conn.execute(sql.lock_events)
        indexes = [row[0] for row in conn.execute(sql.plain_indexes).fetchall()]
        triggers = conn.execute(sql.triggers).fetchall()
        last = conn.execute(sql.last_seq).fetchone()[0]
        first_seq, last_seq, count = conn.execute(sql.seq_range).fetchone()
        top = max(int(last or 0), int(last_seq or 0))
        low = 0 if first_seq is None else int(first_seq) // size
        say("creating partitions")
        conn.execute(sql.create_parent(_STAGING))
        made = range(low, top // size + 1 + ahead)
        for k in made:
            conn.execute(sql.create_partition(_STAGING, k, size))
        conn.execute(sql.create_default(_STAGING))
        say(f"copying {count:,} events")
        conn.execute(sql.copy_rows(_STAGING, "eskit_events"))
        conn.execute(sql.continue_sequence(_STAGING), (top, top > 0))
        say("swapping the tables")
        conn.execute(sql.drop("eskit_events"))
        conn.execute(sql.rename(_STAGING, "eskit_events"))
        conn.execute(sql.rename_sequence(_STAGING, "eskit_events"))
        say("indexing")
        for definition in indexes:
            conn.execute(definition)
        for statement in sql.keys_statements():
            conn.execute(statement)
        for _, definition, _ in triggers:
            conn.execute(definition)
        partitions = [*(_name(k) for k in made), _default()]
        _copy_statement_triggers(conn, sql, triggers, partitions)
        conn.execute(sql.write_size, (str(size),))
    _log.info("schema %s: events table partitioned by %d positions (%d events, %d partitions)",
              store.schema, size, count, len(made) + 1)
    return int(count)


def _name(index: int) -> str:
    from eskit.stores.postgres_partitioning import partition_name

    return partition_name(index)


def _default() -> str:
    from eskit.stores.postgres_partitioning import DEFAULT_PARTITION

    return DEFAULT_PARTITION


def _copy_statement_triggers(conn: Any, sql: Any, triggers: list[Any],
                             partitions: list[str]) -> None:
    # The BEFORE statement triggers (append-only) on each partition too: they fire only
    # for the table a statement names. Row triggers are cloned by PostgreSQL itself.
    for name, definition, statement_level in triggers:
        if statement_level and " BEFORE " in definition:
            for partition in partitions:
                conn.execute(sql.on_partition(definition, name, partition))


def _size_or_refuse(conn: Any, sql: Any, schema: str) -> int:
    row = conn.execute(sql.read_size).fetchone()
    if row is None:
        raise InvalidInputError(f"schema {schema!r}: the events table is not partitioned "
                                "(eskit partitions enable)")
    return int(row[0])


def ensure_partitions(store: Any, *, ahead: int = 4) -> list[str]:
    """Make the partitions from the sequence's current one to ``ahead`` past it; their names.

    A range the default partition already holds rows of is left to it (PostgreSQL
    refuses a partition over rows of the default; they stay where they are).
    """
    ahead = _check_count("ahead", ahead, 0, 1000)
    store = _postgres(store)
    sql = _statements(store)
    made: list[str] = []
    with store._connection() as conn, conn.transaction():
        conn.execute(sql.lock)
        size = _size_or_refuse(conn, sql, store.schema)
        have = {p.first_seq // size for p in _partitions(conn, sql, size)
                if p.first_seq is not None}
        top = int(conn.execute(sql.last_seq).fetchone()[0]) // size
        low, high = conn.execute(sql.default_range()).fetchone()
        triggers = conn.execute(sql.triggers).fetchall()
        for k in range(top, top + ahead + 1):
            if k in have or (low is not None and k * size <= int(high) and
                             int(low) < (k + 1) * size):
                continue
            conn.execute(sql.create_partition("eskit_events", k, size))
            made.append(_name(k))
        _copy_statement_triggers(conn, sql, triggers, made)
    if made:
        _log.info("schema %s: made partitions %s", store.schema, ", ".join(made))
    return made


def drop_empty_partitions(store: Any) -> list[str]:
    """Drop every partition below the sequence's current one that holds no row; names.

    Each is locked, found empty and dropped in one transaction, so a row being
    inserted meanwhile (an archive restore puts rows back at their old positions)
    keeps its partition. Dropping takes the events table's lock for a moment.
    """
    store = _postgres(store)
    sql = _statements(store)
    dropped: list[str] = []
    with store._connection() as conn:
        with conn.transaction():
            conn.execute(sql.lock)
            size = _size_or_refuse(conn, sql, store.schema)
            top = int(conn.execute(sql.last_seq).fetchone()[0]) // size
            candidates = [p.name for p in _partitions(conn, sql, size)
                          if p.first_seq is not None and p.first_seq // size < top]
        for name in candidates:
            with conn.transaction():
                conn.execute(sql.lock)
                conn.execute(sql.lock_partition(name))
                if conn.execute(sql.is_empty(name)).fetchone()[0]:
                    conn.execute(sql.drop(name))
                    dropped.append(name)
    if dropped:
        _log.info("schema %s: dropped empty partitions %s", store.schema, ", ".join(dropped))
    return dropped


def list_partitions(store: Any) -> list[Partition]:
    """The partitions, in ``seq`` order, the default last; empty if unpartitioned."""
    store = _postgres(store)
    sql = _statements(store)
    with store._connection() as conn:
        row = conn.execute(sql.read_size).fetchone()
        return [] if row is None else _partitions(conn, sql, int(row[0]))


def _partitions(conn: Any, sql: Any, size: int) -> list[Partition]:
    from eskit.stores.postgres_partitioning import partition_rows

    out = []
    for name, index, rows, nbytes in partition_rows(conn.execute(sql.partitions).fetchall()):
        lo = None if index is None else index * size
        out.append(Partition(name, lo, None if lo is None else lo + size, rows, nbytes))
    return out
