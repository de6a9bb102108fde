"""``eskit archive`` / ``restore`` / ``archive-verify`` on a SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

import eskit
from eskit.cli._app import make_app


def test_archive_restore_verify(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    store = eskit.SQLiteEventStore(db)
    for s in ("order-1", "order-2"):
        store.append(s, [eskit.NewEvent("Placed", {"s": s})])
    store.close()
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT * FROM eskit_events ORDER BY position").fetchall()
    arch = str(tmp_path / "arch")
    run = CliRunner().invoke
    app = make_app()
    out = run(app, ["archive", db, arch, "--older-than", "0s", "--category", "order"])
    assert out.exit_code == 0, out.output
    assert "2 events of 2 streams archived" in out.output
    assert run(app, ["archive-verify", arch]).exit_code == 0
    out = run(app, ["restore", arch, db, "--stream", "order-1"])
    assert out.exit_code == 0, out.output
    assert "1 events restored" in out.output
    assert run(app, ["restore", arch, db]).exit_code == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM eskit_events ORDER BY position").fetchall() == before
    assert run(app, ["archive", db, arch]).exit_code != 0  # neither policy nor stream
