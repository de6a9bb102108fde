"""``eskit erase-subject``, ``export-subject`` and ``rewrap-keys`` on a real SQLite file."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eskit import NewEvent, SQLiteEventStore
from eskit.cli._app import make_app
from eskit.protection import ERASED, LocalKeyProvider, PersonalFields, generate_master_key, protect
from tests.cli.helpers import assert_no_traceback, eskit_cli

MARKS = {"Joined": PersonalFields("who", ["email"])}


@pytest.fixture
def keys(tmp_path: Path) -> str:
    return generate_master_key("m1")


@pytest.fixture
def shop(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "shop.db"
    store = protect(SQLiteEventStore(path), LocalKeyProvider.parse(keys), personal_data=MARKS)
    with store:
        store.append("user-1", [NewEvent("Joined", {"who": "u1", "email": "ann@example.com"})])
        store.append("user-2", [NewEvent("Joined", {"who": "u2", "email": "bob@example.com"})])
        store.append("user-1", [NewEvent("Joined", {"who": "u1", "email": "ann@new.example"})])
    return path


def test_export_subject_prints_the_subjects_events_decrypted_as_json_lines(
    shop: Path, keys: str
) -> None:
    result = CliRunner().invoke(make_app(), ["export-subject", str(shop), "u1"],
                                env={"ESKIT_MASTER_KEYS": keys})
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(d["stream_id"], d["version"], d["data"]["email"]) for d in lines] == [
        ("user-1", 1, "ann@example.com"), ("user-1", 2, "ann@new.example"),
    ]
    assert lines[0]["position"] < lines[1]["position"]
    assert set(lines[0]) == {"position", "stream_id", "version", "event_id", "event_type",
                             "timestamp", "schema_version", "data", "metadata"}


def test_erase_subject_in_a_subprocess_then_export_shows_it_redacted(
    shop: Path, keys: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "master.keys"
    key_file.write_text(f"# eskit master keys\n{keys}\n")
    erased = eskit_cli("erase-subject", shop, "u1", "--key-file", key_file, "--json")
    assert erased.returncode == 0, erased.stderr
    assert_no_traceback(erased)
    report = json.loads(erased.stdout)
    assert report["keys_deleted"] == 1
    assert report["streams"] == ["user-1"]
    assert report["purge_complete"] is True
    exported = CliRunner().invoke(
        make_app(), ["export-subject", str(shop), "u1", "--key-file", str(key_file)]
    )
    assert [json.loads(line)["data"]["email"] for line in exported.output.splitlines()] == [
        ERASED, ERASED,
    ]
    bob = CliRunner().invoke(make_app(), ["export-subject", str(shop), "u2"],
                             env={"ESKIT_MASTER_KEYS": keys})
    assert json.loads(bob.output)["data"]["email"] == "bob@example.com"


def test_missing_master_keys_are_a_clear_error_not_a_traceback(shop: Path) -> None:
    result = CliRunner().invoke(make_app(), ["erase-subject", str(shop), "u1"],
                                env={"ESKIT_MASTER_KEYS": None})
    assert result.exit_code != 0
    assert "ESKIT_MASTER_KEYS" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_rewrap_keys_moves_keys_to_the_first_master_key(shop: Path, keys: str) -> None:
    both = f"{generate_master_key('m2')},{keys}"
    result = CliRunner().invoke(make_app(), ["rewrap-keys", str(shop)],
                                env={"ESKIT_MASTER_KEYS": both})
    assert result.exit_code == 0, result.output
    assert "re-wrapped 2 key(s) under master key 'm2'" in result.output
    only_new = both.split(",")[0]
    result = CliRunner().invoke(make_app(), ["export-subject", str(shop), "u2"],
                                env={"ESKIT_MASTER_KEYS": only_new})
    assert json.loads(result.output)["data"]["email"] == "bob@example.com"
