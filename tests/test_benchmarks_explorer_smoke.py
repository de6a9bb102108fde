"""Smoke test of the explorer page benchmark: it runs and every page answers; no timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.explorer_pages import QUICK_EVENTS, main, run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_explorer_page_of_the_benchmark_renders(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        request.getfixturevalue("postgres_dsn")  # skips (or fails in CI) when down
    result = run(backend, QUICK_EVENTS, repeat=1, workdir=tmp_path)
    assert result["streams"] == QUICK_EVENTS // 10
    assert set(result["median_ms"]) == {
        "streams_first_page", "streams_page_by_cursor", "streams_by_category",
        "stream_timeline", "event", "event_by_id", "log_page"}
    assert all(ms > 0 for ms in result["median_ms"].values())


def test_the_command_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "out.json"
    assert main(["--quick", "--repeat", "1", "--output", str(output)]) == 0
    assert '"median_ms"' in output.read_text()
