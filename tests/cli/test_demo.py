"""``eskit demo``: the bank example, end to end."""

from __future__ import annotations

import re

import eskit
from tests.cli.helpers import assert_no_traceback, eskit_cli, rows


def test_demo_exits_0_and_prints_the_rebuilt_balances(demo):
    result, _ = demo
    assert result.returncode == 0, result.stderr
    accounts = {r[0]: r for r in rows(result.stdout) if r[0].startswith("ACC-")}
    assert accounts["ACC-001"][1:] == ["Alice", "open", "6", "224.25"]
    assert accounts["ACC-002"][1:] == ["Bob", "closed", "4", "0.00"]
    assert accounts["ACC-003"][1:] == ["Carol", "open", "2", "145.50"]


def test_demo_shows_the_concurrent_change_being_detected_and_retried(demo):
    result, _ = demo
    out = result.stdout
    assert "ConcurrencyError: concurrent modification of stream" in out
    assert "expected version 4, actual version 5" in " ".join(out.split())
    assert "saved, version 6, balance 224.25" in out
    assert_no_traceback(result)


def test_demo_writes_eskit_demo_db_in_the_current_directory_and_prints_the_history(demo):
    result, path = demo
    assert path.is_file()
    history = re.findall(r"^ +(\d+) +(ACC-\d+) +(\d+) +(\w+)", result.stdout, re.MULTILINE)
    assert [int(position) for position, *_ in history] == list(range(1, 13))
    assert history[0][1:] == ("ACC-001", "1", "AccountOpened")
    assert history[-1][1:] == ("ACC-001", "6", "MoneyWithdrawn")


def test_demo_run_again_replaces_its_earlier_file(tmp_path):
    path = tmp_path / "again.db"
    for _ in range(2):
        result = eskit_cli("demo", "--db", path)
        assert result.returncode == 0, result.stderr
    with eskit.SQLiteEventStore(path, create=False) as store:
        assert store.head_position() == 12


def test_demo_refuses_to_overwrite_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n")
    result = eskit_cli("demo", "--db", path)
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr
    assert path.read_text() == "my notes\n"
    assert_no_traceback(result)


def test_demo_outside_a_source_checkout_says_so_and_exits_1():
    result = eskit_cli("demo", prelude="import sys; sys.modules['examples'] = None")
    assert result.returncode == 1
    assert "source checkout" in result.stderr
    assert_no_traceback(result)
