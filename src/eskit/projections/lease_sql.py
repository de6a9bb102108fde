"""The consumer-group tables and statements, per backend (see eskit.projections.leases).

Statements are written once in ``?`` style (the target rewrites the placeholders)
with ``{now}`` standing for the database's clock in seconds since 1970 as a float:
all expiry times are the database's, so members' clocks never need to agree.
"""

from __future__ import annotations

from eskit.projections.sql import Dialect

__all__ = ["Statements", "statements"]

NOW: dict[str, str] = {
    # julianday('now') has millisecond resolution on every SQLite eskit supports
    # (unixepoch('subsec') needs 3.42).
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    # clock_timestamp(), not now(): now() is frozen at the transaction's start.
    "postgres": "EXTRACT(EPOCH FROM clock_timestamp())::float8",
}
FLOAT: dict[str, str] = {"sqlite": "REAL", "postgres": "DOUBLE PRECISION"}


class Statements:
    """The SQL of one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        if dialect not in NOW:
            raise ValueError(f"no consumer-group SQL for {dialect!r}")
        now, real = NOW[dialect], FLOAT[dialect]
        postgres = dialect == "postgres"
        self.tables = [
            """CREATE TABLE IF NOT EXISTS eskit_groups (
                   group_name TEXT    NOT NULL PRIMARY KEY,
                   partitions INTEGER NOT NULL,
                   projection TEXT
               )""",
            f"""CREATE TABLE IF NOT EXISTS eskit_group_members (
                   group_name TEXT NOT NULL,
                   member     TEXT NOT NULL,
                   expires_at {real} NOT NULL,
                   PRIMARY KEY (group_name, member)
               )""",
            f"""CREATE TABLE IF NOT EXISTS eskit_leases (
                   group_name   TEXT    NOT NULL,
                   partition_no INTEGER NOT NULL,
                   owner        TEXT,
                   token        BIGINT  NOT NULL DEFAULT 0,
                   expires_at   {real},
                   PRIMARY KEY (group_name, partition_no)
               )""",
        ]
        self.add_group = (
            "INSERT INTO eskit_groups (group_name, partitions) VALUES (?, ?) "
            "ON CONFLICT (group_name) DO NOTHING"
        )
        self.serve = (
            "UPDATE eskit_groups SET projection = ? WHERE group_name = ? AND projection IS NULL"
        )
        # The group row's lock serialises the heartbeats of one group on PostgreSQL
        # (SQLite's BEGIN IMMEDIATE already lets one writer in at a time).
        self.lock_group = "SELECT partitions, projection FROM eskit_groups WHERE group_name = ?" + (
            " FOR UPDATE" if postgres else ""
        )
        self.add_lease = (
            "INSERT INTO eskit_leases (group_name, partition_no) VALUES (?, ?) "
            "ON CONFLICT (group_name, partition_no) DO NOTHING"
        )
        self.beat = (
            "INSERT INTO eskit_group_members (group_name, member, expires_at) "
            f"VALUES (?, ?, {now} + ?) ON CONFLICT (group_name, member) "
            "DO UPDATE SET expires_at = excluded.expires_at"
        )
        self.drop_dead = (
            f"DELETE FROM eskit_group_members WHERE group_name = ? AND expires_at < {now}"
        )
        self.members = "SELECT member FROM eskit_group_members WHERE group_name = ?"
        self.leases = (
            "SELECT partition_no, owner, token, "
            f"CASE WHEN expires_at IS NULL OR expires_at < {now} THEN 1 ELSE 0 END, "
            f"expires_at - {now} FROM eskit_leases WHERE group_name = ?"
        )
        self.renew = (
            f"UPDATE eskit_leases SET expires_at = {now} + ? "
            "WHERE group_name = ? AND partition_no = ? AND owner = ?"
        )
        self.release = (
            "UPDATE eskit_leases SET owner = NULL, expires_at = NULL "
            "WHERE group_name = ? AND partition_no = ? AND owner = ?"
        )
        self.claim = (
            f"UPDATE eskit_leases SET owner = ?, token = token + 1, expires_at = {now} + ? "
            "WHERE group_name = ? AND partition_no = ? RETURNING token"
        )
        self.leave = "DELETE FROM eskit_group_members WHERE group_name = ? AND member = ?"
        # FOR SHARE: a heartbeat claiming this lease (FOR UPDATE on the row) waits for
        # the batch to commit, or the batch, if the claim committed first, reads the
        # claimed row (READ COMMITTED re-reads a row it locks) and rolls back.
        self.fence = (
            "SELECT owner, token FROM eskit_leases WHERE group_name = ? AND partition_no = ?"
            + (" FOR SHARE" if postgres else "")
        )
        self.guard = (
            "SELECT set_config('idle_in_transaction_session_timeout', ?, true)"
            if postgres else None
        )


def statements(dialect: Dialect) -> Statements:
    """The consumer-group SQL for ``dialect``."""
    return Statements(dialect)
