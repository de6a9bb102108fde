"""SIGKILL a process putting blobs: every blob whose put returned is whole afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eskit import BlobRef, SQLiteEventStore
from eskit.blobs import BlobStore, DirectoryBlobStore, SQLiteBlobStore

_WRITER = """
import os, sys
from eskit import SQLiteEventStore
from eskit.blobs import DirectoryBlobStore, SQLiteBlobStore
kind, where = sys.argv[1], sys.argv[2]
blobs = (SQLiteBlobStore(SQLiteEventStore(where + "/events.db")) if kind == "sqlite"
         else DirectoryBlobStore(where + "/blobs"))
n = 0
while True:
    ref = blobs.put(os.urandom(256 * 1024) + n.to_bytes(8, "big"))
    print(ref.digest, ref.size, flush=True)   # the reference escapes only after put returned
    n += 1
"""


@pytest.mark.parametrize("kind", ["sqlite", "directory"])
def test_a_killed_writer_leaves_every_returned_blob_whole(kind: str, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, kind, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen: list[BlobRef] = []
    deadline = time.monotonic() + 60
    while len(seen) < 20 and time.monotonic() < deadline:
        digest, size = proc.stdout.readline().split()
        seen.append(BlobRef(digest, int(size)))
    os.kill(proc.pid, signal.SIGKILL)  # most likely in the middle of the next put
    proc.wait()
    seen.extend(BlobRef(d, int(s)) for d, s in
                (line.split() for line in proc.stdout.read().splitlines() if line))
    assert len(seen) >= 20
    store = SQLiteEventStore(tmp_path / "events.db") if kind == "sqlite" else None
    blobs: BlobStore = (SQLiteBlobStore(store) if store is not None
                        else DirectoryBlobStore(tmp_path / "blobs"))
    for ref in seen:
        assert len(blobs.get(ref)) == ref.size  # get verifies the digest
    if kind == "directory":  # no partial file under a blob's name, whatever the kill cut
        for file in (tmp_path / "blobs").glob("*/*"):
            if not file.name.startswith("."):
                blobs.get(BlobRef("sha256:" + file.name, file.stat().st_size))
    if store is not None:
        store.close()
