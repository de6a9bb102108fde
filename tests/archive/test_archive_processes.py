"""Archiving across processes, on SQLite and PostgreSQL: SIGKILL at random points
leaves every stream either untouched or fully archived and a rerun finishes; two
``eskit archive`` runs at once archive each stream once, neither failing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import eskit
from eskit.archive import LocalDirectoryStorage, archive_streams, restore_streams
from tests.archive.conftest import Backend

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
       "COLUMNS": "200", "NO_COLOR": "1"}
STREAMS = [f"order-{n:02d}" for n in range(24)]

# Archives every stream, printing one line after each; the parent kills it at random.
_CHILD = textwrap.dedent("""
    import sys
    import eskit
    from eskit.archive import LocalDirectoryStorage, archive_streams
    kind, target, schema, directory = sys.argv[1:5]
    streams = sys.argv[5:]
    if kind == "sqlite":
        store = eskit.SQLiteEventStore(target)
    else:
        from eskit.stores.postgres import PostgresEventStore
        store = PostgresEventStore(target, schema=schema)
    print("ready", flush=True)
    archive_streams(store, LocalDirectoryStorage(directory), streams,
                    progress=lambda n, t: print(n, flush=True))
    print("finished", flush=True)
""")


def _fill(store: eskit.EventStore) -> dict[str, list[tuple[object, ...]]]:
    for n, stream in enumerate(STREAMS):
        store.append(stream, [eskit.NewEvent("Placed", {"n": n, "pad": "x" * 3000})
                              for _ in range(5)])
    return {s: [(e.event_id, e.version, e.position) for e in store.read_stream(s)]
            for s in STREAMS}


def _state(store: eskit.EventStore, original: dict[str, list[tuple[object, ...]]]
           ) -> dict[str, str]:
    """Per stream: ``whole`` (every event in the store) or ``archived``; anything else
    fails the test."""
    found = {}
    for stream in STREAMS:
        try:
            events = store.read_stream(stream)
        except eskit.StreamArchivedError:
            found[stream] = "archived"
            continue
        assert [(e.event_id, e.version, e.position) for e in events] == original[stream], (
            f"{stream} is partly archived")
        found[stream] = "whole"
    return found


def test_sigkill_at_random_points_leaves_streams_whole_or_archived_and_a_rerun_finishes(
    backend: Backend, tmp_path: Path,
) -> None:
    store = backend.open()
    original = _fill(store)
    before = backend.raw()
    directory = tmp_path / "arch"
    rng = random.Random(20261203)
    kills = 0
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, backend.kind, backend.target, backend.schema,
             str(directory), *STREAMS], stdout=subprocess.PIPE, text=True, env=ENV)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.25))  # anywhere: reading, writing, committing
            child.send_signal(signal.SIGKILL)
            code = child.wait(timeout=60)
        finally:
            if child.poll() is None:  # pragma: no cover - only if an assert failed above
                child.kill()
                child.wait()
        kills += code == -signal.SIGKILL
        _state(store, original)  # every stream whole or archived, none in between
    assert kills >= 1, "the child always finished before the kill: nothing was tested"
    state = _state(store, original)
    archived = sum(1 for s in state.values() if s == "archived")
    assert archive_streams(store, LocalDirectoryStorage(directory), STREAMS) == (
        5 * (len(STREAMS) - archived))  # the rerun does exactly what was left
    assert set(_state(store, original).values()) == {"archived"}
    assert eskit.stats(store).archived_events == 5 * len(STREAMS)
    assert restore_streams(store, LocalDirectoryStorage(directory)) == 5 * len(STREAMS)
    assert backend.raw() == before


@pytest.mark.parametrize("runs", [2])
def test_two_archive_commands_at_once_archive_each_stream_once(
    backend: Backend, tmp_path: Path, runs: int,
) -> None:
    store = backend.open()
    original = _fill(store)
    before = backend.raw()
    directory = tmp_path / "arch"
    command = [sys.executable, "-m", "eskit.cli", "archive", backend.target, str(directory),
               "--older-than", "0s", "--category", "order"]
    if backend.kind == "postgres":
        command += ["--schema", backend.schema]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=ENV) for _ in range(runs)]
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert "Traceback" not in out + err
    moved = 0
    for out, _ in outputs:
        line = next(x for x in out.splitlines() if "events of" in x)
        moved += int(line.split()[0])
    assert moved == 5 * len(STREAMS)  # each stream's events archived by exactly one run
    assert set(_state(store, original).values()) == {"archived"}
    found = eskit.stats(store)
    assert (found.archived_streams, found.archived_events) == (len(STREAMS), moved)
    segments = [n for n in LocalDirectoryStorage(directory).list() if n.endswith(".zst")]
    assert len(segments) == len(STREAMS)  # both runs write the same bytes, same name
    assert restore_streams(store, LocalDirectoryStorage(directory)) == moved
    assert backend.raw() == before
