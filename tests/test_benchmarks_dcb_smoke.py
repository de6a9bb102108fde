"""Smoke test of the DCB benchmark: each mode runs and appends; no timing asserts."""

from __future__ import annotations

from benchmarks.dcb import run


def test_overlapping_writers_append_and_lose_races(postgres_dsn: str) -> None:
    # One mode only: each run spawns its writer processes (seconds on a busy machine).
    result = run("overlapping", writers=2, seconds=0.5, dsn=postgres_dsn)
    assert result.appended > 0
    assert result.writers == 2


def test_the_peer_s_writers_append_and_lose_races_too(postgres_dsn: str) -> None:
    result = run("overlapping", writers=2, seconds=0.5, dsn=postgres_dsn, library="eventsourcing")
    assert result.appended > 0
    assert result.library == "eventsourcing"
