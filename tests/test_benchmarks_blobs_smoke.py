"""Smoke test of the blob benchmark: every part runs and counts what it should.
Tiny sizes; no timing asserts."""

from __future__ import annotations

from pathlib import Path

from benchmarks.blobs import Sizes, run


def test_every_part_runs_and_a_reference_keeps_the_event_small(
    tmp_path: Path, postgres_dsn: str
) -> None:
    sizes = Sizes(blob_sizes=(64 * 1024,), bytes_per_size=256 * 1024, appends=20, load_events=2)
    found = run(sizes, repeat=1, workdir=tmp_path, postgres=postgres_dsn)
    assert [r.store for r in found["rates"]] == ["sqlite table", "directory", "postgresql table"]
    assert all(r.put_mb_s > 0 and r.get_mb_s > 0 for r in found["rates"])
    assert [c.blobs_into for c in found["contention"]] == ["none", "sqlite table", "directory"]
    inline, reference = found["loads"]
    assert inline.stored_bytes_per_event > 1_000_000 > 1_000 > reference.stored_bytes_per_event
