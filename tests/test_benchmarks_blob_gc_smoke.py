"""Smoke test of the blob collection benchmark: both stores run and count what they
should (the fill checks the dry run finds exactly the unnamed half). No timing asserts."""

from __future__ import annotations

import pytest

from benchmarks.blob_gc import main


def test_both_stores_run_and_report_the_ratio(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--events", "3000", "--blobs", "20", "--repeat", "1", "--postgres", postgres_dsn])
    out = capsys.readouterr().out
    for label in ("sqlite", "postgres"):
        assert f"{label:8} collect / read_all" in out
        assert f"{label:8} collect_blobs (dry run)" in out
