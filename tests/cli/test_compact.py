"""``eskit compact``: compresses old events, changes nothing a reader sees, reruns clean."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from eskit import NewEvent, SQLiteEventStore
from eskit.testing.compression_contract import large_payload
from tests.cli.helpers import assert_no_traceback, eskit_cli


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "orders.db"
    with SQLiteEventStore(path, compress_threshold=None) as store:
        for n in range(5):
            store.append(f"order-{n}", [NewEvent("Placed", large_payload(n)),
                                        NewEvent("Noted", {"n": n})])
    return path


def _events(path: Path) -> list[tuple[object, ...]]:
    with SQLiteEventStore(path, create=False) as store:
        return [(e.event_id, e.position, e.event_data, e.metadata) for e in store.read_all()]


def _blobs(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(
            "SELECT count(*) FROM eskit_events WHERE typeof(data) = 'blob'"
        ).fetchone()[0])


def test_compact_compresses_old_events_and_a_rerun_does_nothing(tmp_path: Path) -> None:
    path = _store(tmp_path)
    before = _events(path)
    young = eskit_cli("compact", path, "--older-than", "90d")
    assert young.returncode == 0, young.stderr
    assert "0 of 0 events compressed" in young.stdout
    assert _blobs(path) == 0
    done = eskit_cli("compact", path, "--older-than", "0s", "--batch", "2")
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert "5 of 5 events compressed in 3 batches" in done.stdout
    assert _blobs(path) == 5
    assert _events(path) == before
    shown = eskit_cli("events", path, "order-3")  # the inspect commands inflate too
    assert shown.returncode == 0, shown.stderr
    assert "SKU-00039" in shown.stdout
    assert "order-3" in shown.stdout
    again = eskit_cli("compact", path, "--older-than", "0s")
    assert "0 of 0 events compressed" in again.stdout
    assert _events(path) == before


def test_compact_refuses_a_bad_age_or_batch_before_touching_the_store(tmp_path: Path) -> None:
    path = _store(tmp_path)
    for args in (["--older-than", "90 days"], ["--older-than", "-1d"],
                 ["--older-than", "1d", "--batch", "0"]):
        result = eskit_cli("compact", path, *args)
        assert result.returncode == 2, result.stdout
        assert_no_traceback(result)
    assert "give a number and a unit" in eskit_cli(
        "compact", path, "--older-than", "soon").stderr
    assert _blobs(path) == 0


def test_compact_on_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    result = eskit_cli("compact", tmp_path / "nope.db", "--older-than", "1d")
    assert result.returncode == 2
    assert not (tmp_path / "nope.db").exists()
