"""``eskit archive`` / ``restore`` on SQLite and PostgreSQL (``--schema``), by age or by
the retention policy file (``--policy``)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

import eskit
from eskit.archive.policy import expired_streams
from eskit.cli._app import make_app
from eskit.maintenance.retention import RetentionPolicy
from tests.archive.conftest import Backend


def _args(backend: Backend) -> list[str]:
    return ["--schema", backend.schema] if backend.kind == "postgres" else []


def _fill(store: eskit.EventStore) -> None:
    for stream in ("sensor-1", "sensor-hot-1", "order-1", "solo"):
        store.append(stream, [eskit.NewEvent("Read", {"s": stream}) for _ in range(2)])


def test_archive_by_policy_file_then_restore(backend: Backend, tmp_path: Path) -> None:
    store = backend.open()
    _fill(store)
    before = backend.raw()
    policy = tmp_path / "policy.json"
    # The retention file format: the longest prefix decides; sensor-hot- has no max_age
    # (a retention-only rule), so its streams stay although sensor- would take them.
    policy.write_text(json.dumps([
        {"prefix": "sensor-", "max_age": "0s", "hard": True},
        {"prefix": "sensor-hot-", "max_events": 1},
        {"prefix": "order-", "max_age": "30d"},
    ]))
    app, run = make_app(), CliRunner().invoke
    arch = str(tmp_path / "arch")
    out = run(app, ["archive", backend.target, arch, "--policy", str(policy), *_args(backend)])
    assert out.exit_code == 0, out.output
    assert "2 events of 1 streams archived" in out.output
    try:
        store.read_stream("sensor-1")
        raise AssertionError("sensor-1 should be archived")
    except eskit.StreamArchivedError:
        pass
    for kept in ("sensor-hot-1", "order-1", "solo"):
        assert len(store.read_stream(kept)) == 2
    again = run(app, ["archive", backend.target, arch, "--policy", str(policy),
                      *_args(backend)])
    assert again.exit_code == 0, again.output
    assert "0 events of 0 streams archived" in again.output  # nothing left to archive
    out = run(app, ["restore", arch, backend.target, *_args(backend)])
    assert out.exit_code == 0, out.output
    assert "2 events restored" in out.output
    assert backend.raw() == before


def test_bad_archive_arguments_fail_cleanly_before_any_write(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open()
    _fill(store)
    app, run = make_app(), CliRunner().invoke
    arch = str(tmp_path / "arch")
    only_truncating = tmp_path / "truncating.json"
    only_truncating.write_text(json.dumps([{"prefix": "sensor-", "max_events": 1}]))
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    for args in (["--policy", str(only_truncating)], ["--policy", str(broken)],
                 ["--policy", str(only_truncating), "--older-than", "1d"],
                 ["--category", "sensor", "--stream", "x"], []):
        out = run(app, ["archive", backend.target, arch, *args, *_args(backend)])
        assert out.exit_code == 2, (args, out.output)
        assert "Traceback" not in out.output
    assert not (tmp_path / "arch").exists() or not any((tmp_path / "arch").iterdir())
    assert sum(len(store.read_stream(s)) for s in ("sensor-1", "order-1")) == 4


def test_expired_streams_are_retentions_own_decision(backend: Backend) -> None:
    store = backend.open()
    _fill(store)
    policies = [RetentionPolicy("sensor-", max_age=timedelta(0)),
                RetentionPolicy("sensor-hot-", max_events=1)]
    assert expired_streams(store, policies) == ["sensor-1"]
