"""Subject keys in a table of their own in the PostgreSQL store's schema.

``<schema>.eskit_subject_keys`` sits beside the event tables, which are not
changed; it is created on first use (with ``eskit_subject_key_changes``, one row
counting the statements that deleted or updated keys, kept by a trigger on the
key table, so that a process caching unwrapped keys learns of an erasure made
anywhere at its next append or page read), on a connection of its own (autocommit,
one statement per operation, so no transaction is held open).

What :meth:`PostgresSubjectKeyStore.purge` does after an erasure: it first
waits (up to ``purge_wait`` seconds) until every snapshot older than the
purge is gone from the database, because ``VACUUM (FULL)`` keeps a deleted
row that an open snapshot might still see (measured: a long read in another
session kept the wrapped key through the rewrite). Then
``VACUUM (FULL)`` of the key table writes its live rows to a new file and
deletes the old one (a plain ``VACUUM`` would only mark the dead row's space
reusable), the same for the schema's snapshot table (the erasure deleted the
subject's snapshots, which hold aggregate state in clear), and ``CHECKPOINT``
flushes them. Both need the table's owner or a
superuser; without that right, or when an old transaction outlived the wait,
the purge says ``complete=False``: run it again. A replication slot or a
standby with ``hot_standby_feedback`` can hold the horizon back too.

Not guaranteed, and not in eskit's power: the write-ahead log and its
archive, replicas and base backups keep the inserted key until they are
recycled or expire, and the old file's blocks stay on the disk until reused.
Against those, rotate the master key after an erasure
(:meth:`~eskit.protection.ProtectedEventStore.rewrap`) and destroy the old
one: the wrapped keys they hold then unwrap with nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eskit.errors import MissingExtraError
from eskit.protection.keys import WrappedKey
from eskit.protection.keystore import Purge

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the checkout's venv installs it
    raise MissingExtraError("postgres", "PostgreSQL subject keys", name=exc.name) from exc

__all__ = ["PostgresSubjectKeyStore"]

_COLUMNS = sql.SQL("key_id, subject, master_key_id, wrapped, created_at")


class PostgresSubjectKeyStore:
    """The subject keys of the PostgreSQL store in ``schema`` of the database at ``dsn``."""

    def __init__(self, dsn: str, *, schema: str = "eskit", connect_timeout: float = 10.0,
                 purge_wait: float = 30.0) -> None:
        from eskit.stores.postgres_connection import translate

        self.purge_wait = float(purge_wait)
        """How long :meth:`purge` waits for older transactions to end, in seconds."""
        self._translate = translate
        self.schema = schema
        self._table = sql.Identifier(schema, "eskit_subject_keys")
        self._changes = sql.Identifier(schema, "eskit_subject_key_changes")
        self._lock = threading.Lock()
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout))
            )
        except psycopg.Error as exc:
            raise translate(exc, "cannot connect to PostgreSQL for subject keys") from exc
        with self._run() as conn, conn.transaction():
            # Serialised: two processes creating the function and trigger at once would
            # fail on the catalog ("tuple concurrently updated").
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"eskit_subject_keys:{schema}",))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id text PRIMARY KEY, "
                "subject text NOT NULL UNIQUE, master_key_id text NOT NULL, "
                "wrapped bytea NOT NULL, created_at timestamptz NOT NULL)"
            ).format(self._table))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY CHECK (id = 1), "
                "changes bigint NOT NULL)"
            ).format(self._changes))
            conn.execute(sql.SQL(
                "INSERT INTO {} (id, changes) VALUES (1, 0) ON CONFLICT DO NOTHING"
            ).format(self._changes))
            function = sql.Identifier(schema, "eskit_subject_key_changed")
            conn.execute(sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN UPDATE {} SET changes = changes + 1; RETURN NULL; END $$"
            ).format(function, self._changes))
            found = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass "
                "AND tgname = 'eskit_subject_key_changed'", (self._table.as_string(conn),),
            ).fetchone()
            if found is None:  # no CREATE OR REPLACE TRIGGER before PostgreSQL 14
                # Per statement: a rewrap batch of 500 keys is one change, not 500.
                conn.execute(sql.SQL(
                    "CREATE TRIGGER eskit_subject_key_changed AFTER DELETE OR UPDATE "
                    "ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()"
                ).format(self._table, function))

    @contextmanager
    def _run(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                yield self._conn
            except psycopg.Error as exc:
                raise self._translate(exc, "PostgreSQL error on subject keys") from exc

    def _select(self, column: str, values: Collection[str]) -> list[WrappedKey]:
        if not values:
            return []
        with self._run() as conn:
            rows = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
                _COLUMNS, self._table, sql.Identifier(column)
            ), (list(values),)).fetchall()
        return [_row(r) for r in rows]

    def key_changes(self) -> int | None:
        """How many statements deleted or updated keys, ever (``None``: the row is gone)."""
        with self._run() as conn:
            row = conn.execute(sql.SQL("SELECT changes FROM {}").format(self._changes)
                               ).fetchone()
        return None if row is None else int(row[0])

    def current(self, subjects: Collection[str]) -> dict[str, WrappedKey]:
        return {row.subject: row for row in self._select("subject", subjects)}

    def add(self, rows: Sequence[WrappedKey]) -> dict[str, WrappedKey]:
        with self._run() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {} (key_id, subject, master_key_id, wrapped, created_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (subject) DO NOTHING"
            ).format(self._table), [
                (r.key_id, r.subject, r.master_key_id, r.wrapped, r.created_at) for r in rows
            ])
        return self.current([r.subject for r in rows])

    def by_id(self, key_ids: Collection[str]) -> dict[str, WrappedKey]:
        return {row.key_id: row for row in self._select("key_id", key_ids)}

    def delete_subject(self, subject: str) -> int:
        with self._run() as conn:
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE subject = %s").format(self._table), (subject,)
            )
            return cur.rowcount

    def purge(self, *, vacuum: bool = True) -> Purge:
        if not vacuum:  # the dead row stays in the table's file until vacuumed
            return Purge(("deleted; no VACUUM (FULL) asked for",), complete=False)
        steps: list[str] = []
        try:
            horizon = self._wait_for_older_transactions()
            if not horizon:
                steps.append(
                    f"an older transaction was still open after {self.purge_wait:g} s: "
                    "VACUUM (FULL) would have kept the deleted row for it (run again)"
                )
            with self._run() as conn:
                conn.execute(sql.SQL("VACUUM (FULL) {}").format(self._table))
                steps.append("VACUUM (FULL) rewrote the key table to a new file")
                # The erasure deleted the subject's snapshots, which hold state in clear.
                snapshots = sql.Identifier(self.schema, "eskit_snapshots")
                found = conn.execute("SELECT to_regclass(%s)",
                                     (snapshots.as_string(conn),)).fetchone()
                if found and found[0] is not None:
                    conn.execute(sql.SQL("VACUUM (FULL) {}").format(snapshots))
                    steps.append("VACUUM (FULL) rewrote the snapshot table")
                conn.execute("CHECKPOINT")
                steps.append("CHECKPOINT flushed it")
        except Exception as exc:  # no right to VACUUM FULL or CHECKPOINT: say so, not fail
            steps.append(f"stopped: {exc}")
            return Purge(tuple(steps), complete=False)
        return Purge(tuple(steps), complete=horizon)

    def _wait_for_older_transactions(self) -> bool:
        """Wait until every snapshot older than now is gone; ``False`` on time out.

        VACUUM (FULL) copies a deleted row to the new file while any snapshot in
        the database might still see it, so the key would survive the rewrite
        (measured: a long read in another session kept it). Every delete came
        before this call, so once no other session's snapshot (``backend_xmin``)
        or transaction (``backend_xid``) is as old as a transaction id taken
        now, no one can see a deleted key any more. Reading other sessions'
        xmin needs a superuser or ``pg_read_all_stats``; without it they look
        finished, and the purge cannot know.
        """
        with self._run() as conn:
            row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        mark = row[0] if row else "0"
        deadline = time.monotonic() + self.purge_wait
        delay = 0.01
        while True:
            with self._run() as conn:
                found = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND (datname = current_database() OR datname IS NULL) "
                    "AND (age(backend_xmin) >= age(xid(%s::xid8)) "
                    "OR age(backend_xid) >= age(xid(%s::xid8)))", (mark, mark),
                ).fetchone()
            if found is not None and found[0] == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(2 * delay, 0.5)

    def not_wrapped_by(self, master_key_id: str, after: str, limit: int) -> list[WrappedKey]:
        with self._run() as conn:
            rows = conn.execute(sql.SQL(
                "SELECT {} FROM {} WHERE key_id > %s AND master_key_id <> %s "
                "ORDER BY key_id LIMIT %s"
            ).format(_COLUMNS, self._table), (after, master_key_id, limit)).fetchall()
        return [_row(r) for r in rows]

    def replace(self, rows: Sequence[WrappedKey]) -> int:
        done = 0
        with self._run() as conn, conn.transaction():
            for r in rows:
                done += conn.execute(sql.SQL(
                    "UPDATE {} SET master_key_id = %s, wrapped = %s "
                    "WHERE key_id = %s AND subject = %s"
                ).format(self._table), (r.master_key_id, r.wrapped, r.key_id, r.subject)).rowcount
        return done

    def count(self) -> int:
        with self._run() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._table)).fetchone()
        return int(row[0]) if row else 0

    def relation_path(self) -> str:
        """The key table's file, relative to the data directory (for audits and tests)."""
        with self._run() as conn:
            row = conn.execute(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s "
                "AND c.relname = 'eskit_subject_keys'", (self.schema,),
            ).fetchone()
        return str(row[0]) if row else ""

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(r: Any) -> WrappedKey:
    return WrappedKey(r[0], r[1], r[2], bytes(r[3]), r[4])
