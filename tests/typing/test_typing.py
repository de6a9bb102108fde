"""The public API type-checks the way the docs use it (mypy --strict on a sample file)."""

from pathlib import Path

from mypy import api

SAMPLE = Path(__file__).with_name("sample_usage.py")


def test_documented_usage_type_checks_under_mypy_strict() -> None:
    out, err, status = api.run([
        "--strict", "--no-incremental", "--cache-dir=/dev/null", "--no-error-summary",
        str(SAMPLE),
    ])
    assert status == 0, out + err
