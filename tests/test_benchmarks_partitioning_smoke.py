"""Smoke test of the partitioning benchmark: both phases run every workload on the same
rows, and the migration moves them all (nothing here looks at timings)."""

from __future__ import annotations

import psycopg

from benchmarks.partitioning import run


def test_every_workload_runs_before_and_after_the_migration(postgres_dsn: str) -> None:
    rows, migration, partitions = run(1_000, 250, repeat=1, dsn=postgres_dsn, ops=50)
    assert [r.workload for r in rows] == ["command append", "batch append", "load", "read_all"]
    appends, batches, loaded, read = (r.events for r in rows)
    assert (appends, batches, read) == (50, 500, 1_000)
    assert loaded >= 50 * 100  # 50 streams of 100 or more (the appends grow them)
    assert all(r.before > 0 and r.after > 0 for r in rows)
    assert migration > 0
    assert partitions >= 1_000 // 250 + 1  # the filled ranges and the default
    with psycopg.connect(postgres_dsn) as conn:  # the benchmark drops its schema
        left = conn.execute("SELECT count(*) FROM pg_namespace "
                            "WHERE nspname LIKE 'eskit_bench_partitions_%'").fetchone()
    assert left == (0,)
