"""``eskit upcast-check``: every stored event through today's code."""

from __future__ import annotations

import sqlite3

import pytest

from tests.cli.helpers import assert_no_traceback, eskit_cli


@pytest.fixture
def v1_copy(tmp_path):
    import shutil

    from tests.test_upcasting import FIXTURE

    path = tmp_path / "v1.db"
    shutil.copy(FIXTURE, path)
    return path


def test_upcast_check_reads_every_event_through_todays_code(v1_copy):
    before = v1_copy.read_bytes()
    result = eskit_cli(
        "upcast-check", v1_copy, "--module", "tests.test_upcasting",
        "--registry", "tests.test_upcasting:V3",
    )
    assert result.returncode == 0, result.stderr
    assert "5 events read" in result.stdout
    assert "3 upcast, 6 built as domain events, 0 failed" in result.stdout
    assert "deprecated type 'legacy.NewsletterSubscribed': 1 event(s)" in result.stdout
    assert v1_copy.read_bytes() == before, "the check must not change the store"


def test_upcast_check_reports_each_failing_event_and_exits_3(v1_copy):
    result = eskit_cli(
        "upcast-check", v1_copy, "--registry", "tests.fixtures.broken_registry:BROKEN"
    )
    assert result.returncode == 3
    assert "1 failed" in result.stdout
    assert "KeyError" in result.stdout
    assert_no_traceback(result)


def test_upcast_check_carries_on_after_an_event_that_cannot_be_decoded(v1_copy):
    with sqlite3.connect(v1_copy) as conn:
        conn.execute(
            "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version,"
            " recorded_at, data, metadata) VALUES (randomblob(16), 'broken', 1, 'X', 1, 0,"
            " '{not json', '{}')"
        )
        conn.execute(
            "INSERT INTO eskit_events (event_id, stream_id, version, event_type, schema_version,"
            " recorded_at, data, metadata) VALUES (randomblob(16), 'broken', 2, 'Y', 1, 0,"
            " '{}', '{}')"
        )
    conn.close()
    result = eskit_cli("upcast-check", v1_copy)
    assert result.returncode == 3
    assert "7 events read" in result.stdout
    assert "1 failed" in result.stdout
    assert "not valid JSON" in result.stdout


def test_upcast_check_with_a_module_that_cannot_be_imported_exits_2(v1_copy):
    result = eskit_cli("upcast-check", v1_copy, "--module", "no.such.module")
    assert result.returncode == 2
    assert "cannot import 'no.such.module'" in result.stderr
    assert_no_traceback(result)


def test_upcast_check_without_event_classes_does_not_claim_0_failed_and_exits_4(v1_copy):
    result = eskit_cli("upcast-check", v1_copy)
    assert result.returncode == 4, result.stdout + result.stderr
    summary = " ".join(result.stdout.split())
    assert "0 failed" not in summary
    assert "5 of 5 not checked against today's code" in summary
    assert "--module" in summary
    assert "--registry" in summary
    assert_no_traceback(result)


def test_upcast_check_with_the_registry_named_checks_everything_and_exits_0(v1_copy):
    result = eskit_cli("upcast-check", v1_copy, "--registry", "tests.test_upcasting:V3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
