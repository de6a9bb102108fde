"""``verify_store``: check every stored event's hash chain (``eskit verify``).

The rows are read in ``(stream, version)`` order in pages of ``batch_size``, inside
one read transaction (a consistent snapshot: a truncation committed meanwhile
is not mistaken for a removal), and checked by
:class:`~eskit.stores.chain_check.ChainChecker`, which keeps one stream's
previous event: memory stays bounded however large the store is. It blocks: an
async SQLite store is verified through the sync store it wraps, an async
PostgreSQL store through a sync store on the same DSN. See
docs/data-protection.md, "Tamper evidence".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eskit.errors import InvalidInputError, StoreError
from eskit.stores.chain_check import (
    ChainChecker,
    ChainRow,
    Problem,
    StreamStart,
    VerifyReport,
    merged_starts,
)

__all__ = ["Problem", "VerifyReport", "verify_store"]

Progress = Callable[[int, int], object]
"""Called now and then with (events checked so far, events in the store)."""

_PROGRESS_EVERY = 1000


def verify_store(
    store: Any,
    *,
    batch_size: int = 1000,
    progress: Progress | None = None,
    as_of: int | None = None,
    expect_checkpoint: str | None = None,
) -> VerifyReport:
    """Check the hash chain of every event of ``store`` (SQLite or PostgreSQL, or a
    protected or async store over one; it blocks: from asyncio, run it in a thread).

    Returns a :class:`VerifyReport` whose ``problems`` name the stream and version
    of each altered, removed, inserted or reordered event (``ok`` is false if
    there is any). Events stored before the store had chains count as
    ``unchained``, not as problems; truncations, retention, hard deletes and
    archives are recorded by the store and verify clean. ``as_of``: also compute
    the checkpoint ``POSITION:DIGEST`` over each stream's newest event at or before
    that global position; ``expect_checkpoint``: compare it with one recorded
    earlier (its position is used as ``as_of``). Not guaranteed: an attacker who
    rewrites a stream's newest events with freshly computed hashes, or removes a
    whole stream, is caught only by comparing a checkpoint kept elsewhere.
    """
    if type(batch_size) is not int or batch_size < 1:
        raise InvalidInputError("batch_size must be a positive int")
    if expect_checkpoint is not None:
        as_of = parse_checkpoint(expect_checkpoint)
    if as_of is not None and (type(as_of) is not int or as_of < 0):
        raise InvalidInputError("as_of must be a position (an int, 0 or more)")
    source = _source(store)
    with source(batch_size) as (total, rows, starts, chained_after):
        checker = ChainChecker(starts, as_of=as_of,
                               chained_after=chained_after)
        done = 0
        for row in rows:
            checker.feed(row)
            done += 1
            if progress is not None and done % _PROGRESS_EVERY == 0:
                progress(done, total)
        if progress is not None:
            progress(done, max(total, done))
    return checker.finish(expect_checkpoint=expect_checkpoint)


def parse_checkpoint(text: object) -> int:
    """The position of a checkpoint ``POSITION:DIGEST``; InvalidInputError if malformed."""
    if not isinstance(text, str):
        raise InvalidInputError("a checkpoint is a string POSITION:DIGEST")
    position, _, digest = text.partition(":")
    if not position.isdigit() or len(digest) != 64 or any(
            c not in "0123456789abcdef" for c in digest):
        raise InvalidInputError(
            f"{text!r} is not a checkpoint: expected POSITION:DIGEST as printed by "
            "`eskit verify --print-head` (64 lower-case hex digits after the colon)")
    return int(position)


Rows = tuple[int, Iterator[ChainRow], Callable[[str], StreamStart | None], int]
"""What a backend hands the checker: the event count, the rows, the truncated
streams' starts and the position after which every event must have a hash."""


def _source(store: Any) -> Callable[[int], Any]:
    from eskit.stores.base import EventStore
    from eskit.stores.sqlite import SQLiteEventStore

    # A protected store (``inner``) or an async SQLite or memory store over a sync one
    # (``sync_store``): the events are the wrapped store's.
    for attribute in ("sync_store", "inner"):
        wrapped = getattr(store, attribute, None)
        if isinstance(wrapped, EventStore):
            return _source(wrapped)

    if isinstance(store, SQLiteEventStore):
        return lambda batch: _sqlite_rows(store, batch)
    try:
        from eskit.stores.postgres import PostgresEventStore
    except ImportError:  # the postgres extra is not installed: not a PostgreSQL store
        pass
    else:
        if isinstance(store, PostgresEventStore):
            from eskit.stores.postgres_verify import postgres_rows

            return lambda batch: _postgres(store, batch, postgres_rows)
    raise InvalidInputError(
        f"verify_store needs a SQLiteEventStore or PostgresEventStore, not "
        f"{type(store).__name__}")


@contextmanager
def _sqlite_rows(store: Any, batch: int) -> Iterator[Rows]:
    from eskit.stores import sqlite_chain

    store._usable()
    if not store._chained:
        raise StoreError(
            f"{store.path!r} has an eskit schema before hash chains: open it with "
            "SQLiteEventStore(path) (create=True) once to migrate it")
    with store._reading() as conn:
        conn.execute("BEGIN")  # one snapshot for the whole check
        try:
            total = sqlite_chain.count_events(conn)
            yield (total, sqlite_chain.iter_chain_rows(conn, batch),
                   merged_starts(sqlite_chain.iter_starts(conn)),
                   sqlite_chain.chained_after(conn))
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")


@contextmanager
def _postgres(store: Any, batch: int, rows: Any) -> Iterator[Rows]:
    with rows(store, batch) as (total, chain_rows, starts, chained_after):
        yield total, chain_rows, starts.get, chained_after
