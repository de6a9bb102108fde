"""The stored stream hash and the SQL partition test (eskit.stores.partitions).

The SQL test must give exactly :func:`partition_of` for every hash, at the ends
of the signed 64-bit range too, on both databases: a row sent to the wrong
partition would be skipped by the partition that should handle it.
"""

import sqlite3

import psycopg
import pytest

from eskit.errors import InvalidInputError
from eskit.events import NewEvent
from eskit.stores.filtered import ReadFilter
from eskit.stores.partitions import (
    MAX_PARTITIONS,
    partition_of,
    partition_sql,
    stored_partition,
    stream_hash,
)

COUNTS = [1, 2, 3, 4, 5, 7, 8, 10, 16, 255, 1000, MAX_PARTITIONS]
EDGES = [-(2**63), -(2**63) + 1, -1, 0, 1, 2**63 - 1, 2**62, -(2**62)]


def _streams() -> list[str]:
    return [f"s-{n}" for n in range(300)] + ["é", "\U0010ffff", "a" * 500]


def _unsigned(h: int) -> int:
    return h % 2**64


def test_the_stored_hash_is_the_partition_hash_as_a_signed_64_bit_int() -> None:
    hashes = [stream_hash(s) for s in _streams()]
    assert all(-(2**63) <= h < 2**63 for h in hashes)
    assert any(h < 0 for h in hashes)
    assert any(h > 0 for h in hashes)
    for stream, h in zip(_streams(), hashes, strict=True):
        for n in (2, 3, 7, 1000):
            assert _unsigned(h) % n == partition_of(stream, n) == stored_partition(stream, n)


@pytest.mark.parametrize("count", COUNTS)
def test_the_sql_test_computes_the_partition_exactly_on_sqlite(count: int) -> None:
    conn = sqlite3.connect(":memory:")
    values = EDGES + [stream_hash(s) for s in _streams()]
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, stream_hash INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", enumerate(values))
    conn.execute("INSERT INTO t VALUES (?, NULL)", (len(values),))
    sample = sorted({_unsigned(v) % count for v in values})[:5]
    test, params = partition_sql(count, sample, "?")
    got = [n for (n,) in conn.execute(f"SELECT n FROM t WHERE {test} ORDER BY n", params)]
    wanted = [n for n, v in enumerate(values) if _unsigned(v) % count in sample]
    assert got == [*wanted, len(values)]  # and the NULL row: decided in Python


@pytest.mark.parametrize("count", COUNTS)
def test_the_sql_test_computes_the_partition_exactly_on_postgres(
    postgres_dsn: str, count: int
) -> None:
    values = EDGES + [stream_hash(s) for s in _streams()]
    sample = sorted({_unsigned(v) % count for v in values})[:5]
    test, params = partition_sql(count, sample, "%s", "%%")
    with psycopg.connect(postgres_dsn) as conn:
        rows = conn.execute(
            "SELECT n FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(stream_hash, n) "
            f"WHERE {test} ORDER BY n", [[*values, None], *params]).fetchall()
    got = [n - 1 for (n,) in rows]
    wanted = [n for n, v in enumerate(values) if _unsigned(v) % count in sample]
    assert got == [*wanted, len(values)]


@pytest.mark.parametrize(("count", "held"), [(0, [0]), (2, [2]), (2, [-1]), (2, ["0"]),
                                         (True, [0]), (MAX_PARTITIONS + 1, [0]), (2, [True]),
                                         (2.0, [0]), (None, [0])])
def test_bad_partitions_are_refused(count: object, held: list[object]) -> None:
    with pytest.raises(InvalidInputError):
        ReadFilter(None, None).in_partitions(count, held)  # type: ignore[arg-type]


def test_no_partitions_match_nothing_without_asking_the_database() -> None:
    assert ReadFilter(None, None).in_partitions(4, []).is_empty
    with pytest.raises(InvalidInputError):
        partition_sql(4, [], "?")


def test_rows_without_a_stored_hash_are_read_by_every_partition_and_sorted_in_python(
    tmp_path,
) -> None:
    # A store migrated from schema 9 keeps NULL in its old rows: they must still
    # reach exactly the right partition.
    from eskit.stores.sqlite import SQLiteEventStore

    store = SQLiteEventStore(str(tmp_path / "old.db"))
    for n in range(20):
        store.append(f"old-{n}", [NewEvent("E", {"n": n})])
    conn = sqlite3.connect(str(tmp_path / "old.db"))
    # Rows as a schema-9 writer left them: copy them to new streams without the hash.
    conn.execute(
        "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version,"
        " recorded_at, data, metadata) SELECT randomblob(16), 'legacy-' || stream_id,"
        " version, event_type, schema_version, recorded_at, data, metadata FROM eskit_events")
    conn.commit()
    assert conn.execute(
        "SELECT count(*) FROM eskit_events WHERE stream_hash IS NULL").fetchone() == (20,)
    conn.close()
    every = list(store.read_all())
    for p in range(3):
        wanted = ReadFilter(None, None).in_partitions(3, [p])
        got, _, _, rows = store._filtered_page(0, 500, wanted, False)
        assert [e.event_id for e in got] == [
            e.event_id for e in every if partition_of(e.aggregate_id, 3) == p]
        # Its own new rows, and every legacy row (sorted out in Python).
        assert rows == sum(1 for e in every if str(e.aggregate_id).startswith("old-")
                           and partition_of(e.aggregate_id, 3) == p) + 20
    store.close()
