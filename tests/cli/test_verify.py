"""``eskit verify``: exit 0 on a clean store, 3 naming stream and version on tampering."""

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
        for n in range(3):
            store.append(f"order-{n}", [NewEvent("Placed", large_payload(n)),
                                        NewEvent("Paid", {"n": n})])
    return path


def _tamper(path: Path, sql: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TRIGGER IF EXISTS eskit_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS eskit_events_no_delete")
        conn.execute(sql)


def test_a_clean_store_verifies_and_stays_clean_after_compact(tmp_path: Path) -> None:
    path = _store(tmp_path)
    clean = eskit_cli("verify", path)
    assert clean.returncode == 0, clean.stderr
    assert_no_traceback(clean)
    assert "6 events in 3 streams: clean" in clean.stdout
    compacted = eskit_cli("compact", path, "--older-than", "0s")
    assert compacted.returncode == 0, compacted.stderr
    assert "3 of 3 events compressed" in compacted.stdout
    again = eskit_cli("verify", path, "--batch", "2")
    assert again.returncode == 0, again.stdout
    assert "6 events in 3 streams: clean" in again.stdout


def test_tampering_exits_3_and_names_stream_and_version(tmp_path: Path) -> None:
    path = _store(tmp_path)
    _tamper(path, "UPDATE eskit_events SET data = '{\"n\":7}' "
                  "WHERE stream_id = 'order-1' AND version = 2")
    _tamper(path, "DELETE FROM eskit_events WHERE stream_id = 'order-2' AND version = 1")
    result = eskit_cli("verify", path)
    assert result.returncode == 3, result.stdout
    assert_no_traceback(result)
    assert "altered: stream 'order-1' version 2" in result.stdout
    assert "removed: stream 'order-2' version 2" in result.stdout
    assert "5 events in 3 streams: 2 problems" in result.stdout


def test_print_head_then_expect_head(tmp_path: Path) -> None:
    path = _store(tmp_path)
    printed = eskit_cli("verify", path, "--print-head")
    assert printed.returncode == 0, printed.stderr
    checkpoint = printed.stdout.strip().splitlines()[-1]
    position, _, digest = checkpoint.partition(":")
    assert position == "6"
    assert len(digest) == 64
    with SQLiteEventStore(path) as store:
        store.append("order-9", [NewEvent("Placed", {"n": 9})])
    kept = eskit_cli("verify", path, "--expect-head", checkpoint)
    assert kept.returncode == 0, kept.stdout
    assert "checkpoint matches" in kept.stdout
    # The head of a stream rewritten wholesale (here: dropped) no longer matches.
    _tamper(path, "DELETE FROM eskit_events WHERE stream_id = 'order-0'")
    changed = eskit_cli("verify", path, "--expect-head", checkpoint)
    assert changed.returncode == 3, changed.stdout
    assert "checkpoint mismatch" in changed.stdout


def test_bad_input_exits_2_before_opening(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    bad = eskit_cli("verify", missing, "--expect-head", "nonsense")
    assert bad.returncode == 2
    assert "not a checkpoint" in bad.stderr
    assert not missing.exists()
    gone = eskit_cli("verify", missing)
    assert gone.returncode == 2
    assert "does not exist" in gone.stderr
    assert not missing.exists()


def test_verify_a_postgres_schema(postgres_dsn: str) -> None:
    import psycopg

    from eskit.stores.postgres import PostgresEventStore
    from tests.conftest import new_schema_name

    schema = new_schema_name()
    with PostgresEventStore(postgres_dsn, schema=schema) as store:
        store.append("order-1", [NewEvent("Placed", {"n": 1}), NewEvent("Paid", {"n": 1})])
    clean = eskit_cli("verify", postgres_dsn, "--schema", schema)
    assert clean.returncode == 0, clean.stderr
    assert "2 events in 1 streams: clean" in clean.stdout
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{schema}".eskit_events DISABLE TRIGGER USER')
        conn.execute(f"""UPDATE "{schema}".eskit_events SET event_type = 'Refunded'
                         WHERE version = 2""")
    tampered = eskit_cli("verify", postgres_dsn, "--schema", schema)
    assert tampered.returncode == 3, tampered.stdout
    assert "altered: stream 'order-1' version 2" in tampered.stdout
