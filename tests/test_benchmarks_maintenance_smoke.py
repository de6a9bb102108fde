"""Smoke test of the retention/archive benchmark: every operation touches every event.

A tiny store, one run of each operation in its own process; nothing here looks at
timings (the benchmark itself raises if a count is off).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.maintenance import run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_plan_apply_archive_and_restore_each_touch_every_event(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    rows = run(backend, 2_000, 100, workdir=str(tmp_path), **({"dsn": dsn} if dsn else {}))
    assert [(r.operation, r.events) for r in rows] == [
        ("plan", 2_000), ("apply", 2_000), ("archive", 2_000), ("restore", 2_000)]
    assert all(r.seconds > 0 for r in rows)
    assert all(r.peak_mib >= 0 for r in rows)
    assert all(r.process_peak_mib > 10 for r in rows)  # a Python process with eskit loaded
    assert list(tmp_path.iterdir()) == []  # the stores and the archive are cleaned up
