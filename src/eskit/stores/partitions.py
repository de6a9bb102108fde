"""Stream partitions: which partition a stream's events go to, and the test a database runs.

A partitioned projection (or a consumer group's member) handles the streams whose
:func:`partition_of` is one of its partitions. To let it read only those rows, the
stores keep each event's :func:`stream_hash` in a column (``stream_hash``: SQLite
schema 10, PostgreSQL schema 12), written with the event, and filter on it in SQL
(:func:`partition_sql`). No I/O here.

The hash is the first 8 bytes of the BLAKE2b digest of the stream id as stored;
the partition is that number, unsigned, modulo the partition count. The column
holds it as a *signed* 64-bit integer (both databases' integer), so the SQL test
adds back ``2**64 mod n`` for a negative value: it gives exactly
:func:`partition_of` for every row, which the contract tests check against this
module on each store.

Rows written before the column existed hold ``NULL`` and always pass the SQL test;
the reader's Python test (:meth:`~eskit.stores.filtered.ReadFilter.matches`) then
decides, so they are read (slower, never lost).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from functools import lru_cache

from eskit.errors import InvalidInputError
from eskit.stores.arguments import stream_key

__all__ = [
    "MAX_PARTITIONS", "check_partitions", "partition_of", "partition_sql", "stored_partition",
    "stream_hash",
]

MAX_PARTITIONS = 1 << 16
"""The most partitions a projection may have (far more than workers anyone runs)."""

_TWO_64 = 1 << 64


@lru_cache(maxsize=65536)
def _unsigned(stored: str) -> int:
    return int.from_bytes(hashlib.blake2b(stored.encode(), digest_size=8).digest(), "big")


def stream_hash(stored: str) -> int:
    """The ``stream_hash`` column's value for the stream whose stored id is ``stored``."""
    value = _unsigned(stored)
    return value - _TWO_64 if value >= 1 << 63 else value


def partition_of(stream_id: object, partitions: int) -> int:
    """The partition (``0 .. partitions-1``) a stream's events go to; stable across runs.

    A hash of the stream id as stored, so all of a stream's events go to one
    partition and stay in order there.
    """
    if partitions == 1:
        return 0
    return _unsigned(stream_key(stream_id)) % partitions


def stored_partition(stored: str, partitions: int) -> int:
    """:func:`partition_of` of the stream whose stored id is ``stored``."""
    return _unsigned(stored) % partitions


def check_partitions(count: object, held: Collection[object]) -> tuple[int, frozenset[int]]:
    """``(count, held)`` checked: ``1 <= count <= MAX_PARTITIONS``, each held one in range."""
    if type(count) is not int or not 1 <= count <= MAX_PARTITIONS:
        raise InvalidInputError(f"the partition count must be an int in 1..{MAX_PARTITIONS}")
    parts: set[int] = set()
    for p in held:
        if type(p) is not int or not 0 <= p < count:
            raise InvalidInputError(f"partitions must be ints in 0..{count - 1}")
        parts.add(p)
    return count, frozenset(parts)


def partition_sql(
    count: int, held: Collection[int], placeholder: str, modulo: str = "%"
) -> tuple[str, list[int]]:
    """The SQL test "this row's stream is in one of ``held`` of ``count`` partitions".

    ``placeholder`` is the dialect's parameter marker (``?`` or ``%s``) and
    ``modulo`` its remainder operator as written in a statement (``%%`` where
    ``%`` marks parameters); returns the test and its parameters, in order.
    ``stream_hash % n`` keeps the dividend's sign on both databases (in ``(-n, n)``);
    adding ``n``, and ``2**64 mod n`` for a negative hash, then taking ``% n`` gives
    the unsigned hash modulo ``n``, with no intermediate value past ``3n``.
    """
    parts = sorted(held)
    if not parts:
        raise InvalidInputError("no partitions to test (an empty filter reads nothing)")
    n, m = placeholder, modulo
    test = (
        f"(stream_hash IS NULL OR ((stream_hash {m} {n}) + {n} + CASE WHEN stream_hash < 0 "
        f"THEN {n} ELSE 0 END) {m} {n} IN ({', '.join([placeholder] * len(parts))}))"
    )
    return test, [count, count, _TWO_64 % count, count, *parts]
