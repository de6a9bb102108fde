"""Crypto-shredding on the real PostgreSQL server: table, TOAST and WAL files scanned.

We connect as a superuser (trust auth), so ``pg_read_binary_file`` reads the
files the server writes: the event, snapshot and key tables with their TOAST
tables, and the WAL written by the appends. What the WAL keeps after an
erasure (the *wrapped* key, and a snapshot's plaintext, until the segment is
overwritten) is documented, with master-key rotation as the remedy for the
key and "do not snapshot personal data on PostgreSQL" for the rest.
"""

from typing import Any

import pytest

from eskit import EveryNEvents, Repository
from eskit.protection import LocalKeyProvider, protect
from eskit.protection.keys import unwrap
from tests.conftest import new_schema_name
from tests.protection.test_sqlite_shredding import NAME, Customer

psycopg = pytest.importorskip("psycopg")


def _relation_files(conn: Any, schema: str, table: str) -> bytes:
    """The table's file and its TOAST table's, as on disk (after a CHECKPOINT)."""
    rows = conn.execute(
        "SELECT pg_relation_filepath(c.oid), pg_relation_filepath(NULLIF(c.reltoastrelid, 0)) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema, table),
    ).fetchall()
    assert rows, f"no table {schema}.{table}"
    content = b""
    for path in (p for p in rows[0] if p):
        content += conn.execute("SELECT pg_read_binary_file(%s)", (path,)).fetchone()[0]
    return content


def _lsn(conn: Any) -> int:
    return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])


def _wal_between(conn: Any, start: int, end: int) -> bytes:
    """The WAL bytes from LSN ``start`` to ``end``: only what was written meanwhile
    (the segments are 16 MiB each and the server is shared; reading whole ones is slow)."""
    size = int(conn.execute(
        "SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'MB' THEN 1048576 ELSE 1 END "
        "FROM pg_settings WHERE name = 'wal_segment_size'"
    ).fetchone()[0])
    timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
    content = b""
    at = start
    while at < end:
        segment, offset = divmod(at, size)
        length = min(size - offset, end - at)
        # The segment file's name: timeline, then the segment number in two 8-digit parts.
        name = f"{timeline:08X}{segment * size >> 32:08X}{segment % (2**32 // size):08X}"
        content += conn.execute("SELECT pg_read_binary_file('pg_wal/' || %s, %s, %s)",
                                (name, offset, length)).fetchone()[0]
        at += length
    return content


def test_postgres_holds_no_plaintext_nor_data_key_and_its_tables_no_wrapped_key_after_erasure(
    postgres_dsn: str,
) -> None:
    from eskit.stores.postgres import PostgresEventStore
    from eskit.stores.postgres_snapshots import PostgresSnapshotStore

    schema = new_schema_name()
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        start = _lsn(admin)
        store = protect(PostgresEventStore(postgres_dsn, schema=schema, pool_size=2),
                        LocalKeyProvider({"m1": b"\x02" * 32}))
        try:
            snapshots = PostgresSnapshotStore(store.inner)
            repo = Repository(store, snapshots=snapshots, snapshot_policy=EveryNEvents(2))
            for cid, name in (("c1", NAME), ("c2", "Other Person")):
                customer = Customer(f"customer-{cid}")
                customer.join(cid, name)
                customer.change_tier("gold")
                repo.save(customer)
            row = store.keys.current(["c1"])["c1"]
            material = unwrap(row, store.provider).material
            # Read at once: a checkpoint (anyone's) recycles older segments under new names.
            wal = _wal_between(admin, start, _lsn(admin))
            admin.execute("CHECKPOINT")
            # The controls: the scans see the wrapped key in the WAL and in the key
            # table's file, the (sealed) event rows in the event table's file, and the
            # plaintext in the snapshot table's (a snapshot holds the state in clear).
            assert row.wrapped in wal
            assert NAME.encode() in _relation_files(admin, schema, "eskit_snapshots")
            assert row.wrapped in _relation_files(admin, schema, "eskit_subject_keys")
            assert b"customer-c1" in _relation_files(admin, schema, "eskit_events")
            # Sealed before the append, the plaintext reached the WAL only in the
            # snapshot; the data key was never written, not even to the WAL.
            assert material not in wal

            erasure = store.erase_subject("c1")
            assert erasure.purge.complete, erasure.purge
            assert erasure.snapshots_deleted == 1

            for table in ("eskit_events", "eskit_subject_keys", "eskit_snapshots"):
                content = _relation_files(admin, schema, table)
                for what, needle in (("plaintext", NAME.encode()), ("data key", material),
                                     ("wrapped key", row.wrapped)):
                    assert needle not in content, f"{what} found in {table}"
            assert repo.get("customer-c1", Customer).name == "[erased]"
            assert repo.get("customer-c2", Customer).name == "Other Person"
        finally:
            store.close()
