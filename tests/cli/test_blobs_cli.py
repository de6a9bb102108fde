"""``eskit blobs collect`` on a SQLite file (table and directory) and on PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

import eskit
from eskit.blobs import DirectoryBlobStore, SQLiteBlobStore
from eskit.cli._app import make_app
from tests.conftest import new_schema_name

DAYS = 86_400


def test_collect_in_the_store_table_dry_run_then_for_real(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    store = eskit.SQLiteEventStore(db)
    blobs = SQLiteBlobStore(store)
    named, orphan = blobs.put(b"named"), blobs.put(b"orphan")
    store.append("doc-1", [eskit.NewEvent("Attached", {"file": named})])
    with store._maintenance() as conn:
        conn.execute("UPDATE eskit_blobs SET stored_at = stored_at - ?", (3 * DAYS * 10**6,))
    store.close()
    app, run = make_app(), CliRunner().invoke

    out = run(app, ["blobs", "collect", db, "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "2 blobs (11 bytes): 1 named, 0 put within 1d, would delete 1 (6 bytes)" in out.output
    out = run(app, ["blobs", "collect", db, "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["removed_digests"] == [orphan.digest]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT digest FROM eskit_blobs").fetchall() == [(named.hex,)]


def test_collect_in_a_directory_and_bad_options(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    eskit.SQLiteEventStore(db).close()
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    orphan = blobs.put(b"orphan")
    path = blobs.directory / orphan.hex[:2] / orphan.hex
    os.utime(path, (path.stat().st_mtime - 2 * DAYS,) * 2)
    app, run = make_app(), CliRunner().invoke
    out = run(app, ["blobs", "collect", db, "--blobs", str(tmp_path / "blobs"),
                    "--grace", "3d"])
    assert out.exit_code == 0, out.output
    assert "1 put within 3d, deleted 0" in out.output
    out = run(app, ["blobs", "collect", db, "--blobs", str(tmp_path / "blobs")])
    assert "deleted 1 (6 bytes)" in out.output
    assert not path.exists()
    for bad in (["--grace", "1m"], ["--grace", "soon"], ["--blobs", str(tmp_path / "nope")]):
        out = run(app, ["blobs", "collect", db, *bad])
        assert out.exit_code == 2, out.output
    assert not (tmp_path / "nope").exists()


def test_collect_on_postgres_keeps_archived_streams_blobs(
    postgres_dsn: str, tmp_path: Path
) -> None:
    from eskit.archive import LocalDirectoryStorage, archive_streams
    from eskit.blobs import PostgresBlobStore

    schema = new_schema_name()
    store = eskit.PostgresEventStore(postgres_dsn, schema=schema)
    blobs = PostgresBlobStore(store)
    archived, orphan = blobs.put(b"archived"), blobs.put(b"orphan")
    store.append("closed-1", [eskit.NewEvent("Attached", {"file": archived})])
    arch = tmp_path / "arch"
    archive_streams(store, LocalDirectoryStorage(arch), ["closed-1"])
    store._run(lambda conn: conn.execute(
        f'UPDATE "{schema}".eskit_blobs SET stored_at = stored_at - interval \'3 days\''))
    app, run = make_app(), CliRunner().invoke
    base = ["blobs", "collect", postgres_dsn, "--schema", schema]
    out = run(app, base)
    assert out.exit_code != 0
    assert "archive" in out.output
    out = run(app, [*base, "--archive", str(arch)])
    assert out.exit_code == 0, out.output
    assert "deleted 1 (6 bytes)" in out.output
    assert blobs.exists(archived)
    assert not blobs.exists(orphan)
    store.close()
