"""Reading from a hot standby: read-all and projections on a streaming replica.

``python -m benchmarks.replica [--events N] [--repeat R]``

Starts a throwaway PostgreSQL primary and a hot standby streaming from it (``initdb``
and ``pg_basebackup`` from the server's own binaries, on free local ports, in a
temporary directory; run as root, the servers run as the ``postgres`` user), appends
``--events`` events on the primary, waits until the standby has replayed them, and
times the same ``read_all`` on both, then a projection reading its events from the
standby and writing its read model and checkpoint on the primary. Also measured: how
long after an append's commit the standby's ``read_all`` returns it (replay plus the
horizon), over 200 appends. See ``docs/scaling.md``.

``postgres_pair()`` is the fixture the standby tests use too
(``tests/stores/test_postgres_standby.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eskit import NewEvent

__all__ = ["PostgresPair", "main", "postgres_pair", "server_binaries"]


def server_binaries() -> Path | None:
    """The directory of the newest installed PostgreSQL server's binaries, if any."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PostgresPair:
    primary: str
    """DSN of the primary (database ``postgres``)."""
    standby: str
    """DSN of the hot standby streaming from it."""

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        import psycopg

        with psycopg.connect(self.primary, autocommit=True) as p:
            row = p.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.standby, autocommit=True) as s:
            while True:
                done = s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                 (target,)).fetchone()
                if done and done[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the standby did not catch up")
                time.sleep(0.01)


@contextmanager
def postgres_pair() -> Iterator[PostgresPair]:
    """A primary and a hot standby, started for the block and removed after it.

    Needs the server binaries (Debian's postgresql package) and, when run as root,
    the ``postgres`` user to run them. ``fsync`` is off: the data is thrown away.
    """
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    as_server: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="eskit-pgpair-"))
    if as_server:
        shutil.chown(base, "postgres")

    def server(*args: str | Path) -> None:
        subprocess.run([*as_server, *map(str, args)], check=True, capture_output=True,
                       timeout=120)

    ports = {"primary": _free_port(), "standby": _free_port()}
    started: list[Path] = []
    try:
        primary = base / "primary"
        server(binaries / "initdb", "-D", primary, "-A", "trust", "-U", "postgres")
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports['primary']}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{base}'\nwal_level = replica\n"
                       "max_wal_senders = 4\nfsync = off\nhot_standby_feedback = on\n")
        with open(primary / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        server(binaries / "pg_ctl", "-D", primary, "-l", base / "primary.log", "-w", "start")
        started.append(primary)
        standby = base / "standby"
        server(binaries / "pg_basebackup", "-h", "127.0.0.1", "-p", str(ports["primary"]),
               "-U", "postgres", "-D", standby, "-R", "-X", "stream")
        with open(standby / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports['standby']}\n")
        server(binaries / "pg_ctl", "-D", standby, "-l", base / "standby.log", "-w", "start")
        started.append(standby)
        yield PostgresPair(
            primary=f"postgresql://postgres@127.0.0.1:{ports['primary']}/postgres",
            standby=f"postgresql://postgres@127.0.0.1:{ports['standby']}/postgres",
        )
    finally:
        for data in reversed(started):
            subprocess.run([*as_server, str(binaries / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _rate(events: int, seconds: float) -> str:
    return f"{events / seconds:>10,.0f} events/s"


def main(argv: list[str] | None = None) -> None:
    from benchmarks.projections import Balances
    from eskit.projections import PostgresTarget, ProjectionRunner
    from eskit.stores.postgres import PostgresEventStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    schema = "eskit_replica_bench"
    with postgres_pair() as pair:
        primary = PostgresEventStore(pair.primary, schema=schema)
        for i in range(args.events // 1_000):
            primary.append(f"account-{i % 500}", [
                NewEvent("BenchDeposited", {"cents": 100 + j}) for j in range(1_000)
            ])
        pair.wait_replayed()
        standby = PostgresEventStore(pair.standby, schema=schema, setup=False)
        times: dict[str, list[float]] = {"primary": [], "standby": []}
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            for name, store in (("primary", primary), ("standby", standby)):
                began = time.perf_counter()
                assert sum(1 for _ in store.read_all()) == args.events
                times[name].append(time.perf_counter() - began)
        for name, runs in times.items():
            print(f"read_all on the {name:8} {_rate(args.events, statistics.median(runs))}"
                  f"  (median of {args.repeat})")
        target = PostgresTarget(pair.primary, schema=schema)
        tag = uuid.uuid4().hex[:8]
        runner = ProjectionRunner(standby, Balances(f"bench_{tag}"), target,
                                  name=f"bench-{tag}", batch_size=500)
        runner.setup()
        began = time.perf_counter()
        handled = runner.run_until_caught_up()
        print(f"projection, events from the standby, read model on the primary "
              f"{_rate(handled, time.perf_counter() - began)}")
        lags: list[float] = []
        for n in range(200):
            head = standby.head_position()
            result = primary.append(f"lag-{n}", [NewEvent("BenchDeposited", {"cents": n})])
            committed = time.perf_counter()
            while not any(e.position == result.position for e in standby.read_all(head)):
                time.sleep(0.0005)
            lags.append(time.perf_counter() - committed)
        q = statistics.quantiles(lags, n=100)
        print(f"append on the primary -> returned by read_all on the standby: median "
              f"{statistics.median(lags) * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")
        target.close()
        standby.close()
        primary.close()


if __name__ == "__main__":
    main()
