"""Smoke test of the peer comparison (benchmarks/compare.py): every workload runs at
tiny size, and eskit, the peer (the ``eventsourcing`` library) and the raw driver
end in the same final state. Nothing here looks at timings.

PostgreSQL cases use the test server and fresh schemas from ``new_schema_name``
(dropped at the end of the session); like every PostgreSQL test they skip when the
server is unreachable, and fail instead when CI=true. The peer is in the dev extra,
so a missing peer is an error, not a skip.
"""

from __future__ import annotations

from pathlib import Path

import eventsourcing  # noqa: F401  (the peer must be installed: make test installs it)
import pytest

from benchmarks.compare import QUICK, SIDES, WORKLOADS, Target, applies, run_workload
from tests.conftest import new_schema_name

CASES = [(w, k) for w in WORKLOADS for k in ("sqlite", "memory", "postgres") if applies(w, k)]


@pytest.mark.parametrize(("workload", "kind"), CASES)
def test_eskit_and_the_peer_end_in_the_same_state(
    workload: str, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("postgres_dsn") if kind == "postgres" else None
    target = Target(kind, tmp_path, dsn=dsn, schema_name=new_schema_name)
    cell = run_workload(workload, target, QUICK, repeat=1)  # raises if the sides disagree
    assert set(cell.seconds) == set(SIDES)
    assert all(len(runs) == 1 for runs in cell.seconds.values())
    assert cell.states["eskit"] == cell.states["peer"]
    assert cell.states["eskit"]  # something was stored and read back
    if workload == "read-all":
        assert cell.states["eskit"][0] == cell.states["raw"][0] == cell.work
    elif workload in ("command-append", "batch-append", "concurrent-append"):
        assert cell.states["eskit"] == cell.states["raw"]
